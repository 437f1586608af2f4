"""Cgroup limits on real containers: what the kernel enforces, seen from inside and outside."""

import os
import signal
from pathlib import Path
from typing import Any

import pytest

import supervisor
from supervisor import ContainerSpec, SpecError

from .conftest import Bundle, needs_root, wait_until
from .probe import run_capture

pytestmark = needs_root

MB = 1024 * 1024


def limits(**resources: Any) -> Any:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["resources"] = {**c["linux"].get("resources", {}), **resources}
    return edit


async def test_memory_limit_and_oom_kill(bundle: Bundle) -> None:
    hog = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"
    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", hog,
                                            edit=limits(memory={"limit": 32 * MB, "swap": 32 * MB})))
    status, out = await run_capture(spec)
    assert status.oom_killed and "survived" not in out
    assert "out of memory" in str(status)


async def test_pids_limit(bundle: Bundle) -> None:
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.5 & done; wait"
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script,
                                                                     edit=limits(pids={"limit": 4}))))
    assert "can't fork" in out  # the shell and three sleeps are the most it may have


async def test_limits_as_the_container_sees_them(bundle: Bundle) -> None:
    script = ("cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
              "/sys/fs/cgroup/cpuset/cpuset.cpus /sys/fs/cgroup/memory/memory.limit_in_bytes; "
              "grep -c ':/$' /proc/self/cgroup || true")
    edit = limits(cpu={"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}, memory={"limit": 64 * MB})
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)), "lim")
    assert status.code == 0, out
    assert out.split()[:4] == ["512", "50000", "0", str(64 * MB)]


async def test_cpu_burst_and_idle(bundle: Bundle) -> None:
    """What CRI sets for a pod that may borrow CPU (burst) or runs only when nothing else would (idle)."""
    script = "cat /sys/fs/cgroup/cpu/cpu.cfs_burst_us /sys/fs/cgroup/cpu/cpu.idle"
    edit = limits(cpu={"quota": 50000, "period": 100000, "burst": 20000, "idle": 1})
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)), "burst")
    assert (status.code, out.split()) == (0, ["20000", "1"]), out


async def test_block_io_throttles(bundle: Bundle) -> None:
    """CRI's per-device throttles, on the disk this host has (vda here, or the first virtio/SCSI one)."""
    disks = [d for d in sorted(os.listdir("/sys/block")) if d.startswith(("vd", "sd", "nvme", "xvd"))]
    if not disks:
        pytest.skip("no disk to throttle")
    major, minor = open(f"/sys/block/{disks[0]}/dev").read().strip().split(":")
    device = {"major": int(major), "minor": int(minor)}
    edit = limits(blockIO={"throttleReadBpsDevice": [{**device, "rate": 1048576}],
                           "throttleWriteIOPSDevice": [{**device, "rate": 100}]})
    script = ("cat /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device "
              "/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device")
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)), "io")
    assert (status.code, out.splitlines()) == (0, [f"{major}:{minor} 1048576", f"{major}:{minor} 100"]), out


async def test_unified_settings_reach_the_containers_v2_cgroup(bundle: Bundle) -> None:
    """linux.resources.unified: cgroup v2 files, written as given (this host keeps its controllers on
    v1, so the file is one of the v2 core's)."""
    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "10", edit=limits(unified={"cgroup.max.descendants": "5"})))
    async with supervisor.open_container(spec, name="unified") as c:
        assert c.cgroup is not None
        [v2] = [d for h, d in c.cgroup.dirs.items() if h.version == 2]
        assert Path(v2, "cgroup.max.descendants").read_text().strip() == "5"
        c.kill()


async def test_an_update_below_the_memory_in_use_is_refused_with_check_before_update(bundle: Bundle) -> None:
    from supervisor.resources import parse_resources

    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "10", edit=limits(memory={"limit": 64 << 20})))
    async with supervisor.open_container(spec, name="check") as c:
        assert c.cgroup is not None
        [memory] = [d for h, d in c.cgroup.dirs.items() if "memory" in h.controllers]
        with pytest.raises(supervisor.BootstrapError) as info:
            c.cgroup.update(parse_resources({"memory": {"limit": 4096, "checkBeforeUpdate": True}}))
        assert "checkBeforeUpdate" in str(info.value)
        assert Path(memory, "memory.limit_in_bytes").read_text().strip() == str(64 << 20)  # unchanged
        c.cgroup.update(parse_resources({"memory": {"limit": 128 << 20, "checkBeforeUpdate": True}}))
        assert Path(memory, "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
        c.kill()


def test_unified_names_are_file_names(bundle: Bundle) -> None:
    for name in ("../escape", "memory.high/x", "cgroup", "Memory.high"):
        with pytest.raises(SpecError) as info:
            ContainerSpec.from_bundle(bundle(edit=limits(unified={name: "1"})))
        assert info.value.field == f"linux.resources.unified.{name}"


def test_block_io_limits_are_checked(bundle: Bundle) -> None:
    for bad, where in [({"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}, "throttleReadBpsDevice[0]"),
                       ({"weightDevice": [{"major": 8, "minor": 0, "weight": 5}]}, "weightDevice[0]"),
                       ({"weightDevice": [{"major": 8, "minor": 0, "weight": 100, "leafWeight": 10}]},
                        "weightDevice[0]")]:
        with pytest.raises(SpecError) as info:
            ContainerSpec.from_bundle(bundle(edit=limits(blockIO=bad)))
        assert info.value.field == f"linux.resources.blockIO.{where}"


async def test_with_a_cgroup_namespace_the_cgroup_mount_is_the_containers_own(bundle: Bundle) -> None:
    """A cgroup namespace of its own (what CRI asks on cgroup v2 hosts, and runc's newer spec): the
    container's /sys/fs/cgroup holds cgroup filesystems whose root is its own cgroup, not binds."""
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "cgroup"})
        limits(memory={"limit": 64 * MB})(c)

    script = ("grep -c ':/$' /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
              "awk '$5 == \"/sys/fs/cgroup/memory\" { for (i = 7; $i != \"-\"; i++); print $4, $(i+1) }' "
              "/proc/self/mountinfo")
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)), "cgns")
    lines = out.splitlines()
    assert status.code == 0, out
    assert int(lines[0]) == len(Path("/proc/self/cgroup").read_text().splitlines())  # every hierarchy at /
    assert lines[1:] == [str(64 * MB), "/ cgroup"], out


async def test_born_inside_its_cgroup(bundle: Bundle) -> None:
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/cat", "/proc/self/cgroup")), "inside")
    assert status.code == 0
    paths = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in out.splitlines()}
    assert paths["pids"] == f"/supervisor-{os.getpid()}/inside"
    assert paths["memory"].endswith(f"/supervisor-{os.getpid()}/inside")


async def test_device_rules(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o666}]

    # writing to /dev/kmsg needs no capability, so an EPERM on opening it is the devices cgroup's
    reader = ("(: > /dev/kmsg) 2>/dev/null && echo kmsg-ok || echo kmsg-denied; "
              "head -c1 /dev/null; echo null-ok")
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", reader, edit=edit)))
    assert "kmsg-denied" in out and "null-ok" in out  # runc's default: deny all but the default devices

    def allow(c: dict[str, Any]) -> None:
        edit(c)
        c["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 11,
                                                   "access": "w"})

    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", reader, edit=allow)))
    assert "kmsg-ok" in out


async def test_stats_while_running(bundle: Bundle) -> None:
    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "sleep 100 & sleep 100 & wait"))
    async with supervisor.open_container(spec, name="stats") as c:
        await wait_until(lambda: getattr(c.stats(), "pids", None) == 3)  # the shell and its two sleeps
        stats = c.stats()
        assert stats is not None
        assert stats.pids == 3 and stats.memory_bytes and stats.memory_bytes > 0 and stats.cpu_ns is not None
        c.kill()


async def test_kill_through_the_cgroup_without_a_pid_namespace(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "pid"]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/proc"]
        c["linux"]["maskedPaths"] = []
        c["linux"]["readonlyPaths"] = []

    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "sleep 100 & sleep 100 & wait", edit=edit))
    async with supervisor.open_container(spec, name="nopidns") as c:
        assert c.cgroup is not None
        cgroup = c.cgroup
        await wait_until(lambda: len(cgroup.procs()) == 3)
        pids = c.cgroup.procs()
        assert len(pids) == 3
        c.kill()
        assert (await c.wait()).signal == signal.SIGKILL
    assert not any(os.path.exists(f"/proc/{pid}") and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in pids)


def test_bad_resources_are_spec_errors(bundle: Bundle) -> None:
    for edit, message in [
        (limits(memory={"limit": "lots"}), "linux.resources.memory.limit: expected an integer"),
        (limits(cpu={"realtimeRuntime": 5}), "linux.resources.cpu.realtimeRuntime: not supported yet"),
        (limits(rdma={}), "linux.resources.rdma: not supported yet"),
    ]:
        try:
            ContainerSpec.from_bundle(bundle(edit=edit))
        except SpecError as e:
            assert message in str(e)
        else:
            raise AssertionError(message)


async def test_oom_is_an_event_and_shows_in_the_exit_event(bundle: Bundle) -> None:
    from supervisor.service import Service
    from supervisor.supervise import Event, Supervisor

    hog = "x=$(head -c 100000000 /dev/zero | tr '\\0' a)"
    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", hog, edit=limits(memory={"limit": 32 * MB,
                                                                                        "swap": 32 * MB})))
    events: list[Event] = []
    async with Supervisor() as sup:
        async with sup.events() as stream:
            sup.add(Service("hog", spec))
            async for e in stream:
                events.append(e)
                if e.event == "exited":
                    break
    assert [e.event for e in events] == ["started", "oom", "exited"]
    assert events[-1].oom is True and '"oom": true' in events[-1].to_json()


def test_v2_limits_when_the_supervisor_holds_its_own_cgroup(bundle: Bundle, tmp_path: Path) -> None:
    """cgroup v2's no-internal-processes rule, on this host's cgroup2 mount (hugetlb lives there on
    a hybrid host): the supervisor sits in a cgroup of its own, which must hand hugetlb down."""
    import subprocess
    import sys

    from supervisor.cgroups import hierarchies

    v2 = next((h for h in hierarchies() if h.version == 2 and "hugetlb" in h.controllers), None)
    if v2 is None:
        pytest.skip("no cgroup2 mount with hugetlb here")
    home = Path(v2.mountpoint) / f"sv-v2test-{os.getpid()}"
    home.mkdir()
    b = bundle("/bin/cat", "/proc/self/cgroup", edit=limits(hugepageLimits=[{"pageSize": "2MB", "limit": 0}]))
    script = f"""
import os, anyio, supervisor
open("{home}/cgroup.procs", "w").write(str(os.getpid()))   # the supervisor in a cgroup of its own
spec = supervisor.ContainerSpec.from_bundle("{b}")
try:
    anyio.run(lambda: supervisor.run(spec, name="refused"))  # moving us needs our say-so
except supervisor.BootstrapError as e:
    print("refused:", e.message)
status = anyio.run(lambda: supervisor.run(spec, name="huge", move_into_leaf=True))
again = anyio.run(lambda: supervisor.run(spec, name="again", move_into_leaf=True))  # once moved, as before
assert again.code == 0, again
print(status.code, open("{home}/supervisor-leaf/cgroup.procs").read().split() == [str(os.getpid())])
"""
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[-2:] == ["0", "True"], result.stdout
        assert "refused: " in result.stdout and "allow move_into_leaf=True" in result.stdout, result.stdout
    finally:
        for d in sorted(home.rglob("*"), key=lambda p: len(str(p)), reverse=True):
            if d.is_dir():
                d.rmdir()
        home.rmdir()


async def test_cgroups_path_and_blkio_weight(bundle: Bundle) -> None:
    path = f"/sv-test-{os.getpid()}/box"

    def edit(c: dict[str, Any]) -> None:
        c["linux"]["cgroupsPath"] = path
        limits(blockIO={"weight": 500})(c)

    script = "grep pids: /proc/self/cgroup; cat /sys/fs/cgroup/blkio/blkio.bfq.weight 2>/dev/null | head -1"
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)))
    assert status.code == 0, out
    assert f"pids:{path}" in out  # an absolute cgroupsPath is taken from the hierarchy's root
    assert "500" in out.split("\n")[1]
    assert not os.path.exists(f"/sys/fs/cgroup/pids{path}")  # and removed with the container


async def test_a_container_may_go_without_a_cgroup(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["annotations"] = {"supervisor.cgroup": "false"}
        del c["linux"]["resources"]

    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/cat", "/proc/self/cgroup", edit=edit)))
    assert status.code == 0 and f"supervisor-{os.getpid()}" not in out  # it stays in ours

    def with_limits(c: dict[str, Any]) -> None:
        c["annotations"] = {"supervisor.cgroup": "false"}

    from supervisor.plan import plan

    with pytest.raises(SpecError, match="a container without a cgroup cannot have linux.resources"):
        plan(ContainerSpec.from_bundle(bundle(edit=with_limits)))


async def test_two_supervisors_in_one_process_share_no_cgroup_state(bundle: Bundle) -> None:
    """Each Supervisor has its own cgroup driver; the supervisor-<pid> parent their containers share
    is removed by the last one out, whichever supervisor made it."""
    from supervisor.service import Policy, Service
    from supervisor.supervise import Supervisor

    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "100"))
    async with Supervisor() as a, Supervisor() as b:
        ha = await a.start(Service("a", spec, Policy(stop_timeout=0.1)))
        await b.start(Service("b", spec, Policy(stop_timeout=0.1)))
        assert a.cgroups is not b.cgroups and a.cgroups.made.isdisjoint(b.cgroups.made)
        assert ha.container is not None and ha.container.cgroup is not None
        parents = {os.path.dirname(d) for d in ha.container.cgroup.dirs.values()}
        assert all(os.path.basename(p) == f"supervisor-{os.getpid()}" for p in parents)
        await a.stop("a")
        assert all(os.path.isdir(p) for p in parents)  # b's container is still in it
        await b.stop("b")
    assert not any(os.path.isdir(p) for p in parents)
