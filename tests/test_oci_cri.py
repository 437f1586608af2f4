"""A Kubernetes pod's life through supervisor-oci: containerd's CRI plugin driven over gRPC, as the
kubelet drives it, with a runtime handler whose BinaryName is ours.

No kubelet here (Debian has none): the test is the kubelet, through ``cri_api``'s generated stubs.
One pod uses the host's network; the other has its own, made by containerd and Debian's CNI plugins
(a bridge of the test's own, host-local IPAM). The images are the test's own, the pause image one that
sleeps. Skipped like the ctr tests where containerd or the CNI plugins are missing (a failure in CI).

Nothing global is touched by the CNI pod: the bridge is the test's (made with the gateway's address,
so the bridge plugin runs with ``isGateway`` off and never turns on the host's IP forwarding), no
iptables (no ``ipMasq``, no portmap), the IPAM data and the network namespace pins live in the
test's temporary directory (``dataDir``, ``netns_mounts_under_state_dir``).
"""

import contextlib
import dataclasses
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import needs_root
from .test_oci_containerd import IMAGE, Containerd, _cgroup_leftovers, native_front_end, private_containerd, \
    require_tools

pytestmark = needs_root

PAUSE = "registry.k8s.io/pause:3.6"
CRI_NAMESPACE = "k8s.io"
#: Debian's containernetworking-plugins
CNI_BIN = Path("/usr/lib/cni")
#: libcni's cache of each attachment's result (containerd 1.6 does not move it): removed on DEL
CNI_CACHE = Path("/var/lib/cni")


def _config(oci: str, base: Path) -> str:
    """containerd 1.6's (config version 2) CRI plugin: our runtime handler; CNI from Debian's plugins
    and the test's conf_dir; the network namespace pins under containerd's state directory (in the
    test's temp dir, not /var/run/netns); the two sysctls containerd itself puts in a pod's config
    when the pod has a network of its own."""
    plugin = 'plugins."io.containerd.grpc.v1.cri"'
    return (f'[{plugin}]\n  restrict_oom_score_adj = true\n  sandbox_image = "{PAUSE}"\n'
            f'  netns_mounts_under_state_dir = true\n'
            f'  enable_unprivileged_ports = true\n  enable_unprivileged_icmp = true\n'
            f'[{plugin}.cni]\n  bin_dir = "{CNI_BIN}"\n  conf_dir = "{base}/cni"\n  max_conf_num = 1\n'
            f'[{plugin}.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
            f'[{plugin}.containerd.runtimes.supervisor]\n  runtime_type = "io.containerd.runc.v2"\n'
            f'[{plugin}.containerd.runtimes.supervisor.options]\n  BinaryName = "{oci}"\n')


def _free_subnet() -> str:
    """A private /24 no route of this host uses (``10.214.N``, N at random: other runs of this test
    may be on the same host at the same time)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                            check=True).stdout
    for _ in range(100):
        prefix = f"10.214.{random.randrange(256)}"
        if f"{prefix}." not in routes:
            return prefix
    raise AssertionError("no free 10.214.N.0/24 for the pod network")


def _cni_config(base: Path, bridge: str, prefix: str) -> None:
    """One conflist: a bridge of the test's own with host-local addresses of ``prefix``.0/24 and a
    default route through ``prefix``.1 (the bridge's address). containerd brings ``lo`` up itself
    with the loopback plugin (go-cni's loopback network), before this one."""
    conflist = {"cniVersion": "1.0.0", "name": "supervisor-cni-test", "plugins": [{
        "type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
        "ipam": {"type": "host-local", "dataDir": str(base / "cni-ipam"),
                 "ranges": [[{"subnet": f"{prefix}.0/24", "gateway": f"{prefix}.1"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}}]}
    (base / "cni").mkdir(exist_ok=True)
    (base / "cni" / "10-supervisor-test.conflist").write_text(json.dumps(conflist))


@dataclasses.dataclass(frozen=True)
class Node:
    """The private containerd, and its pod network: the bridge's name and the /24's prefix."""

    containerd: Containerd
    bridge: str
    prefix: str


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    require_tools()
    try:
        import cri_api  # noqa: F401
    except ImportError:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs container-runtime-interface-api (pip)")
    if not (CNI_BIN / "bridge").exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs Debian's containernetworking-plugins")
    images = {IMAGE: None, PAUSE: ["/bin/sleep", "2147483647"]}
    base = tmp_path_factory.mktemp("cri")
    bridge, prefix = f"svcni{random.randrange(16 ** 6):06x}", _free_subnet()
    _cni_config(base, bridge, prefix)
    # the native front end, as a node would be set up (the ctr tests run the Python one too)
    with private_containerd(base, images, _config(native_front_end(base), base), CRI_NAMESPACE) as daemon:
        yield Node(daemon, bridge, prefix)


def _client(function: str, *args: object) -> None:
    """Run ``function(*args)`` of this module in a process of its own: gRPC keeps descriptors of its
    own (polling, wakeups) that it closes when it likes, which the leak check would take for ours."""
    client = f"import sys; from tests.test_oci_cri import {function}; {function}(*sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", client, *map(str, args)], cwd=Path(__file__).parent.parent,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@contextlib.contextmanager
def _runtime(socket: str, base: str) -> Iterator[tuple[Any, Any]]:
    """The CRI runtime service's stub and the message module, once the CRI plugin answers."""
    import grpc
    from cri_api.v1 import api_pb2 as pb
    from cri_api.v1 import api_pb2_grpc

    with grpc.insecure_channel(f"unix://{socket}") as channel:
        rt = api_pb2_grpc.RuntimeServiceStub(channel)
        deadline = time.monotonic() + 20
        while True:  # the CRI plugin comes up after the daemon answers ctr
            try:
                rt.Version(pb.VersionRequest(), timeout=5)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, (Path(base) / "containerd.log").read_text()[-3000:]
                time.sleep(0.2)
        yield rt, pb


def test_pod_lifecycle(cri: Node, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    _client("pod_life", cri.containerd.socket, cri.containerd.base, logs)


def pod_life(socket: str, base: str, logs_dir: str) -> None:
    """A pod's life over CRI, from the client's side (run by ``test_pod_lifecycle`` in a process of its own)."""
    logs = Path(logs_dir)
    with _runtime(socket, base) as (rt, pb):
        pod = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="pod", namespace="default", uid="uid-1", attempt=0),
            log_directory=str(logs),
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE))))
        sandbox = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod, runtime_handler="supervisor"),
                                   timeout=60).pod_sandbox_id
        try:
            _container_life(rt, pb, pod, sandbox, logs)
        finally:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
    assert not any(Path(d, sandbox).exists() for d in _cgroup_leftovers(CRI_NAMESPACE))


def _container_life(r: Any, p: Any, pod: Any, sandbox: str, logs: Path) -> None:
    """A container of the pod with memory and CPU limits: start, status, ExecSync, an update of its
    limits, stats, a stop its TERM trap answers with 0, its CRI log, removal."""
    config = p.ContainerConfig(
        metadata=p.ContainerMetadata(name="app", attempt=0),
        image=p.ImageSpec(image=IMAGE),
        command=["/bin/sh", "-c", "trap 'exit 0' TERM; echo hello-cri; while :; do sleep 0.1; done"],
        log_path="app.log",
        linux=p.LinuxContainerConfig(resources=p.LinuxContainerResources(
            memory_limit_in_bytes=64 << 20, cpu_shares=512, cpu_quota=50000, cpu_period=100000)))
    cid = r.CreateContainer(p.CreateContainerRequest(pod_sandbox_id=sandbox, config=config, sandbox_config=pod),
                            timeout=60).container_id
    try:
        r.StartContainer(p.StartContainerRequest(container_id=cid), timeout=60)
        status = r.ContainerStatus(p.ContainerStatusRequest(container_id=cid), timeout=10).status
        assert status.state == p.CONTAINER_RUNNING

        result = r.ExecSync(p.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
                                              timeout=20), timeout=30)
        assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 3)

        memory = next(Path(d, cid) for d in _cgroup_leftovers(CRI_NAMESPACE) if Path(d, cid, "memory.limit_in_bytes")
                      .exists() or Path(d, cid, "memory.max").exists())
        limit = memory / ("memory.limit_in_bytes" if (memory / "memory.limit_in_bytes").exists() else "memory.max")
        assert limit.read_text().strip() == str(64 << 20)
        r.UpdateContainerResources(p.UpdateContainerResourcesRequest(
            container_id=cid, linux=p.LinuxContainerResources(memory_limit_in_bytes=128 << 20, cpu_shares=256,
                                                              cpu_quota=50000, cpu_period=100000)), timeout=30)
        assert limit.read_text().strip() == str(128 << 20)

        stats = r.ContainerStats(p.ContainerStatsRequest(container_id=cid), timeout=10).stats
        assert stats.memory.working_set_bytes.value > 0

        r.StopContainer(p.StopContainerRequest(container_id=cid, timeout=10), timeout=30)
        status = r.ContainerStatus(p.ContainerStatusRequest(container_id=cid), timeout=10).status
        assert (status.state, status.exit_code) == (p.CONTAINER_EXITED, 0)
        log = (logs / "app.log").read_text()
        assert " stdout F hello-cri" in log, log
    finally:
        r.RemoveContainer(p.RemoveContainerRequest(container_id=cid), timeout=30)


# -- a pod with a network of its own (CNI) ----------------------------------------------------------

def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def test_pod_with_its_own_network(cri: Node, tmp_path: Path) -> None:
    """A pod whose network namespace containerd makes and CNI fills: the sandbox (the pause container)
    and then each container join it by path. The bridge is the test's, with the gateway's address:
    the bridge plugin would leave one it made behind, and making it with ``isGateway`` would turn on
    the host's IP forwarding."""
    logs = tmp_path / "logs"
    logs.mkdir()
    bridge = cri.bridge
    made_cache = not CNI_CACHE.exists()
    _ip("link", "add", bridge, "type", "bridge")
    try:
        _ip("addr", "add", f"{cri.prefix}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        _client("pod_network_life", cri.containerd.socket, cri.containerd.base, logs, bridge, cri.prefix)
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        if made_cache:  # libcni's cache directories, empty once the pod is gone (its files are checked)
            for d in (CNI_CACHE / "results", CNI_CACHE):
                with contextlib.suppress(OSError):
                    d.rmdir()
    assert bridge not in _ip("-o", "link")


def _log_lines(path: Path) -> list[str]:
    """The lines of a CRI log file (``TIME STREAM F|P TEXT``), partial lines joined, trailing blanks
    dropped (``ip route`` ends its lines with one)."""
    lines, partial = [], ""
    for record in path.read_text().splitlines():
        _, _, tag, text = (record.split(" ", 3) + [""])[:4]
        partial += text
        if tag == "F":
            lines.append(partial.rstrip())
            partial = ""
    return lines


def _wait_for_line(path: Path, wanted: str, limit: float = 20) -> list[str]:
    deadline = time.monotonic() + limit
    while True:
        lines = _log_lines(path) if path.exists() else []
        if wanted in lines:
            return lines
        assert time.monotonic() < deadline, f"{wanted!r} not in {lines}"
        time.sleep(0.05)


def _http_get(address: str, port: int, limit: float = 20) -> str:
    """GET / from the host's network namespace: a server in the pod, reached at the pod's address."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection((address, port), timeout=5) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
            return reply.decode(errors="replace")
        except OSError:
            assert time.monotonic() < deadline, f"nothing answers at {address}:{port}"
            time.sleep(0.1)


#: what the first container prints about its network before it serves HTTP on port 80
_WEB_SCRIPT = (
    "mkdir -p /tmp/www && echo pong-$(hostname) > /tmp/www/index.html; "
    "ip -4 -o addr show dev eth0; ip -o link show dev lo; ip route; "
    "echo hostname=$(hostname); cat /etc/hostname /etc/resolv.conf; "
    "for s in ip_unprivileged_port_start ping_group_range ip_local_port_range; do "
    "echo $s=$(cat /proc/sys/net/ipv4/$s); done; "
    "echo ready; exec httpd -f -p 80 -h /tmp/www")


def pod_network_life(socket_path: str, base: str, logs_dir: str, bridge: str, prefix: str) -> None:
    """A pod with its own network over CRI (run by ``test_pod_with_its_own_network`` in a process
    of its own): what its containers see, the host reaching them, two containers sharing the
    namespace, and nothing left once the pod is gone."""
    logs = Path(logs_dir)
    state = Path(base, "state")
    with _runtime(socket_path, base) as (rt, pb):
        # shareProcessNamespace: true, as the kubelet sends it, to the pod and to each container
        shared = pb.NamespaceOption(network=pb.POD, pid=pb.POD, ipc=pb.POD)
        pod = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="netpod", namespace="default", uid="uid-net", attempt=0),
            hostname="netpod", log_directory=str(logs),
            dns_config=pb.DNSConfig(servers=[f"{prefix}.53"], searches=["pods.test"], options=["ndots:2"]),
            linux=pb.LinuxPodSandboxConfig(
                sysctls={"net.ipv4.ip_local_port_range": "40000 40999"},
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=shared)))
        sandbox = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod, runtime_handler="supervisor"),
                                   timeout=60).pod_sandbox_id
        containers: list[str] = []
        try:
            answer = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox, verbose=True),
                                         timeout=10)
            address = answer.status.network.ip
            assert address.startswith(f"{prefix}."), answer.status
            info = json.loads(answer.info["info"])
            pause = int(info["pid"])
            pin = next(ns["path"] for ns in info["runtimeSpec"]["linux"]["namespaces"] if ns["type"] == "network")
            assert pin.startswith(str(state)), pin  # netns_mounts_under_state_dir
            pod_netns = os.readlink(f"/proc/{pause}/ns/net")
            assert pod_netns != os.readlink("/proc/self/ns/net")
            assert os.stat(pin).st_ino == os.stat(f"/proc/{pause}/ns/net").st_ino  # the sandbox joined the pin
            veths = [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link", "show", "master",
                                                                               bridge).splitlines()]
            assert len(veths) == 1, veths

            web = _start(rt, pb, pod, sandbox, "web", ["/bin/sh", "-c", _WEB_SCRIPT], containers, shared)
            lines = _wait_for_line(logs / "web.log", "ready")
            assert any(line.split()[1:4] == ["eth0", "inet", f"{address}/24"] for line in lines), lines
            assert any(line.split()[1:2] == ["lo:"] and "UP" in line.split()[2] for line in lines), lines
            assert f"default via {prefix}.1 dev eth0" in lines, lines
            assert any(line.startswith(f"{prefix}.0/24 dev eth0") for line in lines), lines
            assert "hostname=netpod" in lines and "netpod" in lines, lines
            assert f"nameserver {prefix}.53" in lines and "search pods.test" in lines, lines
            # two sysctls containerd sets for a pod with its own network, one the pod asked for; the
            # host's stay as they were
            assert "ip_unprivileged_port_start=0" in lines and "ping_group_range=0 2147483647" in lines, lines
            assert "ip_local_port_range=40000 40999" in lines, lines
            assert Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split() != ["40000", "40999"]

            reply = _http_get(address, 80)
            assert reply.startswith("HTTP/1.") and "pong-netpod" in reply, reply

            side = _start(rt, pb, pod, sandbox, "side", ["/bin/sleep", "1000"], containers, shared)
            seen = _exec(rt, pb, side, "ip -4 -o addr show dev eth0; wget -q -O- http://127.0.0.1:80/; "
                                       "readlink /proc/self/ns/net; hostname")
            assert f"inet {address}/24" in seen[0] and seen[1:] == ["pong-netpod", pod_netns, "netpod"], seen
            assert _exec(rt, pb, web, "readlink /proc/self/ns/net") == [pod_netns]
            # one pid namespace for the pod, joined by path: the pause process is its pid 1
            processes = _exec(rt, pb, side, "ps -o pid,args")
            assert any(line.split() == ["1", "/bin/sleep", "2147483647"] for line in processes), processes
            assert any(line.split()[1:3] == ["httpd", "-f"] for line in processes), processes

            pids = [int(json.loads(rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True),
                                                      timeout=10).info["info"])["pid"]) for cid in containers]
            for cid in containers:
                rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=5), timeout=30)
                rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=30)
        finally:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)

    # nothing is left: the pin, the veth, the address, the processes, containerd's and our state,
    # cgroups, mounts
    assert not os.path.exists(pin), pin
    assert _ip("-o", "link", "show", "master", bridge) == ""
    assert not any(veth in _ip("-o", "link") for veth in veths), veths
    assert not Path(base, "cni-ipam", "supervisor-cni-test", address).exists()
    assert not any(sandbox in name for name in os.listdir(CNI_CACHE / "results")), os.listdir(CNI_CACHE / "results")
    assert not any(Path(f"/proc/{pid}").exists() for pid in (pause, *pids))
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for cid in (sandbox, *containers):
        assert cid not in mountinfo and pin not in mountinfo, cid
        assert not Path(state, "io.containerd.runtime.v2.task", CRI_NAMESPACE, cid).exists(), cid
        assert not Path("/run/containerd/runc", CRI_NAMESPACE, cid).exists(), cid
        assert not any(Path(d, cid).exists() for d in _cgroup_leftovers(CRI_NAMESPACE)), cid
    assert not Path(base, "root", "io.containerd.grpc.v1.cri", "sandboxes", sandbox).exists()
    assert not Path(state, "io.containerd.grpc.v1.cri", "sandboxes", sandbox).exists()


def _start(r: Any, p: Any, pod: Any, sandbox: str, name: str, command: list[str], started: list[str],
           namespaces: Any) -> str:
    config = p.ContainerConfig(metadata=p.ContainerMetadata(name=name, attempt=0), image=p.ImageSpec(image=IMAGE),
                               command=command, log_path=f"{name}.log", linux=p.LinuxContainerConfig(
                                   security_context=p.LinuxContainerSecurityContext(namespace_options=namespaces)))
    cid: str = r.CreateContainer(p.CreateContainerRequest(pod_sandbox_id=sandbox, config=config, sandbox_config=pod),
                                 timeout=60).container_id
    started.append(cid)
    r.StartContainer(p.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def _exec(r: Any, p: Any, cid: str, script: str) -> list[str]:
    result = r.ExecSync(p.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", script], timeout=20), timeout=30)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return list(result.stdout.decode().splitlines())
