"""Rootless: the supervisor run by an ordinary user, created for the test. (The test process is root:
the user's side runs in a fork that dropped to that user, since root's Python is not theirs to run.)"""

import json
import os
import pwd
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio._backends._trio
import anyio._core._signals
import pytest

# Everything the user's side runs is imported now, as root: root's Python installation (under /root)
# is not readable by the user, so a lazy import there would fail.
import supervisor.cli
import supervisor.console
import supervisor.control_server
import supervisor.manifest
import supervisor.network
import supervisor.seccomp
import supervisor.supervise

from .conftest import needs_root

_PRELOADED = (anyio._backends._trio, anyio._core._signals,
              supervisor.cli, supervisor.console, supervisor.control_server, supervisor.manifest, supervisor.network,
              supervisor.supervise, supervisor.seccomp._libseccomp())

pytestmark = needs_root

SUBIDS = 300000


@pytest.fixture(scope="module")
def user() -> Iterator[pwd.struct_passwd]:
    name = f"svt{os.getpid()}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    saved = {f: Path(f).read_text() if Path(f).exists() else None for f in ("/etc/subuid", "/etc/subgid")}
    try:
        for f in saved:
            with open(f, "a") as out:
                out.write(f"{name}:{SUBIDS}:65536\n")
        yield pwd.getpwnam(name)
    finally:
        for f, text in saved.items():
            if text is None:
                os.unlink(f)
            else:
                Path(f).write_text(text)
        subprocess.run(["userdel", name], check=True)


def as_user(user: pwd.struct_passwd, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a fork that is ``user`` and nothing more; its JSON-able result comes back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ.pop("XDG_RUNTIME_DIR", None)
            os.write(w, json.dumps(fn()).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        result = json.loads(f.read() or "null")
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sv-rootless-"))
    os.chmod(d, 0o777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=True)


def run_manifest(workdir: Path, text: str) -> Callable[[], Any]:
    manifest = workdir / "manifest.toml"
    manifest.write_text(text)
    os.chmod(manifest, 0o644)

    def go() -> Any:
        import contextlib
        import io
        import sys

        from supervisor.cli import main

        out = os.open(workdir / "out", os.O_WRONLY | os.O_CREAT, 0o644)
        sys.stdout = open(out, "w", closefd=False)  # noqa: SIM115 - the CLI prints to sys.stdout's fd
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["run", "--state-dir", str(workdir / "state"), str(manifest)])
        sys.stdout.flush()
        return {"code": code, "stderr": err.getvalue()}

    return go


def test_run_as_an_ordinary_user(user: pwd.struct_passwd, workdir: Path) -> None:
    result = as_user(user, run_manifest(workdir, """
[containers.c]
args = ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map; hostname; grep -c . /proc/self/mountinfo; echo ok"]
hostname = "inside"
"""))
    out = (workdir / "out").read_text()
    assert result == {"code": 0, "stderr": "supervisor: c: exited with code 0\n"}, (result, out)
    lines = [line.removeprefix("c | ") for line in out.splitlines() if line.startswith("c | ")]
    assert lines[0] == "0"  # root inside ...
    assert lines[1].split() == ["0", str(user.pw_uid), "1"]  # ... is the user outside
    assert lines[2] == "inside" and lines[-1] == "ok"


def test_subordinate_ids_through_newuidmap(user: pwd.struct_passwd, workdir: Path) -> None:
    result = as_user(user, run_manifest(workdir, f"""
[containers.c]
args = ["/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; grep Uid /proc/self/status"]
uidMappings = [{{ containerID = 0, hostID = {user.pw_uid}, size = 1 }},
               {{ containerID = 1, hostID = {SUBIDS}, size = 65536 }}]
gidMappings = [{{ containerID = 0, hostID = {user.pw_gid}, size = 1 }},
               {{ containerID = 1, hostID = {SUBIDS}, size = 65536 }}]
namespaces = ["user", "pid", "mount", "ipc", "uts"]
"""))
    out = (workdir / "out").read_text()
    assert result == {"code": 0, "stderr": "supervisor: c: exited with code 0\n"}, (result, out)
    maps = [line.removeprefix("c | ").split() for line in out.splitlines() if line.startswith("c | ")]
    assert ["1", str(SUBIDS), "65536"] in maps and ["0", str(user.pw_uid), "1"] in maps


def test_what_rootless_cannot_have_is_a_clear_error(user: pwd.struct_passwd, workdir: Path) -> None:
    result = as_user(user, run_manifest(workdir, """
[containers.limited]
args = ["/bin/true"]
resources = { pids = { limit = 10 } }
"""))
    assert result["code"] == 2
    assert "line 4: containers.limited.resources: cgroup limits need root, or a cgroup delegated to you" in \
        result["stderr"]

    result = as_user(user, run_manifest(workdir, """
[containers.bridged]
args = ["/bin/true"]
network = { bridge = "svroot0", gateway = "10.213.7.1/24" }
"""))
    out = (workdir / "out").read_text()
    assert result["code"] == 1
    assert "a veth on a bridge needs root" in out + result["stderr"]
