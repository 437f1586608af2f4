"""``supervisor-oci planner``: its protocol's messages (golden bytes, the native front end's C parser
on them through cffi, its strictness, a fuzz whose inputs end at a guard page), and the service with
real containers: what a create through it does, and what it declines.

A front end whose Python is missing (``without_python``) proves a call went through the planner:
it has no other way to plan.
"""

import os
import random
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from supervisor._wire import PlanAttr, PlanMsg, ffi, lib
from supervisor._planner_call import ProtocolError, decode, encode

from .conftest import Bundle, needs_root, planner, without_python
from .fuzz import netlink_inputs
from .test_oci_cli import Oci, reap
from .test_oci_containerd import supervisor_oci
from .test_oci_record import _guarded
from .test_wire import nla, string, u32

MAX_ARGS: int = lib.SV_PLAN_MAX_ARGS


def message(kind: int, *attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


SPAWN = message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x/_bootstrap"), string(PlanAttr.ENV, "_LIBCONTAINER_INITPIPE=3"),
                u32(PlanAttr.FD, 1), u32(PlanAttr.FD, 3))


class Spawn:
    """The C parser's reading of a SPAWN (from guarded memory)."""

    def __init__(self, data: bytes) -> None:
        self.out = ffi.new("struct sv_plan_spawn *")
        self.err = ffi.new("char[256]")
        self.rc = lib.sv_plan_parse_spawn(_guarded(data), len(data), self.out, self.err, 256)

    @property
    def error(self) -> str:
        return ffi.string(self.err).decode()

    def strings(self, field: str) -> list[str]:
        array = getattr(self.out, field)
        out = []
        while array[len(out)] != ffi.NULL:
            out.append(ffi.string(array[len(out)]).decode(errors="replace"))
        return out


def one_u32(data: bytes, kind: int = PlanMsg.DONE, attr: int = PlanAttr.EXIT, limit: int = 255
            ) -> tuple[int, int, str]:
    """The C parser's reading of a message with one u32 attribute (DONE, ACCEPT, WAIT)."""
    value = ffi.new("uint32_t *")
    err = ffi.new("char[256]")
    rc = lib.sv_plan_parse_u32(_guarded(data), len(data), kind, attr, limit, value, err, 256)
    return rc, value[0], ffi.string(err).decode()


def done(data: bytes) -> tuple[int, int, str]:
    return one_u32(data)


def test_golden_messages() -> None:
    assert encode(PlanMsg.SPAWN, [(PlanAttr.ARG, "/x/_bootstrap"), (PlanAttr.ENV, "_LIBCONTAINER_INITPIPE=3"),
                                  (PlanAttr.FD, 1), (PlanAttr.FD, 3)]) == SPAWN
    assert encode(PlanMsg.DONE, [(PlanAttr.EXIT, 7)]) == message(PlanMsg.DONE, u32(PlanAttr.EXIT, 7))
    assert encode(PlanMsg.DECLINE, []) == message(PlanMsg.DECLINE)
    call = message(PlanMsg.CALL, string(PlanAttr.PROGRAM, "supervisor"), string(PlanAttr.ARG, "run"),
                   u32(PlanAttr.UMASK, 0o22))
    assert encode(PlanMsg.CALL, [(PlanAttr.PROGRAM, "supervisor"), (PlanAttr.ARG, "run"),
                                 (PlanAttr.UMASK, 0o22)]) == call
    assert decode(call) == (PlanMsg.CALL, [(PlanAttr.PROGRAM, "supervisor"), (PlanAttr.ARG, "run"),
                                           (PlanAttr.UMASK, 0o22)])


@pytest.mark.parametrize("data, error", [
    (b"", "whose header disagrees"),
    (SPAWN[:-1], "whose header disagrees"),
    (message(PlanMsg.SPAWN, b"\x08\0"), "trailing bytes"),
    (message(PlanMsg.SPAWN, struct.pack("=HH", 200, PlanAttr.ARG) + b"/a\0\0"), "out of bounds"),
    (message(PlanMsg.SPAWN, nla(PlanAttr.ARG, b"/x")), "not its type"),
    (message(PlanMsg.SPAWN, nla(PlanAttr.FD, b"\0\0")), "not its type"),
    (message(PlanMsg.SPAWN, u32(PlanAttr.STATUS + 1, 0)), "not its type"),
])
def test_python_decoder_is_strict(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(data)


def test_c_parser_reads_accept_and_wait() -> None:
    assert one_u32(message(PlanMsg.ACCEPT, u32(PlanAttr.PID, 4242)), PlanMsg.ACCEPT, PlanAttr.PID,
                   1 << 31) == (0, 4242, "")
    rc, _, err = one_u32(message(PlanMsg.WAIT, u32(PlanAttr.PID, 1)), PlanMsg.ACCEPT, PlanAttr.PID, 1 << 31)
    assert rc == -1 and "message type 62016" in err


def test_c_parser_reads_the_golden_vectors() -> None:
    p = Spawn(SPAWN)
    assert p.rc == 0, p.error
    assert (p.strings("argv"), p.strings("envp")) == (["/x/_bootstrap"], ["_LIBCONTAINER_INITPIPE=3"])
    assert list(p.out.fds[0:p.out.n_fds]) == [1, 3]
    assert done(message(PlanMsg.DONE, u32(PlanAttr.EXIT, 255))) == (0, 255, "")


@pytest.mark.parametrize("data, error", [
    (b"", "shorter than its header"),
    (SPAWN[:-2], "header says"),
    (message(PlanMsg.DONE, string(PlanAttr.ARG, "/x")), "message type 62014"),
    (message(PlanMsg.SPAWN), "a spawn without arguments"),
    (message(PlanMsg.SPAWN, u32(PlanAttr.FD, 0)), "a spawn without arguments"),
    (message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x"), u32(PlanAttr.FD, 1024)), "descriptor number 1024"),
    (message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x"), u32(PlanAttr.UMASK, 0)), "attribute 3 in a spawn"),
    (message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x"), u32(PlanAttr.EXIT, 0)), "attribute 7 in a spawn"),
    (message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x"), u32(PlanAttr.STATUS + 1, 0)), "unknown attribute 10"),
    (message(PlanMsg.SPAWN, nla(PlanAttr.ARG, b"/x")), "not one NUL-terminated string"),
    (message(PlanMsg.SPAWN, *(string(PlanAttr.ARG, "a") for _ in range(MAX_ARGS + 1))), "more than 256 arguments"),
    (message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x"), *(string(PlanAttr.ENV, "A=1") for _ in range(MAX_ARGS + 1))),
     "more than 256 environment"),
    (message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x"), *(u32(PlanAttr.FD, 3) for _ in range(MAX_ARGS + 1))),
     "more than 256 descriptors"),
    (SPAWN + b"\x08\0", "header says"),
    (message(PlanMsg.SPAWN, string(PlanAttr.ARG, "/x"), b"\x08\0"), "trailing bytes"),
])
def test_c_parser_of_spawn_is_strict(data: bytes, error: str) -> None:
    p = Spawn(data)
    assert p.rc == -1 and error in p.error, p.error
    assert p.out.argv[0] == ffi.NULL and p.out.n_fds == 0  # nothing half-read is left for the caller


@pytest.mark.parametrize("data, error", [
    (message(PlanMsg.DONE), "no attribute 7 in a message of type 62014"),
    (message(PlanMsg.DONE, u32(PlanAttr.EXIT, 256)), "attribute 7: 256 out of range"),
    (message(PlanMsg.DONE, u32(PlanAttr.EXIT, 1), u32(PlanAttr.EXIT, 1)), "attribute 7 in a message of type"),
    (message(PlanMsg.DONE, u32(PlanAttr.PID, 1)), "attribute 5 in a message of type 62014"),
    (message(PlanMsg.SPAWN, u32(PlanAttr.EXIT, 1)), "message type 62012"),
])
def test_c_parser_of_done_is_strict(data: bytes, error: str) -> None:
    rc, _, err = done(data)
    assert rc == -1 and error in err, err


def test_fuzz_random_and_mutated_messages() -> None:
    rng = random.Random(2468)
    seeds = [SPAWN, message(PlanMsg.SPAWN, *(string(PlanAttr.ARG, f"a{i}") for i in range(5)), u32(PlanAttr.FD, 9))]
    parsed = 0
    for data in netlink_inputs(rng, seeds, PlanMsg.SPAWN, 0, 20000, random_body=200, max_edits=6):
        p = Spawn(data)
        assert p.rc in (0, -1)
        if p.rc == 0:
            parsed += 1
            assert 1 <= len(p.strings("argv")) <= MAX_ARGS and p.out.n_fds <= MAX_ARGS
            assert all(fd < 1024 for fd in p.out.fds[0:p.out.n_fds])
    assert parsed > 100  # the mutations reach past the first checks
    dones = [message(PlanMsg.DONE, u32(PlanAttr.EXIT, 3))]
    for data in netlink_inputs(rng, dones, PlanMsg.DONE, 0, 5000, random_body=40, max_edits=4):
        rc, code, _ = done(data)
        assert rc in (0, -1) and (rc == -1 or code <= 255)


# -- the service -------------------------------------------------------------------------------------


@pytest.fixture
def no_python(tmp_path: Path) -> Oci:
    """The native front end with no Python to hand calls to, on ``tmp_path/state``."""
    native = tmp_path / "native"
    subprocess.run([supervisor_oci(), "install-fast", str(native)], check=True)
    return Oci(tmp_path / "state", tmp_path / "log.json", str(without_python(native, tmp_path / "no-python")))


@needs_root
def test_a_create_through_the_planner_is_the_callers(no_python: Oci, bundle: Bundle, subreaper: None,
                                                     tmp_path: Path) -> None:
    """No Python started for any of containerd's five calls. The create took the caller's place:
    its working directory (relative --bundle and --pid-file), its umask (the pid file's mode), its
    stdio (the workload's output), and the init is the caller's child, hence its subreaper's."""
    b = bundle("/bin/sh", "-c", "echo out; echo err >&2; exec sleep 100")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(b, work / "the-bundle")
    out = tmp_path / "out"
    with planner(supervisor_oci(), no_python.root) as served, open(out, "w") as f:
        no_python("create", "--bundle", "the-bundle", "--pid-file", "init.pid", "p1", cwd=work,
                  stdin=subprocess.DEVNULL, stdout=f, stderr=f, capture_output=False,
                  preexec_fn=lambda: os.umask(0o077))
        pid = int((work / "init.pid").read_text())
        assert (work / "init.pid").stat().st_mode & 0o777 == 0o600
        assert no_python.state("p1")["bundle"] == str(work / "the-bundle")
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid == os.getpid(), "the init is not the caller's"
        no_python("start", "p1")
        deadline = time.monotonic() + 5
        while out.read_text() != "out\nerr\n":
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.01)
        no_python("kill", "p1", "9")
        assert reap(pid) == 128 + signal.SIGKILL
        no_python("delete", "--force", "p1")
    assert len(served) == 1 and served[0].endswith("create --bundle the-bundle --pid-file init.pid p1: exit 0")
    assert not (no_python.root / "p1").exists()


@needs_root
def test_a_failed_create_through_the_planner(no_python: Oci, bundle: Bundle, subreaper: None) -> None:
    with planner(supervisor_oci(), no_python.root) as served:
        result = no_python("create", "--bundle", str(bundle("/bin/nope")), "p2", check=False)
    assert result.returncode == 1
    assert 'exec "/bin/nope": No such file or directory' in result.stderr
    assert no_python.errors()[-1] == result.stderr.strip()
    assert len(served) == 1 and served[0].endswith("p2: exit 1")
    assert not (no_python.root / "p2").exists()


@needs_root
def test_what_is_not_a_create_is_the_python_commands(no_python: Oci, bundle: Bundle) -> None:
    """``run``, and a create with descriptors to pass on, are declined (the front end then execs
    Python, which this one cannot)."""
    b = bundle("/bin/true")
    with planner(supervisor_oci(), no_python.root):
        for args in (("run", "--bundle", str(b), "p3"), ("create", "--preserve-fds", "1", "--bundle", str(b), "p3")):
            result = no_python(*args, check=False)
            assert result.returncode == 1 and "exec /nonexistent/python" in result.stderr, result.stderr
    assert not (no_python.root / "p3").exists()


@needs_root
def test_a_caller_in_another_mount_namespace_is_declined(no_python: Oci, bundle: Bundle) -> None:
    """Paths would not mean the same to the planner: the call is the Python command's."""
    with planner(supervisor_oci(), no_python.root):
        result = subprocess.run(["unshare", "-m", "--propagation", "private", no_python.binary, "--root",
                                 str(no_python.root), "create", "--bundle", str(bundle("/bin/true")), "p4"],
                                capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "exec /nonexistent/python" in result.stderr, result.stderr


@needs_root
def test_one_planner_per_root(tmp_path: Path) -> None:
    """A second planner on a root that one serves is refused; the socket a killed one left is
    replaced."""
    root = tmp_path / "state"
    with planner(supervisor_oci(), root):
        second = subprocess.run([supervisor_oci(), "--root", str(root), "planner"], capture_output=True,
                                text=True, check=False, timeout=30)
        assert second.returncode == 1 and f"a planner already serves {root}" in second.stderr
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as stale:
        stale.bind(str(root / "planner.sock"))  # bound, never listening: what a SIGKILL leaves
    with planner(supervisor_oci(), root):
        assert (root / "planner.sock").stat().st_mode & 0o777 == 0o600
