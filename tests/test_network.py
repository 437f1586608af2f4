"""Container networks: a bridge, veths, addresses and routes; and nothing left after."""

import subprocess
from pathlib import Path
from typing import Any

import anyio

import supervisor
from supervisor import Service
from supervisor.service import NetworkConfig, parse_network
from supervisor.states import State
from supervisor.supervise import Supervisor

from .conftest import Bundle, needs_root

pytestmark = needs_root

BRIDGE = "svtest0"


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def pinger(bundle: Bundle, tmp_path: Path, name: str, script: str) -> supervisor.ContainerSpec:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["capabilities"] = {k: ["CAP_NET_RAW"] for k in ("bounding", "effective", "permitted")}

    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text((bundle("/bin/sh", "-c", script, edit=edit) / "config.json").read_text())
    return supervisor.ContainerSpec.from_bundle(d)


async def test_two_containers_on_a_bridge(bundle: Bundle, tmp_path: Path) -> None:
    from .test_supervise import Lines

    sink = Lines()
    net = NetworkConfig(bridge=BRIDGE, gateway="10.213.0.1/24")
    serve = "ip -4 -o addr show eth0; ip route; cat /sys/class/net/eth0/mtu; sleep 30"
    async with Supervisor(log_sink=sink) as sup:
        a = await sup.start(Service("a", pinger(bundle, tmp_path, "a", serve), network=net))
        b = await sup.start(Service("b", pinger(bundle, tmp_path, "b", "ping -c1 -W2 10.213.0.2 >/dev/null && "
                                                              "echo reached-a; sleep 30"),
                                    network=NetworkConfig(bridge=BRIDGE, addresses=("10.213.0.3/24",),
                                                          gateway="10.213.0.1", mtu=1400)))
        assert a.state == b.state == State.RUNNING
        assert f"{BRIDGE}:" in links() and f"svh{a.pid}@" in links()
        for ip in ("10.213.0.2", "10.213.0.3"):  # the host reaches both, through the bridge
            await anyio.to_thread.run_sync(lambda ip=ip: subprocess.run(
                ["busybox", "ping", "-c1", "-W2", ip], check=True, capture_output=True))
        with anyio.fail_after(5):
            await sink.wait_for("b", b"reached-a\n")
        sup.kill_all()
    lines = [d.decode() for c, _, d in sink.lines if c == "a"]
    assert "inet 10.213.0.2/24" in lines[0]  # allocated: the lowest free after the gateway
    assert lines[1].startswith("default via 10.213.0.1 dev eth0") and lines[3] == "1500\n"
    left = links()
    assert f"{BRIDGE}:" not in left  # the bridge went with its last user
    assert f"svh{a.pid}@" not in left and f"svh{b.pid}@" not in left


async def test_join_another_containers_network(bundle: Bundle, tmp_path: Path) -> None:
    from .test_supervise import Lines

    sink = Lines()
    async with Supervisor(log_sink=sink) as sup:
        first = await sup.start(Service("first", pinger(bundle, tmp_path, "first", "sleep 30"),
                                        network=NetworkConfig(bridge=BRIDGE, addresses=("10.213.1.2/24",),
                                                              gateway="10.213.1.1")))
        first_pid = first.pid
        second = await sup.start(Service("second", pinger(bundle, tmp_path, "second",
                                                          "ip -4 -o addr show eth0"),
                                         network=parse_network("container:first", "network")))
        await second.wait_for(State.EXITED)
        sup.kill_all()
    assert any(b"inet 10.213.1.2/24" in d for c, _, d in sink.lines if c == "second")
    assert f"svh{first_pid}@" not in links() and f"{BRIDGE}:" not in links()


async def test_many_containers_join_a_new_bridge_at_once(bundle: Bundle, tmp_path: Path) -> None:
    spec = pinger(bundle, tmp_path, "many", "sleep 30")
    async with Supervisor() as sup:
        handles = [sup.add(Service(f"m{i}", spec, network=NetworkConfig(bridge=BRIDGE, gateway="10.213.2.1/24")))
                   for i in range(6)]
        with anyio.fail_after(20):
            for h in handles:
                await h.wait_for(State.RUNNING, State.FAILED)
        assert [h.state for h in handles] == [State.RUNNING] * 6, [h.last_error for h in handles]
        pids = [h.pid for h in handles]
        sup.kill_all()
    left = links()
    assert f"{BRIDGE}:" not in left and not any(f"svh{p}@" in left for p in pids)
