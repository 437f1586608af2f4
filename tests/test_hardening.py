"""What the bootstrap and the supervisor do so that nothing of the host reaches a container, and so that
a start never hangs or passes a dead init for a running workload (issue 8, items 1-3 and 5-8).

The attack suite (``test_attacks.py``) plays the known CVEs; these tests pin the mechanisms, each with
the observation that would differ without it."""

import ctypes
import errno
import hashlib
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import anyio

import supervisor
from supervisor import BootstrapError, ContainerSpec, SpecError
from supervisor import _launch
from supervisor import container as container_module
from supervisor.bootstrap import encode
from supervisor.plan import plan

from .conftest import Bundle, needs_root
from .probe import run_capture

pytestmark = needs_root

CLI = [sys.executable, "-m", "supervisor"]
INIT = {"supervisor.init": "true"}


def annotate(**annotations: str) -> Any:
    def edit(c: dict[str, Any]) -> None:
        c["annotations"] = annotations
    return edit


# -- item 1: no host descriptor reaches a container ---------------------------------------------

@pytest.mark.parametrize("with_init", [False, True])
async def test_an_inheritable_fd_of_the_embedding_program_reaches_nothing(bundle: Bundle, tmp_path: Path,
                                                                         with_init: bool) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        script = f"ls /proc/1/fd /proc/self/fd 2>&1; cat /proc/1/fd/{fd} /proc/self/fd/{fd} 2>&1"
        edit = annotate(**INIT) if with_init else None
        status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)))
    finally:
        os.close(fd)
    assert "host secret" not in out
    if with_init:  # the init holds nothing once the workload runs: not even its stdio
        assert out.startswith("/proc/1/fd:\n\n/proc/self/fd:\n0\n1\n2\n3\n"), out
    else:  # pid 1 is the shell: its stdio and the script it reads (10)
        assert out.startswith("/proc/1/fd:\n0\n1\n10\n2\n"), out
    assert out.count("No such file or directory") == 2


@pytest.mark.parametrize("with_init", [False, True])
def test_a_directory_passed_to_the_cli_cannot_be_written(bundle: Bundle, tmp_path: Path, with_init: bool) -> None:
    """``supervisor run --bundle b x 9</host/dir``: the workload must not reach the directory
    through /proc/1/fd/9 (the pid-1 init used to hold it)."""
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    script = "echo pwned > /proc/1/fd/9/owned 2>&1; echo pwned > /proc/self/fd/9/owned 2>&1; ls /proc/1/fd; true"
    b = bundle("/bin/sh", "-c", script, edit=annotate(**INIT) if with_init else None)
    dir_fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = subprocess.run(CLI + ["run", "--bundle", str(b), "fds"], capture_output=True, text=True,
                                timeout=30, pass_fds=(9,), check=False,
                                preexec_fn=lambda: os.dup2(dir_fd, 9))
    finally:
        os.close(dir_fd)
    assert result.returncode == 0, result.stderr
    assert list(host_dir.iterdir()) == []
    assert "9" not in result.stdout.split()


# -- item 2: the pid-1 init is as confined as the workload -------------------------------------

async def test_the_pid1_init_cannot_be_read_or_traced(bundle: Bundle) -> None:
    script = ("readlink /proc/1/exe || echo no-exe; head -c 1 /proc/1/mem > /dev/null || echo no-mem; "
              "cat /proc/1/environ > /dev/null || echo no-environ; ls /proc/1/fd; echo done")
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=annotate(**INIT))))
    assert status.code == 0
    lines = out.splitlines()
    assert lines[-1] == "done"
    assert {"no-exe", "no-mem", "no-environ"} <= set(lines), out
    assert not any("bootstrap" in line for line in lines), out


# -- item 3: /proc/self/exe is a sealed copy, on every start -----------------------------------

async def test_proc_self_exe_of_the_init_is_a_sealed_copy(bundle: Bundle) -> None:
    """pid 1 is the bootstrap itself (``args = ["/proc/self/exe"]`` runs what the init runs), blocked
    reading a pipe the test holds: what /proc/1/exe leads to can be neither the host's file nor
    written (CVE-2019-5736)."""
    before = hashlib.sha256(Path(_launch.BOOTSTRAP).read_bytes()).hexdigest()

    def edit(c: dict[str, Any]) -> None:
        c["process"]["env"].append("_LIBCONTAINER_INITPIPE=0")

    spec = ContainerSpec.from_bundle(bundle("/proc/self/exe", edit=edit))
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        async with supervisor.open_container(spec, name="selfexe", stdin=r) as container:
            os.close(r)
            r = -1
            script = "readlink /proc/1/exe; echo x >> /proc/1/exe; echo rc=$?; cat /proc/1/exe > /tmp/copy; echo $?"
            with anyio.fail_after(10):
                status = await container.exec(["/bin/sh", "-c", script], stdout=out_w, stderr=out_w)
            os.close(out_w)
            out_w = -1
            out = os.read(out_r, 65536).decode()
            os.close(w)  # the bootstrap reads the end of its "message" and exits
            w = -1
            await container.wait()
    finally:
        for fd in (r, w, out_r, out_w):
            if fd >= 0:
                os.close(fd)
    assert status.code == 0
    assert out.splitlines()[0].startswith("/memfd:supervisor-bootstrap"), out
    assert "rc=1" in out  # the seals refuse the write
    assert hashlib.sha256(Path(_launch.BOOTSTRAP).read_bytes()).hexdigest() == before


def test_one_sealed_copy_serves_every_start() -> None:
    fd = _launch.sealed_bootstrap()
    assert _launch.sealed_bootstrap() == fd and fd > _launch.INITPIPE_FD
    import fcntl
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"x", 0)


# -- item 5: the handshake never hangs, never misreports ---------------------------------------

async def test_an_init_that_dies_during_setup_is_a_failed_start(bundle: Bundle) -> None:
    """Killed while it waits for its go-ahead (as an OOM kill would), the init closes the socket as an
    exec would: the start fails, naming what happened, instead of reporting a running workload."""
    async def kill_it(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    spec = ContainerSpec.from_bundle(bundle("/bin/true"))
    with pytest.raises(BootstrapError) as info:
        async with supervisor.open_container(spec, name="dies", on_init=kill_it):
            pass
    assert info.value.stage == "init" and info.value.errno == errno.ECHILD
    assert str(info.value) == "dies: the init killed by SIGKILL during setup, before exec"


def _kill_after_clone(spawned: _launch.Spawned, ready: threading.Event, cloned: list[int]) -> None:
    """Trace stage 0 (ptrace, from this thread), let it clone the init, then SIGKILL it before it
    reports the init's pid: what an OOM kill at that moment does. The init goes on, untraced."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    seize, cont, detach, geteventmsg = 0x4206, 7, 17, 0x4201
    trace_forks = 0x2 | 0x4 | 0x8  # PTRACE_O_TRACEFORK | TRACEVFORK | TRACECLONE
    wall = 0x40000000
    try:
        assert libc.ptrace(seize, spawned.pid, None, trace_forks) == 0, os.strerror(ctypes.get_errno())
    finally:
        ready.set()
    while True:
        _, status = os.waitpid(spawned.pid, wall)
        assert os.WIFSTOPPED(status), status
        if status >> 16:  # a fork event: the init exists
            child = ctypes.c_ulong()
            libc.ptrace(geteventmsg, spawned.pid, None, ctypes.byref(child))
            os.waitpid(child.value, wall)  # its first stop, as a tracee
            libc.ptrace(detach, child.value, None, None)
            cloned.append(child.value)
            os.kill(spawned.pid, signal.SIGKILL)
            return
        libc.ptrace(cont, spawned.pid, None, None)


@pytest.mark.parametrize("api", ["async", "blocking"])
async def test_a_bootstrap_killed_after_clone_fails_the_start_and_leaves_nothing(
        bundle: Bundle, monkeypatch: pytest.MonkeyPatch, api: str) -> None:
    """The init stage 0 cloned holds the sync socket open: without a watch on stage 0 the start
    would wait for ever. It fails instead, and the init is found and reaped (the fixture checks)."""
    real = _launch.spawn_into
    cloned: list[int] = []

    def spawn_traced(*args: Any, **kwargs: Any) -> _launch.Spawned:
        spawned = real(*args, **kwargs)
        ready = threading.Event()
        threading.Thread(target=_kill_after_clone, args=(spawned, ready, cloned), daemon=True).start()
        ready.wait()
        return spawned

    monkeypatch.setattr(container_module, "spawn_into", spawn_traced)
    monkeypatch.setattr(_launch, "spawn_into", spawn_traced)
    spec = ContainerSpec.from_bundle(bundle("/bin/true"))
    with anyio.fail_after(10), pytest.raises(BootstrapError) as info:
        if api == "async":
            async with supervisor.open_container(spec, name="orphan"):
                pass
        else:
            await anyio.to_thread.run_sync(_launch.launch_blocking, plan(spec, "orphan"), "orphan")
    assert info.value.message == 'sync "the bootstrap exited without starting the init": Protocol error'
    assert cloned and not os.path.exists(f"/proc/{cloned[0]}")


async def test_thousands_of_missing_components_are_made_without_recursion(bundle: Bundle, rootfs: Path) -> None:
    deep = "/data" + "/d" * 2000

    def edit(c: dict[str, Any]) -> None:
        c["root"]["readonly"] = False
        c["mounts"].append({"destination": deep, "type": "tmpfs", "source": "tmpfs"})

    try:
        status, out = await run_capture(ContainerSpec.from_bundle(bundle(
            "/bin/sh", "-c", f"cd {deep} && echo made", edit=edit)))
        assert (status, out) == (supervisor.ExitStatus(code=0), "made\n")
    finally:
        await anyio.run_process(["rm", "-rf", str(rootfs / "data" / "d")])  # too deep for shutil.rmtree


def test_a_step_over_the_netlink_limit_is_a_spec_error(bundle: Bundle) -> None:
    deep = "/data" + "/x" * 2000  # 4005 bytes; its mount data 62000: each fits, together they don't

    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": deep, "type": "tmpfs", "source": "tmpfs", "options": ["a" * 62000]})

    with pytest.raises(SpecError) as info:
        encode(plan(ContainerSpec.from_bundle(bundle(edit=edit)), "big"))
    assert info.value.field == f"mount {deep}"
    assert "over the 65535 a step can carry" in info.value.reason


# -- item 6: what the container controls is checked before use --------------------------------

def test_proc_through_a_symlink_in_the_rootfs_is_refused(bundle: Bundle, rootfs: Path) -> None:
    (rootfs / "fakeproc").mkdir()
    (rootfs / "proc").rename(rootfs / "proc.real")
    (rootfs / "proc").symlink_to("fakeproc")
    try:
        with pytest.raises(SpecError) as info:
            plan(ContainerSpec.from_bundle(bundle("/bin/true")), "p")
        assert info.value.field == "mounts[0].destination"
        assert "proc must be mounted on a directory, not through a symlink" in info.value.reason
    finally:
        (rootfs / "proc").unlink()
        (rootfs / "proc.real").rename(rootfs / "proc")
        (rootfs / "fakeproc").rmdir()


async def test_exec_with_a_terminal_refuses_a_fake_ptmx(bundle: Bundle) -> None:
    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "ln -sf /dev/null /dev/ptmx && sleep 100"))
    async with supervisor.open_container(spec, name="ptmx") as container:
        for _ in range(200):
            status = await container.exec(["/bin/sh", "-c", '[ "$(readlink /dev/ptmx)" = /dev/null ]'])
            if status.code == 0:
                break
            await anyio.sleep(0.01)

        async def never(master: int) -> None:
            raise AssertionError("a console from a fake /dev/ptmx")

        with pytest.raises(BootstrapError) as info:
            await container.exec(["/bin/true"], terminal=True, on_console=never)
        container.kill()
    assert info.value.errno == errno.EPERM and "not the pty multiplexer" in info.value.object


# -- item 7: bind sources are host paths -------------------------------------------------------

def test_a_bind_source_under_tmp_reaches_an_inline_container(tmp_path: Path) -> None:
    """The inline container's own /tmp (and the host root's bind for pivot_root) used to cover the
    source before it was bound."""
    source = tmp_path / "shared"
    source.mkdir()
    (source / "hello").write_text("from the host\n")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f"""
[containers.binds]
args = ["/bin/cat", "/mnt/hello"]
mounts = [{{ destination = "/mnt", type = "bind", source = "{source}", options = ["rbind", "rw"] }}]
""")
    result = subprocess.run(CLI + ["run", "--state-dir", str(tmp_path / "state"), str(manifest)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert "binds | from the host" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0


# -- item 8: the supervisor's fd limit stays its own -------------------------------------------

async def test_the_workload_keeps_the_fd_limit_the_supervisor_had(bundle: Bundle,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    monkeypatch.setattr(_launch, "_fd_limit_before", None)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    def no_limits(c: dict[str, Any]) -> None:
        del c["process"]["rlimits"]  # runc's default sets RLIMIT_NOFILE

    try:
        _launch.raise_fd_limit()  # what a Supervisor does when it starts
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 512
        status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "ulimit -n",
                                                                         edit=no_limits)))
        assert out.strip() == "512"

        def own_limit(c: dict[str, Any]) -> None:
            c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 300, "hard": 300}]

        status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "ulimit -n",
                                                                         edit=own_limit)))
        assert out.strip() == "300"  # the spec's own wins
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
