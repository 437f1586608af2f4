"""Fixtures shared by the tests: a busybox rootfs, bundles, and the leak checks.

Container tests need root and Debian's busybox-static (``/usr/bin/busybox``, linked statically so the
rootfs needs no libraries); they are skipped, with the reason, where either is missing.
"""

import contextlib
import copy
import ctypes
import fcntl
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.host import Host

BUSYBOX = "/usr/bin/busybox"
HERE = Path(__file__).parent

#: what `runc spec` (1.1.5) writes, with terminal off: the config most bundles start from
RUNC_SPEC: dict[str, Any] = json.loads((HERE / "data" / "runc-spec.json").read_text())

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")

#: a root supervisor on a host without LSMs or uidmap: what the pure planning tests plan for,
#: whoever runs them
ROOT_HOST = Host(euid=0, egid=0)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs under both event loops (anyio's plugin, ``anyio_mode = "auto"``): the
    library promises the same behaviour on each. Named, not discovered, so a missing trio fails."""
    return str(request.param)


async def wait_until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``condition`` till it holds: what a test waits for, instead of a fixed sleep (the
    kernel's state, a cgroup's pids say, has no event to wait on)."""
    import anyio

    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def make_rootfs(path: Path) -> Path:
    """A minimal rootfs: static busybox and its applets, users and groups for the tests."""
    (path / "bin").mkdir(parents=True)
    for d in ("proc", "sys", "dev", "tmp", "etc", "root", "home/alice", "data"):
        (path / d).mkdir(parents=True, exist_ok=True)
    os.chmod(path / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = path / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (path / "etc" / "group").write_text(
        "root:x:0:\naudio:x:29:alice\nvideo:x:44:alice,bob\nalice:x:1000:\nnogroup:x:65534:\n")
    (path / "bin" / "probe").write_text((HERE / "data" / "probe.sh").read_text())
    os.chmod(path / "bin" / "probe", 0o755)
    (path / "data" / "not-executable").write_text("#!/bin/sh\necho hi\n")
    return path


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists(BUSYBOX):
        # CI installs it (see the README's test command): there a missing busybox is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs Debian's busybox-static at /usr/bin/busybox")
    path = make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    # root of a user namespace is an unprivileged uid on the host: it must be able to reach the rootfs
    for parent in path.parents:
        if parent == Path("/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    return path


Bundle = Callable[..., Path]


@pytest.fixture
def bundle(tmp_path: Path, rootfs: Path) -> Bundle:
    """Write a bundle: the runc spec default with ``args`` and edits applied by ``edit(config)``."""

    def make(*args: str, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
        config = copy.deepcopy(RUNC_SPEC)
        config["root"]["path"] = str(rootfs)
        config["process"]["args"] = list(args) or ["/bin/true"]
        if edit is not None:
            edit(config)
        (tmp_path / "config.json").write_text(json.dumps(config))
        return tmp_path

    return make


def container_hooks(config: dict[str, Any], tmp_path: Path, create: list[str], start: list[str],
                    timeout: int | None = None) -> None:
    """createContainer and startContainer hooks that run the shell lines given, in the busybox bundle:
    the first a host script (its path is the host's), the second a script only the container has, in
    /hookbin (a bind of the bundle's hookbin); both can write to the bundle's seen/ (bound at /seen)."""
    seen, hookbin = tmp_path / "seen", tmp_path / "hookbin"
    seen.mkdir(exist_ok=True)
    os.chmod(seen, 0o777)
    hookbin.mkdir(exist_ok=True)
    (tmp_path / "create-hook").write_text("#!/bin/sh\n" + "\n".join(create) + "\n")
    (hookbin / "start-hook").write_text("#!/bin/sh\n" + "\n".join(start) + "\n")
    os.chmod(tmp_path / "create-hook", 0o755)
    os.chmod(hookbin / "start-hook", 0o755)
    config["mounts"] += [
        {"destination": "/hookbin", "type": "bind", "source": str(hookbin), "options": ["rbind", "ro"]},
        {"destination": "/seen", "type": "bind", "source": str(seen), "options": ["rbind"]}]
    created: dict[str, Any] = {"path": str(tmp_path / "create-hook"), "args": ["create-hook", "a1", "a2"],
                               "env": ["X=1"]}
    started: dict[str, Any] = {"path": "/hookbin/start-hook"}
    if timeout is not None:
        created["timeout"] = started["timeout"] = timeout
    config["hooks"] = {"createContainer": [created], "startContainer": [started]}
    config["annotations"] = {"org.example/hooks": "yes"}


# -- nothing left behind ---------------------------------------------------------------------------

def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def children_of(parent: int) -> list[tuple[int, str, str]]:
    """(pid, command name, state) of every child of ``parent``, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            if fields[1] == str(parent):
                out.append((int(entry), name, fields[0]))
    return out


def container_inits(parent: int) -> set[int]:
    """The living children of a supervisor that are not bootstraps: its containers' inits."""
    return {pid for pid, name, state in children_of(parent) if "bootstrap" not in name and state != "Z"}


def _children() -> list[str]:
    return [f"{pid} {name} {state}" for pid, name, state in children_of(os.getpid())]


def _mounts() -> list[str]:
    return [line.split(" - ")[0].split(" ", 4)[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _cgroups() -> set[str]:
    """The cgroups this test process made for its containers (``supervisor-<our pid>``)."""
    mine = f"supervisor-{os.getpid()}"
    found = set()
    for top, dirs, _ in os.walk("/sys/fs/cgroup", onerror=lambda e: None):  # they may vanish meanwhile
        if os.path.basename(top) == mine:
            found.update(os.path.join(top, d) for d in dirs)
            dirs.clear()
    return found


@pytest.fixture(scope="session", autouse=True)
def sealed_bootstrap() -> None:
    """The sealed copy of the bootstrap every container runs from stays open for the process's life:
    made before the first test's fd count, it is no test's leak."""
    from supervisor._launch import sealed_bootstrap

    sealed_bootstrap()


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every test leaves no fd, child process (zombie or not), mount or container cgroup behind."""
    fds, mounts = _fds(), _mounts()
    yield
    assert _children() == [], "child processes left behind"
    assert _fds() - fds == set(), "file descriptors left open"
    assert _mounts() == mounts, "mounts changed on the host"
    assert _cgroups() == set(), "container cgroups left behind"


def on_a_terminal(argv: list[str], rows: int = 24, cols: int = 100) -> tuple[int, str]:
    """Run argv with a pty of the given size as its stdio; (exit code, what it printed)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        with subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True) as p:
            os.close(slave)
            slave = -1
            output = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the last holder of the slave is gone
                    break
                if not chunk:
                    break
                output += chunk
            return p.wait(30), output.decode(errors="replace")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


@contextlib.contextmanager
def planner(binary: str, root: Path) -> Iterator[list[str]]:
    """``supervisor-oci planner`` serving ``root`` (with --debug: a line per call), from when its
    socket answers; stopped after, and checked to have said nothing but those lines (a worker's
    failure is reported there). Yields a list that gets the lines about calls served."""
    proc = subprocess.Popen([binary, "--root", str(root), "--debug", "planner"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                    s.connect(str(root / "planner.sock"))
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the planner did not start"
                time.sleep(0.02)
        yield served
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    lines = err.splitlines()
    prefix = r"supervisor-oci planner: pid \d+: "
    served += [line.rsplit(" (", 1)[0] for line in lines
               if re.fullmatch(prefix + r"(supervisor-oci .* create|supervisor run) .*: (exit \d+ \([0-9.]+ ms\)"
                                        r"|the caller went away)", line)]
    declined = [line for line in lines
                if re.fullmatch(prefix + r"declined: (not a create|not a run --bundle|a create with descriptors"
                                r" to pass on|another \w+ namespace)", line)]
    assert (proc.returncode, out, len(served) + len(declined)) == (0, "", len(lines)), err
    assert not (root / "planner.sock").exists()


def without_python(native: Path, dest: Path) -> Path:
    """A copy of the native front end whose Python is missing: what it hands over fails, and says so."""
    data = bytearray(native.read_bytes())
    at = data.index(b"SUPERVISOR-OCI-PYTHON:") + len(b"SUPERVISOR-OCI-PYTHON:")
    data[at:at + 20] = b"/nonexistent/python\0"
    dest.write_bytes(bytes(data))
    dest.chmod(0o755)
    return dest


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This process is a child subreaper for the test, as containerd's shim is: a container's init
    passes to it when ``create`` exits, and the test reaps it."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture(params=["direct", "planner"])
def cli_via(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ``supervisor`` command as it is, and with a planner (``supervisor-oci planner``) that it
    offers ``run --bundle`` to (``$SUPERVISOR_PLANNER``, inherited by the commands a test starts),
    which must then have served the test's runs (but those of a test marked ``not_served``, whose runs
    the front end keeps or whose worker ends without a word): a module that uses it runs every test
    both ways."""
    if request.param == "direct":
        monkeypatch.setenv("SUPERVISOR_PLANNER", "")
        yield "direct"
        return
    root = tmp_path / "planner-root"
    monkeypatch.setenv("SUPERVISOR_PLANNER", str(root / "planner.sock"))
    from .test_oci_containerd import supervisor_oci

    with planner(supervisor_oci(), root) as served:
        yield "planner"
    if "bundle" in request.fixturenames and not request.node.get_closest_marker("not_served"):
        assert served and all(" supervisor run --bundle " in line for line in served), served
