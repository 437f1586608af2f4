"""The attack suite (issue 8, item 9): every known way out of a runc-style container, played from
inside a real one, as a user starts it (``supervisor run --bundle``, a manifest and ``supervisor
exec``, or the public API where only an embedding program can do it).

Each test names the runc CVE or the issue-8 item it plays, and asserts two things: the attack
reached what it aimed at (the target process was seen, the file was there), so the test can fail;
and it got nothing (the host's file, directory or process is untouched, the container got the
kernel's refusal that runc's fix gives). ``tests/data/attack.c`` is the attacker's toolbox: a static
program copied into the busybox rootfs (see its header for the commands); it never damages what it
reaches, it reports what it could have done.

Tests marked ``xfail(strict=True)`` play an attack that still works; the reason names the issue-8
item whose fix closes it, so the mark fails (and must go) the day the fix lands.
"""

import contextlib
import copy
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import supervisor
from supervisor import BootstrapError, ContainerSpec
from supervisor._launch import BOOTSTRAP

from .conftest import HERE, RUNC_SPEC, children_of, make_rootfs, needs_root

pytestmark = needs_root

CLI = [sys.executable, "-m", "supervisor"]


def _every_capability() -> list[str]:
    from supervisor.spec import CAPABILITIES

    eff = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("CapEff:")), 16)
    return [name for name, bit in CAPABILITIES.items() if eff >> bit & 1]


# -- the attacker's rootfs ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def attack_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/attack.c, linked statically (the busybox rootfs has no libc)."""
    if shutil.which("cc") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs a C compiler with a static libc")
    out = tmp_path_factory.mktemp("attack") / "attack"
    subprocess.run(["cc", "-static", "-O2", "-o", str(out), str(HERE / "data" / "attack.c")], check=True)
    return out


def make_box(path: Path, attack_bin: Path) -> Path:
    """The busybox rootfs of conftest with the attacker's toolbox at /bin/attack."""
    if not os.path.exists("/usr/bin/busybox"):
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs Debian's busybox-static at /usr/bin/busybox")
    make_rootfs(path)
    shutil.copy2(attack_bin, path / "bin" / "attack")
    (path / "data" / "reexec").write_text("#!/proc/self/exe\n")  # CVE-2019-5736's entry point
    os.chmod(path / "data" / "reexec", 0o755)
    return path


@pytest.fixture(scope="session")
def box(tmp_path_factory: pytest.TempPathFactory, attack_bin: Path) -> Path:
    """A shared attacker rootfs: tests that change their rootfs make their own (``make_box``)."""
    return make_box(tmp_path_factory.mktemp("box") / "rootfs", attack_bin)


def write_bundle(directory: Path, rootfs: Path, *args: str, edit: Callable[[dict[str, Any]], None] | None = None
                 ) -> Path:
    """A bundle with what `runc spec` writes, ``args`` as the process and ``edit`` applied."""
    directory.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(RUNC_SPEC)
    config["root"]["path"] = str(rootfs)
    config["process"]["args"] = list(args)
    if edit is not None:
        edit(config)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def run_bundle(bundle: Path, name: str = "box", *, pass_fds: tuple[int, ...] = (), stdin: Any = subprocess.DEVNULL,
               preexec_fn: Callable[[], None] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``supervisor run --bundle`` to the end, as a user types it, with ``pass_fds`` left open."""
    return subprocess.run(CLI + ["run", "--bundle", str(bundle), name], capture_output=True, text=True,
                          timeout=timeout, pass_fds=pass_fds, stdin=stdin, preexec_fn=preexec_fn, check=False)


def with_init(c: dict[str, Any]) -> None:
    c.setdefault("annotations", {})["supervisor.init"] = "true"


def all_caps(c: dict[str, Any]) -> None:
    every = _every_capability()
    c["process"]["capabilities"] = {k: every for k in ("bounding", "effective", "permitted")}
    c["process"]["noNewPrivileges"] = False


def read_all(fd: int) -> str:
    out = bytearray()
    while chunk := os.read(fd, 65536):
        out += chunk
    return out.decode()


def api_run(spec: ContainerSpec, name: str = "box") -> tuple[Any, str]:
    """One container through the public API, to its end: its status and what it printed. (Plain
    blocking reads after the end: the output of these tests fits in a pipe.)"""
    r, w = os.pipe()
    try:
        status = trio.run(lambda: supervisor.run(spec, name=name, stdin=None, stdout=w, stderr=w))
        os.close(w)
        w = -1
        return status, read_all(r)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


class Session:
    """A ``supervisor run MANIFEST`` in the background: ``exec`` runs ``supervisor exec`` against
    it; ``output`` is all it printed, once the session is over."""

    def __init__(self, process: "subprocess.Popen[str]", state: Path) -> None:
        self.process = process
        self.state = state
        self.output = ""

    def exec(self, name: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(CLI + ["exec", "--state-dir", str(self.state), name, "--", *cmd],
                              capture_output=True, text=True, timeout=60, check=False, **kw)


@contextlib.contextmanager
def supervising(tmp_path: Path, manifest: str, first_line: str) -> Iterator[Session]:
    """``supervisor run MANIFEST`` until its output starts with ``first_line`` and its control socket
    answers; stopped (SIGINT) when the block ends."""
    state = tmp_path / "state"
    path = tmp_path / "manifest.toml"
    path.write_text(manifest)
    with subprocess.Popen(CLI + ["run", "--state-dir", str(state), str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as p:
        session = Session(p, state)
        try:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert first_line in line, line + (p.stdout.read() if p.poll() is not None else "")
            deadline = time.monotonic() + 10
            while not (state / "control.sock").exists():
                assert time.monotonic() < deadline, "the control socket never showed"
                time.sleep(0.02)
            yield session
        finally:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            session.output = line + (p.stdout.read() if p.stdout else "")  # a pipe holds what these print


# -- the pid-1 init (issue 8 item 2) -------------------------------------------------------------------

@pytest.mark.parametrize("how, refused", [
    ("ptrace", "ptrace 1: Operation not permitted"),
    ("mem", "mem 1: Permission denied"),
    ("getfd", "getfd 1: nothing: Operation not permitted"),
    ("exe", "exe 1: open: Permission denied"),
])
def test_pid1_init_cannot_be_traced_read_or_robbed(box: Path, tmp_path: Path, how: str, refused: str) -> None:
    """With ``supervisor.init``, the init stays as pid 1 of the container beside the workload, with
    the same uid and capabilities: unless it is non-dumpable, the workload can ptrace it, write its
    memory, copy its descriptors with pidfd_getfd and open the host's binary through /proc/1/exe.
    The control: the same command against the workload's own shell works."""
    b = write_bundle(tmp_path, box, "/bin/sh", "-c", f"attack {how} $$; attack {how} 1", edit=with_init)
    result = run_bundle(b)
    assert result.returncode == 0, result.stderr
    mine, init = result.stdout.splitlines()[0], result.stdout.splitlines()[-1]
    assert ("OPENED" in mine or "ATTACHED" in mine or " -> " in mine or "dev=" in mine), result.stdout
    assert init == refused, result.stdout


def test_pid1_init_of_a_manifest_container(box: Path, tmp_path: Path) -> None:
    """The same through a manifest's ``init = true``, with Docker's capabilities and no seccomp
    filter (the default profile would refuse ptrace on its own): the init is out of reach."""
    path = tmp_path / "manifest.toml"
    path.write_text(f"""
[containers.box]
root = "{box}"
args = ["/bin/sh", "-c", "attack mem $$; for how in ptrace mem getfd exe; do attack $how 1; done"]
init = true
seccomp = "unconfined"
""")
    result = subprocess.run(CLI + ["run", "--state-dir", str(tmp_path / "state"), str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    lines = [line.removeprefix("box | ") for line in result.stdout.splitlines()]
    assert lines[0].endswith(": OPENED"), result  # the control: its own shell
    assert lines[1:] == ["ptrace 1: Operation not permitted", "mem 1: Permission denied",
                         "getfd 1: nothing: Operation not permitted", "exe 1: open: Permission denied"], result


def test_pid1_init_is_as_confined_as_the_workload(box: Path, tmp_path: Path) -> None:
    """The init that stays as pid 1 runs under the container's seccomp filter and with the
    workload's credentials, whatever ``noNewPrivileges`` says: whoever takes it over gains nothing."""
    def edit(c: dict[str, Any]) -> None:
        with_init(c)
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["process"]["noNewPrivileges"] = True
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                 "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]}

    b = write_bundle(tmp_path / "b", box, "/bin/sh", "-c", "grep -E '^(Uid|Gid|Seccomp):' /proc/1/status "
                     "/proc/self/status", edit=edit)
    result = run_bundle(b)
    assert result.returncode == 0, result
    init = sorted(line.split(":", 1)[1] for line in result.stdout.splitlines() if line.startswith("/proc/1/"))
    mine = sorted(line.split(":", 1)[1] for line in result.stdout.splitlines() if line.startswith("/proc/self/"))
    assert len(init) == 3 and init == mine, result.stdout


# -- host descriptors (issue 8 item 1) --------------------------------------------------------------------

@pytest.fixture
def host_dir(tmp_path: Path) -> Iterator[int]:
    """An inheritable fd on a host directory holding a secret, as ``N</some/host/dir`` leaves it
    (a number free here: pytest holds some low ones)."""
    d = tmp_path / "host-dir"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)
    assert sorted(os.listdir(d)) == ["secret"], "the container wrote into the host directory"


def look_for(fd: int) -> str:
    return (f"ls /proc/self/fd | tr '\\n' ' '; echo; cat /proc/self/fd/{fd}/secret; cat /proc/1/fd/{fd}/secret; "
            f"touch /proc/1/fd/{fd}/pwned; attack getfd 1")


@pytest.mark.parametrize("init", [
    pytest.param(False, id="no-init"),
    pytest.param(True, id="init"),
])
def test_no_host_fd_reaches_the_container_from_the_cli(box: Path, tmp_path: Path, host_dir: int, init: bool) -> None:
    """``supervisor run --bundle b x 9</some/host/dir``: the shell's fd reaches the supervisor; it
    must reach nothing in the container, neither the workload nor a pid-1 init it could rob
    (/proc/1/fd/9, pidfd_getfd)."""
    b = write_bundle(tmp_path / "bundle", box, "/bin/sh", "-c", look_for(host_dir), edit=with_init if init else None)
    result = run_bundle(b, pass_fds=(host_dir,))
    assert result.stdout.splitlines()[0].split() == ["0", "1", "2", "3"], result.stdout  # 3: ls's own directory
    assert "host secret" not in result.stdout
    assert "host-dir" not in result.stdout  # what pidfd_getfd copied out of pid 1


# -- CVE-2019-5736: overwriting the runtime through /proc/PID/exe ----------------------------------------

def runtime_bytes() -> bytes:
    return Path(BOOTSTRAP).read_bytes()


@pytest.mark.parametrize("entry", ["/proc/self/exe", "/data/reexec"])
def test_cve_2019_5736_on_start(box: Path, tmp_path: Path, entry: str) -> None:
    """The published exploit, on a start: the container's entry point is ``/proc/self/exe`` (or a
    ``#!/proc/self/exe`` script), so the init re-executes whatever it runs from inside the
    container. A process of the same pid namespace (container A; B joins its pid namespace, which a
    config may ask) holds /proc/PID/exe of it and, once nothing runs the file, writes to it. What
    runs must be a sealed copy: then the hold is on a memfd that refuses writes, never on the host's
    file. (The attacker writes back the byte it read: a hole leaves the file as it was.)"""
    before = runtime_bytes()
    a = write_bundle(tmp_path / "a", box, "/bin/attack", "watch-exe", "5", edit=all_caps)
    with subprocess.Popen(CLI + ["run", "--bundle", str(a), "attacker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True) as attacker:
        try:
            init = _child_of(attacker.pid, "attack")

            def join(c: dict[str, Any]) -> None:
                pid_ns = next(ns for ns in c["linux"]["namespaces"] if ns["type"] == "pid")
                pid_ns["path"] = f"/proc/{init}/ns/pid"

            victim = run_bundle(write_bundle(tmp_path / "b", box, entry, edit=join), "victim")
            out, err = attacker.communicate(timeout=30)
        finally:
            if attacker.poll() is None:
                attacker.kill()
    assert victim.returncode != 0, victim  # the bootstrap, run as a program, refuses to work
    seen = [line for line in out.splitlines() if line.startswith("seen ")]
    assert seen, (out, err)  # the attacker did reach the runtime's process
    assert "WROTE" not in out, out
    assert all("memfd:" in line for line in seen), out  # only ever a sealed copy
    assert runtime_bytes() == before


def test_cve_2019_5736_on_exec(box: Path, tmp_path: Path) -> None:
    """The same attack on ``supervisor exec``: a container with every capability watches for the
    process that joins it and holds /proc/PID/exe; the joiner runs from a sealed copy."""
    before = runtime_bytes()
    manifest = f"""
[containers.attacker]
root = "{box}"
args = ["/bin/sh", "-c", "echo ready; while :; do /bin/attack watch-exe 30; done"]
capabilities = {json.dumps(_every_capability())}
seccomp = "unconfined"
stop_timeout = 0
"""
    with supervising(tmp_path, manifest, "attacker | ready") as session:
        for _ in range(15):
            assert session.exec("attacker", "/bin/true").returncode == 0
    out = session.output
    seen = [line for line in out.splitlines() if "seen " in line]
    assert seen, out
    assert "WROTE" not in out, out
    assert all("memfd:" in line for line in seen), out
    assert runtime_bytes() == before


def _child_of(pid: int, name: str, timeout: float = 10.0) -> int:
    """The container init of ``supervisor run`` (pid) once it runs the workload ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child, comm, state in children_of(pid):
            if comm == name and state != "Z":
                return child
        time.sleep(0.02)
    raise AssertionError(f"no container running {name} started by {pid}")


# -- CVE-2016-9962: a process joining the container, caught before it execs -----------------------------

def test_cve_2016_9962_joining_process_cannot_be_reached(box: Path, tmp_path: Path) -> None:
    """runc's exec left its init dumpable while it held host descriptors. Here the container's root
    (Docker's capabilities, no seccomp filter) stops every process that joins its pid namespace and
    steps it (SIGSTOP, SIGCONT: the same uid may) until it can open its /proc/PID/mem: it must only
    ever get there once the process runs the program it exec'd, never while it is the runtime."""
    # The image's PATH: a long one makes the joiner try many directories after it has dropped its
    # capabilities, a window wide enough for the stalker to step into.
    path = ":".join(f"/nowhere/{i}" for i in range(1000)) + ":/bin"
    manifest = f"""
[containers.stalker]
root = "{box}"
args = ["/bin/sh", "-c", "echo ready; exec /bin/attack stalk 60"]
env = {{ PATH = "{path}" }}
seccomp = "unconfined"
stop_timeout = 0
"""
    with supervising(tmp_path, manifest, "stalker | ready") as session:
        for _ in range(20):
            assert session.exec("stalker", "true").returncode == 0
    out = session.output
    assert "joined " in out or "CAUGHT" in out, out  # the stalker did meet the joiners
    assert "CAUGHT" not in out, out


# -- CVE-2024-21626: a working directory outside the root through a leaked fd ---------------------------

def test_cve_2024_21626_cwd_through_a_leaked_fd_on_start(box: Path, tmp_path: Path, host_dir: int) -> None:
    """runc leaked a host directory fd into its init; ``cwd = /proc/self/fd/N`` then started the
    workload in the host's filesystem. Every small fd number, and the host directory the caller
    leaked: the start fails (the fd is gone, or the cwd is found outside the root), never runs there."""
    for fd in [*range(3, 10), host_dir]:
        for init in (False, True):
            def edit(c: dict[str, Any], fd: int = fd, init: bool = init) -> None:
                c["process"]["cwd"] = f"/proc/self/fd/{fd}"
                if init:
                    with_init(c)

            b = write_bundle(tmp_path / f"b{fd}{init}", box, "/bin/sh", "-c", "pwd; cat secret; true", edit=edit)
            result = run_bundle(b, pass_fds=(host_dir,))
            assert "host secret" not in result.stdout, (fd, result)
            if result.returncode == 0:  # an fd of the container's own (its root): fine
                assert result.stdout.startswith("/"), (fd, result)
            else:
                assert result.returncode == 125 and ("cwd" in result.stderr or "chdir" in result.stderr), (fd, result)


def test_cve_2024_21626_cwd_through_a_leaked_fd_on_exec(box: Path, tmp_path: Path, host_dir: int) -> None:
    """The same through exec: an embedding program left a host directory fd inheritable and runs a
    process in the container with ``cwd=/proc/self/fd/N``."""
    os.set_inheritable(host_dir, True)
    spec = ContainerSpec.from_bundle(write_bundle(tmp_path / "b", box, "/bin/sleep", "100"))
    r, w = os.pipe()

    async def main() -> list[str]:
        errors = []
        async with supervisor.open_container(spec, name="box") as c:
            for fd in [*range(3, 10), host_dir]:
                try:
                    await c.exec(["/bin/sh", "-c", "pwd; cat secret"], cwd=f"/proc/self/fd/{fd}", stdout=w, stderr=w)
                except BootstrapError as e:
                    errors.append(str(e))
                else:
                    errors.append(f"fd {fd}: ran")
            c.kill()
        return errors

    try:
        errors = trio.run(main)
        os.close(w)
        w = -1
        out = read_all(r)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert "host secret" not in out and "host-dir" not in out, out
    assert not any("ran" in e for e in errors), (errors, out)


# -- descriptors from an embedding program and from other containers (issue 8 item 1) ------------------

@pytest.mark.parametrize("init", [
    pytest.param(False, id="no-init"),
    pytest.param(True, id="init"),
])
def test_fds_an_embedding_program_left_inheritable(box: Path, tmp_path: Path, host_dir: int, init: bool) -> None:
    """A program that embeds the library left a host directory fd inheritable (what ``subprocess``
    with ``close_fds=False`` or a careless ``os.open`` does): no process of the container gets it."""
    os.set_inheritable(host_dir, True)
    b = write_bundle(tmp_path / "bundle", box, "/bin/sh", "-c", look_for(host_dir), edit=with_init if init else None)
    status, out = api_run(ContainerSpec.from_bundle(b))
    assert out.splitlines()[0].split() == ["0", "1", "2", "3"], out
    assert "host secret" not in out and "host-dir" not in out, out


def test_one_containers_init_cannot_hold_anothers_pty_master(box: Path, tmp_path: Path) -> None:
    """Several containers in one program: A has a terminal, whose master reaches the supervisor over
    the sync socket; B, started next with a pid-1 init, must not hold it (received fds are
    close-on-exec), and B's workload must not be able to copy it out of its init."""
    a = ContainerSpec.from_bundle(write_bundle(tmp_path / "a", box, "/bin/sleep", "100",
                                               edit=lambda c: c["process"].update(terminal=True)))
    b = ContainerSpec.from_bundle(write_bundle(tmp_path / "b", box, "/bin/sh", "-c",
                                               "ls -l /proc/self/fd; attack getfd 1", edit=with_init))
    r, w = os.pipe()

    async def main() -> bool:
        async with supervisor.open_container(a, name="a") as ca:
            assert ca.console is not None
            inheritable = os.get_inheritable(ca.console)
            status = await supervisor.run(b, name="b", stdout=w, stderr=w)
            assert status.code == 0
            ca.kill()
        return inheritable

    try:
        inheritable = trio.run(main)
        os.close(w)
        w = -1
        out = read_all(r)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert "/dev/pts/ptmx" not in out and "/dev/ptmx" not in out, out
    assert not inheritable


# -- CVE-2022-29162: inheritable capabilities ------------------------------------------------------------

def status_caps(text: str) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition(":\t") for line in text.splitlines()) if k.startswith("Cap")}


def test_cve_2022_29162_no_inheritable_capabilities(box: Path, tmp_path: Path) -> None:
    """runc's exec gave the process inheritable capabilities, which a program with file
    capabilities turns into permitted ones across execve. Neither a start nor an exec has any
    (the config asks for none); ambient ones are only those the config asks for."""
    manifest = f"""
[containers.box]
root = "{box}"
args = ["/bin/sh", "-c", "grep Cap /proc/self/status; echo ready; exec sleep 100"]
stop_timeout = 0
"""
    with supervising(tmp_path, manifest, "box | Cap") as session:
        result = session.exec("box", "grep", "Cap", "/proc/self/status")
    assert result.returncode == 0, result
    started = status_caps("\n".join(line.removeprefix("box | ") for line in session.output.splitlines()))
    for caps in (started, status_caps(result.stdout)):
        assert caps["CapInh"] == "0000000000000000", caps
        assert caps["CapAmb"] == "0000000000000000", caps
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] != "0000000000000000", caps


# -- the config's mounts against the image: CVE-2019-19921 and CVE-2023-27561, CVE-2023-28642 -----------

@pytest.fixture
def own_box(tmp_path: Path, attack_bin: Path) -> Path:
    """An attacker's rootfs this test may shape (its image)."""
    return make_box(tmp_path / "rootfs", attack_bin)


#: what a workload runs to see whether the config's masked and read-only paths hold: a masked file
#: reads empty; /proc/sys refuses writes (the one tried is the container's own hostname, harmless
#: where it works; the next could be core_pattern, which is the host's)
CHECK_PROC = ("echo timer_list $(wc -c < /proc/timer_list); "
              "(echo attacker > /proc/sys/kernel/hostname) 2>/dev/null && echo sys WRITABLE || echo sys ro")


def test_cve_2019_19921_volume_symlinked_into_proc(own_box: Path, tmp_path: Path) -> None:
    """CVE-2019-19921 (and its regression CVE-2023-27561): runc's checks on mounts over /proc
    looked at the destination as written; an image whose
    volume path is a symlink into /proc got the volume mounted inside /proc, where runc later
    resolves paths it trusts. Here: the image makes ``/data/vol`` a symlink to ``/proc/self``; the
    config mounts a volume (a host directory the attacker filled earlier: symlinks named like the
    init's descriptors) at ``/data/vol/fd``. It lands on the init's /proc/1/fd, through which the
    init then applies the masked and read-only paths: they land on the decoy, and /proc/sys (so
    core_pattern, the host's) is writable. runc refuses a
    destination inside /proc that is not procfs or a few whitelisted files."""
    (own_box / "data" / "vol").symlink_to("/proc/self")
    (own_box / "data" / "decoy").mkdir()
    volume = tmp_path / "volume"
    volume.mkdir()
    for n in range(3, 64):
        (volume / str(n)).symlink_to("/data/decoy")

    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": "/data/vol/fd", "type": "bind", "source": str(volume),
                            "options": ["rbind"]})
        c["root"]["readonly"] = False  # or the decoy turns up first where the root is made read-only

    result = run_bundle(write_bundle(tmp_path / "b", own_box, "/bin/sh", "-c", CHECK_PROC, edit=edit))
    if result.returncode == 0:  # it started: then the config's protections must hold
        assert result.stdout.split("\n")[:2] == ["timer_list 0", "sys ro"], result
    # refused: by the planner, which sees where the destination leads (2), or by the init (125)
    assert result.returncode in (2, 125) and "/proc" in result.stderr, result


def test_cve_2023_28642_proc_of_the_image_is_a_symlink(own_box: Path, tmp_path: Path) -> None:
    """CVE-2023-28642: the image's /proc is a symlink (to a directory it filled with fake files).
    procfs is never mounted through a symlink: the config is refused, naming /proc, as runc does.
    (Were it mounted where the symlink leads inside the root, /proc would be procfs all the same,
    with the masked and read-only paths in place: the test accepts that too, and checks it.)"""
    (own_box / "proc").rmdir()
    fake = own_box / "data" / "fakeproc"
    (fake / "sys" / "kernel").mkdir(parents=True)
    (fake / "timer_list").write_text("fake\n")
    (own_box / "proc").symlink_to("/data/fakeproc")
    result = run_bundle(write_bundle(tmp_path / "b", own_box, "/bin/sh", "-c",
                                     CHECK_PROC + "; stat -f -c %T /proc/; cat /proc/timer_list"))
    if result.returncode != 0:  # refused: by the planner (a bad config, 2) or by the init (125)
        assert result.returncode in (2, 125) and '"/proc"' in result.stderr, result
        return
    assert result.stdout.split("\n")[:3] == ["timer_list 0", "sys ro", "proc"], result
    assert "fake" not in result.stdout


def without_dev_tmpfs(c: dict[str, Any]) -> None:
    """The image's own /dev (a config may leave /dev to the image, as runc allows)."""
    c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/dev"]


#: where the image's symlinks lead: a procfs file the container must never get writable. The real
#: attacks aim at kernel.core_pattern (the host's: a pipe there runs as root on the host); these
#: aim at the container's own hostname (namespaced, harmless), so a regression changes nothing on
#: the host and shows as the workload's hostname turned "attacker".
TARGET = "/proc/sys/kernel/hostname"


# -- CVE-2025-31133: the masking source /dev/null is the image's ---------------------------------------

def test_cve_2025_31133_dev_null_replaced_by_a_symlink(own_box: Path, tmp_path: Path) -> None:
    """runc masks files by bind-mounting /dev/null over them; an image (or a racing container)
    that makes /dev/null a symlink to a procfs file gets that file bind-mounted writable in place
    of every masked one. The source must be the null device: the start fails, naming it."""
    (own_box / "dev" / "null").symlink_to(TARGET)
    b = write_bundle(tmp_path / "b", own_box, "/bin/sh", "-c", "echo attacker > /proc/timer_list; hostname",
                     edit=without_dev_tmpfs)
    result = run_bundle(b)
    assert "attacker" not in result.stdout, result
    assert result.returncode == 125, result
    assert "/dev/null" in result.stderr and "not the null device" in result.stderr, result


# -- CVE-2025-52565: the console through /dev/console or /dev/ptmx -------------------------------------

@pytest.mark.parametrize("name", ["console", "ptmx"])
def test_cve_2025_52565_console_redirected(own_box: Path, tmp_path: Path, name: str) -> None:
    """runc bind-mounted the pty over /dev/console by path: an image whose /dev/console (or the
    /dev/pts entry) is a symlink to a procfs file made runc mount that file where the container
    can write it. The pty here comes from the container's devpts by TIOCGPTPEER and nothing is
    mounted by path: the workload's terminal is a pty, and the image's symlink leads nowhere
    writable (or, when it replaces /dev/ptmx, the start fails naming it)."""
    (own_box / "dev" / name).symlink_to(TARGET)

    def edit(c: dict[str, Any]) -> None:
        without_dev_tmpfs(c)
        c["process"]["terminal"] = True

    b = write_bundle(tmp_path / "b", own_box, "/bin/sh", "-c",
                     f"tty; (echo attacker > /dev/{name}) 2>&1; hostname", edit=edit)
    status, out = api_terminal(ContainerSpec.from_bundle(b))
    if name == "ptmx" and isinstance(status, BootstrapError):
        assert "/dev/ptmx" in str(status), status
        return
    assert out.splitlines()[0].strip() == "/dev/pts/0", out
    assert "Read-only file system" in out and "attacker" not in out.splitlines()[-1], out


def api_terminal(spec: ContainerSpec) -> tuple[Any, str]:
    """A terminal container through the API: its status (or the error that stopped it) and what
    its pty's master read."""
    async def main() -> tuple[Any, str]:
        try:
            async with supervisor.open_container(spec, name="tty") as c:
                master = c.take_console()
                assert master is not None
                out = bytearray()
                try:
                    while True:
                        await trio.lowlevel.wait_readable(master)
                        try:
                            chunk = os.read(master, 65536)
                        except OSError:  # EIO: every peer is closed
                            break
                        if not chunk:
                            break
                        out += chunk
                finally:
                    os.close(master)
                return await c.wait(), out.decode(errors="replace").replace("\r\n", "\n")
        except BootstrapError as e:
            return e, ""

    return trio.run(main)


# -- CVE-2025-52881: writes to /proc redirected by mounts during setup ---------------------------------

def test_cve_2025_52881_sysctl_redirected_by_a_mount(own_box: Path, tmp_path: Path) -> None:
    """runc wrote sysctls (and LSM labels) by path under /proc; a mount that an image's symlink
    steers over /proc/sys/... made the write land in the attacker's file (or another procfs file).
    Here the image points ``/data/vol`` at /proc/sys/net and the config mounts a volume there (a
    directory the attacker filled: an ``ip_forward`` of its own). The sysctl is opened beneath a
    checked procfs and never across a mount: the start fails naming it, and the decoy is untouched."""
    (own_box / "data" / "vol").symlink_to("/proc/sys/net")
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "ip_forward").write_text("decoy\n")

    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": "/data/vol/ipv4", "type": "bind", "source": str(volume),
                            "options": ["rbind"]})
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["root"]["readonly"] = False

    result = run_bundle(write_bundle(tmp_path / "b", own_box, "/bin/true", edit=edit))
    assert (volume / "ip_forward").read_text() == "decoy\n", result  # the write did not follow the mount
    # refused: the mount, by the planner, as it leads into /proc (2); else the sysctl, by the init (125)
    assert (result.returncode, "/proc/sys/net/ipv4" in result.stderr) == (2, True) or (
        result.returncode == 125 and "ip_forward" in result.stderr), result


# -- CVE-2019-16884: a fake procfs under the LSM label -----------------------------------------------------

def _lsm() -> str | None:
    from supervisor.host import Host

    host = Host.probe()

    return "apparmor" if host.apparmor else "selinux" if host.selinux else None


@pytest.mark.skipif(_lsm() is None, reason="needs AppArmor or SELinux: without an LSM there is no label to drop")
def test_cve_2019_16884_fake_proc_under_the_exec_label(box: Path, tmp_path: Path) -> None:
    """The container mounts a tmpfs over /proc with a fake attr/ tree, then is asked for an exec
    under a label: the label goes to the real procfs (or the exec is refused), never into the fake
    files, which the exec'd process then shows empty."""
    lsm = _lsm()
    if lsm == "apparmor":
        label = "unconfined"
    else:
        label = Path("/proc/self/attr/current").read_text().strip("\0\n")

    def edit(c: dict[str, Any]) -> None:
        all_caps(c)
        c["process"]["apparmorProfile" if lsm == "apparmor" else "selinuxLabel"] = label

    spec = ContainerSpec.from_bundle(write_bundle(
        tmp_path / "b", box, "/bin/sh", "-c",
        "mount -t tmpfs fake /proc && mkdir -p /proc/self/attr/apparmor /proc/thread-self/attr/apparmor && "
        "for d in self thread-self; do touch /proc/$d/attr/exec /proc/$d/attr/apparmor/exec; done && "
        "echo ready && exec sleep 100", edit=edit))
    r, w = os.pipe()

    async def main() -> Any:
        async with supervisor.open_container(spec, name="box", stdout=w, stderr=w) as c:
            assert os.read(r, 6) == b"ready\n"
            try:
                return await c.exec(["/bin/sh", "-c", "cat /proc/*/attr/exec /proc/*/attr/apparmor/exec"],
                                    stdout=w, stderr=w)
            except BootstrapError as e:
                return e
            finally:
                c.kill()

    try:
        outcome = trio.run(main)
        os.close(w)
        w = -1
        out = read_all(r)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert isinstance(outcome, BootstrapError) or outcome.code == 0, (outcome, out)
    assert label not in out, out  # nothing was written into the fake files


# -- devices (issue 8 item 4) --------------------------------------------------------------------------------

def host_disk() -> tuple[int, int]:
    st = os.stat("/")
    return os.major(st.st_dev), os.minor(st.st_dev)


def read_the_disk() -> str:
    major, minor = host_disk()
    return (f"mknod /dev/hostdisk b {major} {minor} && echo made; "
            "head -c 512 /dev/hostdisk > /dev/null && echo READ; mknod /dev/loop-x b 7 0 && "
            "head -c 1 /dev/loop-x > /dev/null 2>&1 && echo OPENED loop; true")


def test_mknod_of_a_host_disk_without_device_rules(box: Path, tmp_path: Path) -> None:
    """A config with CAP_MKNOD and no ``linux.resources.devices``: runc denies every device but
    its defaults all the same; the disk node can be made (``m`` is allowed) but not opened."""
    def edit(c: dict[str, Any]) -> None:
        for key in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][key].append("CAP_MKNOD")
        c["linux"]["resources"].pop("devices", None)

    result = run_bundle(write_bundle(tmp_path / "b", box, "/bin/sh", "-c", read_the_disk(), edit=edit))
    assert "made" in result.stdout, result
    assert "READ" not in result.stdout and "OPENED" not in result.stdout, result
    assert "Operation not permitted" in result.stderr, result


def test_mknod_of_a_host_disk_in_an_inline_container(tmp_path: Path) -> None:
    """An inline manifest container on the host root has CAP_MKNOD by default (Docker's set):
    it makes the host disk's node in its /dev and must not be able to open it."""
    manifest = f"""
[containers.box]
args = ["/bin/sh", "-c", "{read_the_disk()}"]
"""
    path = tmp_path / "manifest.toml"
    path.write_text(manifest)
    result = subprocess.run(CLI + ["run", "--state-dir", str(tmp_path / "state"), str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert "box | made" in result.stdout, result
    assert "READ" not in result.stdout and "OPENED" not in result.stdout, result


def test_mknod_of_a_host_disk_without_a_cgroup(tmp_path: Path) -> None:
    """The fast path without a cgroup (annotation ``supervisor.cgroup: "false"``) is documented as
    "no limits"; but the device rules are isolation, not a limit, and they live in the cgroup. An
    inline container (CAP_MKNOD by default) without one opens any host block device it makes."""
    path = tmp_path / "manifest.toml"
    path.write_text(f"""
[containers.box]
args = ["/bin/sh", "-c", "{read_the_disk()}"]
annotations = {{ "supervisor.cgroup" = "false" }}
""")
    result = subprocess.run(CLI + ["run", "--state-dir", str(tmp_path / "state"), str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert "box | made" in result.stdout or result.returncode == 2, result  # made, or such a config refused
    assert "READ" not in result.stdout and "OPENED" not in result.stdout, result


# -- the handshake (issue 8 item 5) -------------------------------------------------------------------------

def test_init_killed_in_setup_is_not_the_workloads_death(box: Path, tmp_path: Path) -> None:
    """Without ``noNewPrivileges`` the filter goes in before the credentials change; a filter that
    kills ``capset`` kills the init in setup. That is a start that failed (125, said so), not a
    workload killed by SIGSYS: the workload never ran."""
    def edit(c: dict[str, Any]) -> None:
        c["process"]["noNewPrivileges"] = False
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                 "syscalls": [{"names": ["capset"], "action": "SCMP_ACT_KILL"}]}

    result = run_bundle(write_bundle(tmp_path / "b", box, "/bin/echo", "ran", edit=edit))
    assert result.stdout == ""
    assert result.returncode == 125 and result.stderr.startswith("supervisor: box: "), result


def test_deep_mount_destination_fails_cleanly(own_box: Path, tmp_path: Path) -> None:
    """A mount destination with thousands of missing components (from an image or a config) must
    be made, or refused by name: never crash the init and be reported as the workload's death."""
    deep = "/data/" + "/".join(["d"] * 2000)  # within PATH_MAX

    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": deep, "type": "tmpfs", "source": "tmpfs"})
        c["root"]["readonly"] = False

    try:
        result = run_bundle(write_bundle(tmp_path / "b", own_box, "/bin/echo", "ran", edit=edit))
    finally:
        # pytest removes old temporary directories with a recursive rmtree, which stops short of a
        # tree 2000 deep (and fails the session that tries): rm walks it without recursing.
        subprocess.run(["rm", "-rf", str(own_box / "data" / "d")], check=True)
    assert (result.returncode, result.stdout) == (0, "ran\n") or (
        result.returncode == 125 and "/data/d/d" in result.stderr), result


def test_oversized_field_is_a_spec_error(box: Path, tmp_path: Path) -> None:
    """An environment entry past the netlink attribute limit (64 KiB): a bad config, exit 2, the
    field named; not a traceback."""
    b = write_bundle(tmp_path / "b", box, "/bin/true",
                     edit=lambda c: c["process"]["env"].append("BIG=" + "x" * 70000))
    result = run_bundle(b)
    assert result.returncode == 2 and "process.env" in result.stderr, result
    assert "Traceback" not in result.stderr


# -- host-side paths (issue 8 items 6 and 7) ------------------------------------------------------------------

def test_exec_terminal_when_the_container_replaced_dev_ptmx(box: Path, tmp_path: Path) -> None:
    """An exec with a terminal opens the container's /dev/ptmx while it holds host privileges; the
    container (allowed to mount) bound something else there. The exec fails naming /dev/ptmx; the
    supervisor never receives a non-pty as the master."""
    spec = ContainerSpec.from_bundle(write_bundle(
        tmp_path / "b", box, "/bin/sh", "-c", "mount --bind /data/not-executable /dev/ptmx && echo ready && sleep 100",
        edit=all_caps))
    r, w = os.pipe()
    received: list[int] = []

    async def take(master: int) -> None:
        received.append(os.fstat(master).st_rdev)
        os.close(master)

    async def main() -> Any:
        async with supervisor.open_container(spec, name="box", stdout=w) as c:
            assert os.read(r, 6) == b"ready\n"
            try:
                return await c.exec(["/bin/true"], terminal=True, on_console=take)
            except BootstrapError as e:
                return e
            finally:
                c.kill()

    try:
        outcome = trio.run(main)
    finally:
        os.close(r)
        os.close(w)
    assert isinstance(outcome, BootstrapError) and "/dev/ptmx" in str(outcome), outcome
    assert received == []


def test_bind_source_is_the_hosts_not_the_containers_tmp(tmp_path: Path) -> None:
    """An inline container on the host root binds a host directory under /tmp: the source is the
    host's, opened before any of the container's mounts (its own /tmp tmpfs would hide it)."""
    source = tmp_path / "shared"
    source.mkdir()
    (source / "marker").write_text("from the host\n")
    path = tmp_path / "manifest.toml"
    path.write_text(f"""
[containers.box]
args = ["/bin/cat", "/mnt/marker"]
mounts = [{{ destination = "/mnt", type = "bind", source = "{source}", options = ["rbind", "ro"] }}]
""")
    result = subprocess.run(CLI + ["run", "--state-dir", str(tmp_path / "state"), str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert "box | from the host" in result.stdout, result


# -- limits (issue 8 item 8) ------------------------------------------------------------------------------------

def test_the_supervisors_fd_limit_stays_its_own(tmp_path: Path) -> None:
    """``supervisor run`` raises its own RLIMIT_NOFILE (it holds fds per container); a container
    without rlimits gets what the supervisor was started with, not the raised limit."""
    path = tmp_path / "manifest.toml"
    path.write_text("""
[containers.box]
args = ["/bin/sh", "-c", "echo $(ulimit -n) $(ulimit -Hn)"]
""")

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 3000))

    result = subprocess.run(CLI + ["run", "--state-dir", str(tmp_path / "state"), str(path)], capture_output=True,
                            text=True, timeout=60, check=False, preexec_fn=limits)
    assert "box | 1000 3000" in result.stdout, result


# -- the control socket -----------------------------------------------------------------------------------------

def test_a_container_cannot_drive_the_supervisor(tmp_path: Path) -> None:
    """A unix socket stays connectable on a read-only mount, and SO_PEERCRED says uid 0 for root in a
    container without a user namespace. An inline container on the host root sees a state
    directory that is not under /run or /tmp (its own tmpfs cover those), and so can exec into, stop
    or start its siblings: here it runs a command in another container. The control socket must
    not obey a process of a container (its peer is in another mount or pid namespace)."""
    state = tempfile.mkdtemp(prefix="sv-attack-state-", dir="/var/tmp")  # on the host root, not under a tmpfs
    try:
        attack = f"sleep 1; {sys.executable} -m supervisor exec --state-dir {state} victim -- " \
                 "/bin/sh -c 'echo ran in $(hostname)'"
        path = tmp_path / "manifest.toml"
        path.write_text(f"""
[containers.victim]
args = ["/bin/sleep", "100"]
hostname = "victim"
stop_timeout = 0

[containers.attacker]
args = ["/bin/sh", "-c", "{attack}"]
depends_on = ["victim"]
hostname = "attacker"
""")
        with subprocess.Popen(CLI + ["run", "--state-dir", state, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as p:
            try:
                deadline = time.monotonic() + 30
                out = ""
                assert p.stdout is not None
                while "attacker: exited" not in out and time.monotonic() < deadline:
                    out += p.stdout.readline()
            finally:
                p.send_signal(signal.SIGINT)
                p.wait(20)
                out += p.stdout.read() if p.stdout else ""
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert "supervisor: attacker: exited" in out, out  # the attacker did run its attempt
    assert "ran in victim" not in out, out
