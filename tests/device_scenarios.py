"""Device rules played in real containers; the same plays for cgroup v1 and v2.

``play`` runs in the test process (this host: a v1 devices controller), and as a script
(``python -m tests.device_scenarios BUNDLES.json``) in a private mount namespace that shows only
cgroup2 at /sys/fs/cgroup (a pure v2 host), where it prints its results as JSON.

Every play makes /dev/loop0 (block 7:0, a real device on the host) with CAP_MKNOD: what stops
reading it is then the device rules alone. /dev/loop0 has no backing file, so where opening it is
allowed, reading it ends at once or fails with something other than EPERM.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

import supervisor
from supervisor import ContainerSpec
from supervisor.resources import DeviceRule, Resources

from .probe import run_capture

#: mknod, then open the disk, then the devices every container may use
LOOP = ("mknod /dev/loop0 b 7 0 && echo made; head -c1 /dev/loop0 > /dev/null && echo opened; "
        "echo x > /dev/null && head -c1 /dev/zero > /dev/null && echo null-ok")
#: an inline container: the host root read-only, its own /dev, CAP_MKNOD by default
INLINE = f"""
[containers.inline]
args = ["/bin/sh", "-c", "{LOOP}"]
"""


async def _exec(container: supervisor.Container, script: str) -> str:
    r, w = os.pipe()
    try:
        await container.exec(["/bin/sh", "-c", script], stdout=w, stderr=w)
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        return out.decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


async def play(bundles: dict[str, str], manifest: str) -> dict[str, Any]:
    """bundles: name → bundle directory (see ``tests/test_devices.py``); manifest: a manifest file
    with the ``inline`` container."""
    results: dict[str, Any] = {"pid": os.getpid()}
    for name in ("runc_spec", "mknod", "no_resources", "allowed"):
        status, out = await run_capture(ContainerSpec.from_bundle(bundles[name]), name)
        results[name] = {"code": status.code, "out": out}
    inline = supervisor.load_manifest(manifest).service("inline").spec
    status, out = await run_capture(inline, "inline")
    results["inline"] = {"code": status.code, "out": out}

    # an update of a running container: the rules change under it, the program is replaced
    spec = ContainerSpec.from_bundle(bundles["sleeper"])
    async with supervisor.open_container(spec, name="update") as container:
        assert container.cgroup is not None
        async with supervisor.open_container(spec, name="twin") as twin:
            assert twin.cgroup is not None
            # one program for both, loaded once: the twin was given the one "update" holds
            shared = _programs(container.cgroup) == _programs(twin.cgroup)
            twin.kill()
            await twin.wait()
        before = await _exec(container, LOOP)
        allow = DeviceRule(True, "b", 7, 0, "rw")
        container.cgroup.update(Resources(devices=(allow,)))
        after = await _exec(container, "head -c1 /dev/loop0 > /dev/null && echo opened")
        container.cgroup.update(Resources())
        again = await _exec(container, "head -c1 /dev/loop0 > /dev/null && echo opened")
        programs = _programs(container.cgroup)
        container.kill()
        await container.wait()
    # the programs went with the cgroups (the kernel releases them a moment after the rmdir)
    for _ in range(100):
        if programs is None or not any(_program_exists(i) for i in programs):
            break
        await trio.sleep(0.02)
    results["update"] = {"before": before, "after": after, "again": again,
                         "programs": None if programs is None else len(programs), "shared": shared,
                         "programs_left": programs and [i for i in programs if _program_exists(i)]}
    return results


def _programs(cgroup: "supervisor.cgroups.Cgroup") -> list[int] | None:
    """The ids of the device programs the container's v2 cgroup holds (None on v1)."""
    h = next((h for h in cgroup.dirs if "devices" in h.controllers), None)
    if h is None or h.version != 2:
        return None
    from supervisor import _bpf

    fd = os.open(cgroup.dirs[h], os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _bpf.device_program_ids(fd)
    finally:
        os.close(fd)


def _program_exists(prog_id: int) -> bool:
    from supervisor._native import lib

    fd = lib.sv_bpf_prog_fd_by_id(prog_id)
    if fd < 0:
        return False
    os.close(fd)
    return True


if __name__ == "__main__":
    args = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(trio.run(play, args["bundles"], args["manifest"])))
