"""Attacks from inside a container that must fail. Each runs in a real container with runc's default
config unless it says otherwise; where a test could pass for the wrong reason, a control shows the
same action succeeding when the protection is taken away."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from supervisor import ContainerSpec

from .conftest import Bundle, needs_root
from .probe import run_capture

pytestmark = needs_root


async def run(bundle: Bundle, script: str, edit: Any = None) -> str:
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)))
    return out


async def test_host_processes_are_invisible_and_unreachable(bundle: Bundle) -> None:
    me = os.getpid()
    out = await run(bundle, f"kill -0 {me} 2>&1; ls /proc/{me} 2>&1; cat /proc/{me}/environ 2>&1; "
                            "set -- /proc/[0-9]*; echo $$ $*")
    assert "No such process" in out
    assert out.count("No such file or directory") == 2
    # the shell's own glob, so no child of its is listed: the shell alone, nothing of the host
    shell, *listed = out.splitlines()[-1].split()
    assert listed == [f"/proc/{shell}"]


async def test_mknod_of_a_host_disk_cannot_read_it(bundle: Bundle) -> None:
    disk = os.stat("/").st_dev
    major, minor = os.major(disk), os.minor(disk)

    def with_mknod(c: dict[str, Any]) -> None:
        caps = c["process"]["capabilities"]
        for key in ("bounding", "effective", "permitted"):
            caps[key].append("CAP_MKNOD")

    script = f"mknod /dev/hostdisk b {major} {minor} && echo made; head -c 512 /dev/hostdisk > /dev/null && echo READ"
    out = await run(bundle, script, with_mknod)
    assert "made" in out and "Operation not permitted" in out and "READ" not in out  # the devices cgroup


async def test_masked_and_read_only_paths_cannot_be_remounted(bundle: Bundle) -> None:
    out = await run(bundle, "mount -o remount,rw /proc/sys 2>&1; umount /proc/timer_list 2>&1; "
                            "echo 1 > /proc/sys/kernel/panic 2>&1; wc -c < /proc/timer_list")
    assert "mount: permission denied" in out  # busybox's words for EPERM
    assert "can't unmount /proc/timer_list: Operation not permitted" in out
    assert "Read-only file system" in out
    assert out.split()[-1] == "0"


async def test_no_host_fd_reaches_the_container(bundle: Bundle, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)  # even an fd the supervisor leaks to what it spawns
    try:
        out = await run(bundle, f"ls /proc/self/fd; cat /proc/self/fd/{fd} 2>&1; cat /proc/1/fd/{fd} 2>&1")
    finally:
        os.close(fd)
    assert out.split("\n")[:4] == ["0", "1", "2", "3"]  # 3 is ls's own directory
    assert "host secret" not in out


async def test_dotdot_mount_destination_stays_inside(bundle: Bundle, rootfs: Path) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": "/../../../../sv-escape-test", "type": "tmpfs", "source": "tmpfs"})
        c["root"]["readonly"] = False

    try:
        out = await run(bundle, "grep -c ' /sv-escape-test ' /proc/self/mountinfo", edit)
        assert out.strip() == "1"
        assert not os.path.exists("/sv-escape-test")
    finally:
        (rootfs / "sv-escape-test").rmdir()


async def test_rlimits_cannot_be_raised_above_the_hard_limit(bundle: Bundle) -> None:
    out = await run(bundle, "ulimit -n 4096 2>&1 || echo refused; ulimit -n")
    assert "refused" in out and out.split()[-1] == "1024"


@pytest.fixture
def setuid_whoami(rootfs: Path, tmp_path: Path) -> Any:
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    source = tmp_path / "whoami.c"
    source.write_text('#include <stdio.h>\n#include <unistd.h>\nint main(void){printf("%d\\n",(int)geteuid());}\n')
    target = rootfs / "data" / "whoami"
    subprocess.run(["cc", "-static", "-o", str(target), str(source)], check=True)
    os.chown(target, 0, 0)
    os.chmod(target, 0o4755)
    yield "/data/whoami"
    target.unlink()


@pytest.mark.parametrize("nnp, euid", [(True, "1000"), (False, "0")])
async def test_setuid_exec_regains_nothing_with_no_new_privs(bundle: Bundle, setuid_whoami: str, nnp: bool,
                                                             euid: str) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["process"]["noNewPrivileges"] = nnp

    out = await run(bundle, setuid_whoami, edit)
    assert out.strip() == euid  # without no_new_privs the setuid bit works: the control
