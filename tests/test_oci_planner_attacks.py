"""The planner service (``supervisor-oci planner``) and the native front end, attacked.

The planner is a root process that runs ``create`` for whoever it accepts on ``ROOT/planner.sock``.
These tests play the callers it must refuse (another user, a process of a container, a connection
whose process is gone and whose pid now names a host process, a root process without root's
capabilities), hostile messages it must survive, and hostile planners the front end must not
obey. Each attack is a real process against a real planner; what a planner accepted shows as a
SPAWN sent to the attacker, as a line in its log, or as a container.
"""

import contextlib
import ctypes
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor._planner_call import decode as decode_ids
from supervisor._planner_call import encode as encode_ids
from supervisor._wire import PlanAttr, PlanMsg

from .conftest import Bundle, needs_root, without_python
from .test_oci_cli import Oci, reap
from .test_oci_containerd import supervisor_oci

pytestmark = needs_root

CLONE_NEWNS = 0x00020000
NOBODY = 65534
SO_PEERPIDFD = 77

libc = ctypes.CDLL(None, use_errno=True)


def encode(kind: int, pairs: list[tuple[str, Any]]) -> bytes:
    """A message of the planner protocol, its attributes named."""
    return encode_ids(kind, [(PlanAttr[name], value) for name, value in pairs])


def decode(data: bytes) -> tuple[int, list[tuple[str, Any]]]:
    kind, pairs = decode_ids(data)
    return kind, [(PlanAttr(attr).name, value) for attr, value in pairs]


# -- helpers -------------------------------------------------------------------------------------


class Planner:
    """A running ``supervisor-oci --debug planner`` and, once stopped, the lines it wrote."""

    def __init__(self, proc: "subprocess.Popen[str]", root: Path) -> None:
        self.proc = proc
        self.root = root
        self.lines: list[str] = []

    @property
    def socket(self) -> str:
        return str(self.root / "planner.sock")

    def fds(self) -> list[str]:
        return sorted(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def workers(self) -> list[int]:
        """The planner's children: its workers, one per call under way, and the spare that waits
        for the next call."""
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [int(pid) for pid in f.read().split()]

    def idle(self) -> None:
        """Wait until no worker but the spare is left (each exits at the end of its call)."""
        deadline = time.monotonic() + 10
        while len(self.workers()) > 1:
            assert time.monotonic() < deadline, f"workers left: {self.workers()}"
            time.sleep(0.01)


@contextlib.contextmanager
def running_planner(root: Path) -> Iterator[Planner]:
    proc = subprocess.Popen([supervisor_oci(), "--root", str(root), "--debug", "planner"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    planner = Planner(proc, root)
    try:
        deadline = time.monotonic() + 10
        while not (root / "planner.sock").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the planner did not start"
            time.sleep(0.02)
        yield planner
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        planner.lines = err.splitlines()


def no_python_front_end(tmp_path: Path) -> Path:
    """The native front end, unable to run Python: a create it completes went through the planner."""
    native = tmp_path / "native"
    subprocess.run([supervisor_oci(), "install-fast", str(native)], check=True)
    return without_python(native, tmp_path / "no-python")


def a_good_call_works(front_end: Path, root: Path, bundle: Bundle, tmp_path: Path, name: str = "good") -> None:
    """The planner still serves: a create through a front end that cannot run Python succeeds."""
    oci = Oci(root, tmp_path / "log.json", str(front_end))
    pid = oci.create(bundle("/bin/sleep", "100"), name, tmp_path / f"{name}.out")
    oci("delete", "--force", name)
    assert reap(pid) == 128 + signal.SIGKILL


def call_message(args: list[str], env: list[str] | None = None) -> bytes:
    pairs: list[tuple[str, Any]] = [("ARG", a) for a in args]
    pairs += [("ENV", e) for e in env or ["PATH=/usr/bin:/bin"]]
    pairs.append(("UMASK", 0o022))
    return encode(PlanMsg.CALL, pairs)


def send(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    sock.sendmsg([data], ancillary)


def answer(sock: socket.socket, timeout: float = 20) -> tuple[int | None, list[tuple[str, Any]], list[int]]:
    """The planner's answer: (message type, attributes, descriptors); type None when it closed."""
    sock.settimeout(timeout)
    data, ancillary, _, _ = sock.recvmsg(1 << 18, socket.CMSG_SPACE(64 * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            fds += struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4])
    if not data:
        return None, [], fds
    kind, attrs = decode(data)
    return kind, attrs, fds


def caller_fds() -> list[int]:
    """What a front end sends with a CALL: its working directory (O_PATH), then its 0, 1 and 2."""
    return [os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), 0, 1, 2]


def create_args(root: Path, bundle_dir: Path, name: str) -> list[str]:
    return ["--root", str(root), "create", "--bundle", str(bundle_dir), name]


def in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child (which exits with what it returns); its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = body()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def offer(path: str, data: bytes, fds_of: Callable[[], list[int]] = caller_fds) -> int:
    """A caller's whole try, from a child process: connect, send, read the answer. Exit code 0:
    DECLINE; 1: the planner acted (SPAWN or DONE); 2: it closed without an answer; 3: connect failed."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
    except OSError:
        return 3
    fds = fds_of()
    send(sock, data, fds)
    kind, _, received = answer(sock)
    for fd in received:
        os.close(fd)
    return {PlanMsg.DECLINE: 0, None: 2}.get(kind, 1)  # type: ignore[call-overload]


def declines(planner: Planner) -> list[str]:
    return [re.sub(r"^supervisor-oci planner: pid \d+: declined: ", "", line) for line in planner.lines
            if "declined" in line]


# -- 1. another user -----------------------------------------------------------------------------


def test_another_user_cannot_connect_and_is_declined_when_it_can(tmp_path: Path, bundle: Bundle,
                                                                  subreaper: None) -> None:
    """The socket is 0600: uid 65534 cannot connect. Made 0666, it connects and sends a well-formed
    create with real descriptors: the planner declines it, having made no state, and goes on."""
    root = tmp_path / "state"
    b = bundle("/bin/sleep", "100")
    front_end = no_python_front_end(tmp_path)
    with running_planner(root) as planner:
        assert os.stat(planner.socket).st_mode & 0o777 == 0o600
        data = call_message(create_args(root, b, "intruder"))

        def as_nobody() -> int:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.chdir("/")
            return offer(planner.socket, data)

        assert in_child(as_nobody) == 3  # EACCES
        os.chmod(planner.socket, 0o666)
        for parent in [root, *root.parents]:  # the path to it, too
            if parent == Path("/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
        assert in_child(as_nobody) == 0  # DECLINE
        assert not (root / "intruder").exists()
        planner.idle()
        a_good_call_works(front_end, root, bundle, tmp_path)
    assert declines(planner) == [f"uid {NOBODY}"]


# -- 2. a process of a container, or a connection whose process is gone ----------------------------


def _setns(pid: int, *names: str) -> None:
    """Join namespaces of a process (opened first: once in its mount namespace, /proc is its)."""
    fds = [os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in names]
    for name, fd in zip(names, fds, strict=True):
        if libc.setns(fd, 0) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        os.close(fd)


def test_a_process_of_a_container_that_holds_the_socket_is_declined(tmp_path: Path, bundle: Bundle,
                                                                     subreaper: None) -> None:
    """A container into which ROOT is bound (by mistake, say): a process in its mount and pid
    namespaces connects as root and sends a create; the planner declines it and makes nothing."""
    root = tmp_path / "state"
    front_end = no_python_front_end(tmp_path)
    with running_planner(root) as planner:
        b = bundle("/bin/sleep", "100", edit=lambda config: config["mounts"].append(
            {"destination": "/planner", "type": "bind", "source": str(root), "options": ["rbind"]}))
        other = Oci(tmp_path / "other", tmp_path / "other.json", supervisor_oci())
        init = other.create(b, "victim", tmp_path / "victim.out")
        data = call_message(create_args(root, b, "intruder"))
        try:
            def inside() -> int:
                _setns(init, "mnt", "pid")
                return in_child(lambda: offer("/planner/planner.sock", data))  # a pid of the container's

            assert in_child(inside) == 0
        finally:
            other("delete", "--force", "victim")
            reap(init)
        assert not (root / "intruder").exists()
        planner.idle()
        a_good_call_works(front_end, root, bundle, tmp_path)
    assert declines(planner) == ["another mnt namespace"]


def _pass_fd(channel: socket.socket, fd: int) -> None:
    send(channel, b"x", [fd])


def _take_fd(channel: socket.socket) -> int:
    _, ancillary, _, _ = channel.recvmsg(1, socket.CMSG_SPACE(4))
    return int(struct.unpack("i", ancillary[0][2][:4])[0])


def test_a_connection_whose_process_is_gone_is_not_judged_by_the_pid_s_next_owner(
        tmp_path: Path, bundle: Bundle, subreaper: None) -> None:
    """SO_PEERCRED keeps the pid the connecting process had. A process of another mount namespace
    connects, hands the connection on and exits; its pid goes to a host process (here forced
    through ns_last_pid; an attacker waits for it). The call sent then must be judged by the
    process that connected, not by the host process that has its pid now: declined."""
    root = tmp_path / "state"
    b = bundle("/bin/sleep", "100")
    with running_planner(root) as planner:
        keep, give = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

        def connect_from_elsewhere() -> int:
            if libc.unshare(CLONE_NEWNS) != 0:
                return 4
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.connect(planner.socket)
            _pass_fd(give, sock.fileno())
            return 0

        sleeper: subprocess.Popen[bytes] | None = None
        sock: socket.socket | None = None
        try:
            for _ in range(50):
                child = os.fork()
                if child == 0:
                    os._exit(connect_from_elsewhere())
                fd = _take_fd(keep)
                assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
                with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                    f.write(str(child - 1))
                sleeper = subprocess.Popen(["sleep", "100"])
                if sleeper.pid == child:
                    sock = socket.socket(fileno=fd)
                    break
                os.close(fd)  # another process took the pid first: again
                sleeper.kill()
                sleeper.wait()
                sleeper = None
            assert sock is not None and sleeper is not None, "the pid was never reused"
            fds = caller_fds()
            send(sock, call_message(create_args(root, b, "intruder")), fds)
            os.close(fds[0])
            kind, _, received = answer(sock)
            for fd in received:
                os.close(fd)
            assert kind == PlanMsg.DECLINE, f"the planner acted: message type {kind}"
        finally:
            if sock is not None:
                sock.close()
            if sleeper is not None:
                sleeper.kill()
                sleeper.wait()
            keep.close()
            give.close()
        planner.idle()
        assert not (root / "intruder").exists()
    assert len(declines(planner)) == 1


# -- 1b. root, without root's capabilities -----------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def test_root_without_capabilities_is_declined(tmp_path: Path, bundle: Bundle, subreaper: None) -> None:
    """A process of uid 0 that dropped every capability (a confined service, say) would fail to
    create a container itself; the planner, with all of root's, must not do it for it."""
    root = tmp_path / "state"
    b = bundle("/bin/sleep", "100")
    with running_planner(root) as planner:
        data = call_message(create_args(root, b, "intruder"))

        def without_capabilities() -> int:
            header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
            none = (_CapData * 2)()
            if libc.capset(ctypes.byref(header), none) != 0:
                return 5
            return offer(planner.socket, data)

        assert in_child(without_capabilities) == 0
        planner.idle()
        assert not (root / "intruder").exists()
    assert len(declines(planner)) == 1, planner.lines


# -- 3. hostile messages to the planner --------------------------------------------------------------


def test_hostile_calls_leave_the_planner_serving_with_nothing_done(tmp_path: Path, bundle: Bundle,
                                                                   subreaper: None) -> None:
    """Garbage, a truncated call, calls with no, too few or too many descriptors, an oversized one,
    another message type, a socket as the working directory, a call that is not a create: each is
    declined or dropped; no worker stays, the planner holds no descriptor more, makes no state,
    and serves the next good call."""
    root = tmp_path / "state"
    b = bundle("/bin/sleep", "100")
    front_end = no_python_front_end(tmp_path)
    good = call_message(create_args(root, b, "intruder"))
    with running_planner(root) as planner:
        a_good_call_works(front_end, root, bundle, tmp_path, "before")
        planner.idle()
        fds_before = planner.fds()
        a, c = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        body = good[16:] + struct.pack("=HH", 4008, PlanAttr.ENV) + b"X=" + b"x" * 4001 + b"\0" + b"\0" * 0
        body += (struct.pack("=HH", 4008, PlanAttr.ENV) + b"X=" + b"x" * 4001 + b"\0") * 80
        huge = struct.pack("=IHHII", 16 + len(body), PlanMsg.CALL, 0, 0, 0) + body  # our encoder refuses it
        assert len(huge) > 1 << 18
        attacks: list[tuple[str, bytes, Callable[[], list[int]]]] = [
            ("garbage", b"garbage" * 10, list),
            ("header only", good[:16], caller_fds),
            ("truncated", good[:len(good) // 2], caller_fds),
            ("lying length", struct.pack("=I", 1 << 20) + good[4:], caller_fds),
            ("no descriptors", good, list),
            ("three descriptors", good, lambda: caller_fds()[:3]),
            ("five descriptors", good, lambda: [*caller_fds(), 0]),
            ("seventeen descriptors", good, lambda: [*caller_fds(), *[0] * 13]),
            ("oversized", huge, caller_fds),
            ("another type", encode(PlanMsg.DONE, [("EXIT", 0)]), caller_fds),
            ("not a create", call_message(["--root", str(root), "list"]), caller_fds),
            ("a socket as cwd", good, lambda: [os.dup(a.fileno()), 0, 1, 2]),
            ("a file as cwd", good, lambda: [os.open("/etc/hostname", os.O_RDONLY), 0, 1, 2]),
        ]
        outcomes = {}
        try:
            for name, data, fds_of in attacks:
                def attack(data: bytes = data, fds_of: Callable[[], list[int]] = fds_of) -> int:
                    try:
                        return offer(planner.socket, data, fds_of)
                    except OSError:  # the planner may refuse what the kernel would not send
                        return 4
                outcomes[name] = in_child(attack)
        finally:
            a.close()
            c.close()
        assert all(code in (0, 2, 4) for code in outcomes.values()), outcomes  # never acted
        planner.idle()
        assert len(planner.fds()) == len(fds_before)  # the spare's pidfd is a new one, the count the same
        assert sorted(p.name for p in root.iterdir()) == ["planner.sock"]
        a_good_call_works(front_end, root, bundle, tmp_path, "after")
    # each declined (the caller may then run Python) or dropped with a worker's error in the log
    assert len(declines(planner)) >= 4, planner.lines
    assert not [line for line in planner.lines if "intruder" in line and ": exit " in line], planner.lines


def test_arguments_that_are_not_utf8_reach_the_call_as_they_are(tmp_path: Path, bundle: Bundle,
                                                                subreaper: None) -> None:
    """Arguments are bytes: a bundle whose path is not UTF-8 is created through the planner as
    through Python (which decodes them with surrogateescape), not under another name."""
    root = tmp_path / "state"
    front_end = no_python_front_end(tmp_path)
    b = bundle("/bin/sleep", "100")
    odd = tmp_path / os.fsdecode(b"bundle-\xff")
    odd.symlink_to(b)
    with running_planner(root) as planner:
        oci = Oci(root, tmp_path / "log.json", str(front_end))
        with open(tmp_path / "out", "w") as f:
            result = oci("create", "--bundle", str(odd), "--pid-file", str(tmp_path / "init.pid"), "u1",
                         stdin=subprocess.DEVNULL, stdout=f, stderr=f, capture_output=False, check=False)
        assert result.returncode == 0, (tmp_path / "out").read_text()
        pid = int((tmp_path / "init.pid").read_text())
        oci("delete", "--force", "u1")
        assert reap(pid) == 128 + signal.SIGKILL
    assert [line for line in planner.lines if " create " in line], planner.lines


# -- 4. a hostile planner, against the front end --------------------------------------------------------


def spawn_message(argv: list[str], targets: list[int], env: list[str] | None = None) -> bytes:
    pairs: list[tuple[str, Any]] = [("ARG", a) for a in argv]
    pairs += [("ENV", e) for e in env or []]
    pairs += [("FD", t) for t in targets]
    return encode(PlanMsg.SPAWN, pairs)


def gone(pid: int) -> bool:
    """Whether a process is gone and reaped (no zombie left)."""
    return not os.path.exists(f"/proc/{pid}")


def play_planner(path: Path, argv: list[str], script: Callable[[socket.socket], None], listen_as: int | None = None,
                 **popen: Any) -> subprocess.CompletedProcess[str]:
    """Listen on ``path`` (as ``listen_as``, a uid, when given), run ``argv`` (a front end offering it
    a call), and answer the call with ``script``; the front end's exit."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    if listen_as is not None:  # the kernel gives the listener's credentials, as of listen(), to who connects
        pid = os.fork()
        if pid == 0:
            os.setgid(listen_as)
            os.setuid(listen_as)
            listener.listen(1)
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    else:
        listener.listen(1)
    try:
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, **popen) as proc:
            try:
                listener.settimeout(20)
                conn, _ = listener.accept()
                with conn:
                    script(conn)
                out, err = proc.communicate(timeout=20)
            finally:
                proc.kill()
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        listener.close()
        path.unlink()


def fake_planner(root: Path, front_end: Path, script: Callable[[socket.socket], None],
                 listen_as: int | None = None) -> subprocess.CompletedProcess[str]:
    """A hostile planner on ROOT/planner.sock, against a create through the native front end."""
    root.mkdir(mode=0o777, exist_ok=True)
    os.chmod(root, 0o777)
    return play_planner(root / "planner.sock", [str(front_end), "--root", str(root), "create", "--bundle",
                                                "/nonexistent", "x"], script, listen_as)


def the_call(conn: socket.socket) -> list[str]:
    """The CALL a front end sends, accepted: its arguments (its descriptors are checked and closed)."""
    kind, attrs, fds = answer(conn)
    assert kind == PlanMsg.CALL and len(fds) == 4, (kind, fds)
    for fd in fds:
        os.close(fd)
    send(conn, encode(PlanMsg.ACCEPT, [("PID", os.getpid())]), [])
    return [v for k, v in attrs if k == "ARG"]


def spawned(conn: socket.socket) -> int:
    """The SPAWNED answer: the pid (its pidfd closed)."""
    kind, attrs, fds = answer(conn)
    assert kind == PlanMsg.SPAWNED and len(fds) == 1, (kind, attrs)
    os.close(fds[0])
    return int(dict(attrs)["PID"])


def test_a_planner_that_goes_away_before_it_takes_the_call(tmp_path: Path) -> None:
    """Nothing was done (a planner stopping, its spare killed in accept, say): the call is Python's."""
    front_end = no_python_front_end(tmp_path)

    def script(conn: socket.socket) -> None:
        kind, _, fds = answer(conn)
        for fd in fds:
            os.close(fd)
        assert kind == PlanMsg.CALL

    result = fake_planner(tmp_path / "root", front_end, script)
    assert result.returncode == 1 and "exec /nonexistent/python" in result.stderr, result


def spawn_sleep(conn: socket.socket) -> int:
    """Take the call and have the front end spawn a ``sleep 100``: its pid."""
    the_call(conn)
    with open("/bin/sleep", "rb") as program:
        send(conn, spawn_message(["sleep", "100"], []), [program.fileno()])
    return spawned(conn)


def test_a_planner_that_goes_away_after_a_spawn(tmp_path: Path) -> None:
    """The front end kills and reaps what it spawned, and fails with a message."""
    front_end = no_python_front_end(tmp_path)
    pids = []

    def script(conn: socket.socket) -> None:
        pids.append(spawn_sleep(conn))

    result = fake_planner(tmp_path / "root", front_end, script)
    assert (result.returncode, result.stderr.strip()) == (1, "the planner ended the call without an answer")
    assert gone(pids[0])


@pytest.mark.parametrize("message, expected", [
    (encode(PlanMsg.DONE, [("EXIT", 300)]), "the planner's answer: attribute 7: 300 out of range"),
    (encode(PlanMsg.DONE, []), "the planner's answer: no attribute 7 in a message of type 62014"),
    (spawn_message([], []), "the planner's spawn: a spawn without arguments"),
    (encode(PlanMsg.DECLINE, []), "the planner's answer: message type 62011"),
])
def test_malformed_answers_after_a_spawn(tmp_path: Path, message: bytes, expected: str) -> None:
    """Each ends the call with a message that says what was wrong, once what was spawned is gone."""
    front_end = no_python_front_end(tmp_path)
    pids = []

    def script(conn: socket.socket) -> None:
        pids.append(spawn_sleep(conn))
        with open("/bin/sleep", "rb") as program:
            send(conn, message, [program.fileno()] if b"sleep" not in message else [])

    result = fake_planner(tmp_path / "root", front_end, script)
    assert (result.returncode, result.stderr.strip()) == (1, expected)
    assert gone(pids[0])


def test_a_spawn_gets_exactly_the_descriptors_it_names(tmp_path: Path) -> None:
    """Targets that sit on the front end's own descriptors (its socket is 3) get what the planner
    sent, and nothing else of the front end's reaches the program; DONE's code is the exit code."""
    front_end = no_python_front_end(tmp_path)
    report = tmp_path / "fds"

    def script(conn: socket.socket) -> None:
        the_call(conn)
        with open("/bin/ls", "rb") as program, open(tmp_path / "three", "w") as three, \
                open(tmp_path / "five", "w") as five, open(report, "w") as out:
            send(conn, spawn_message(["ls", "-l", "/proc/self/fd"], [3, 5, 4, 1], ["A=1"]),
                 [program.fileno(), three.fileno(), five.fileno(), five.fileno(), out.fileno()])
        pid = spawned(conn)
        deadline = time.monotonic() + 10
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        send(conn, encode(PlanMsg.DONE, [("EXIT", 7)]), [])

    result = fake_planner(tmp_path / "root", front_end, script)
    assert (result.returncode, result.stderr) == (7, "")
    links = [line.split()[-3:] for line in report.read_text().splitlines() if " -> " in line]
    fds = {int(fd): target for fd, _, target in links if not target.startswith("/proc/")}  # ls's own
    assert fds == {0: "/dev/null", 1: str(report), 2: fds[2], 3: str(tmp_path / "three"),
                   4: str(tmp_path / "five"), 5: str(tmp_path / "five")}, fds
    assert fds[2].startswith("pipe:")


def spawn_id_u(victim: Path, got: list[int | None]) -> Callable[[socket.socket], None]:
    """A hostile planner's script: accept the call, have the front end spawn ``id -u > victim`` and
    wait (a while) for it to run. ``got`` gets the type of what the front end sent first (None: it
    closed without a word)."""
    def script(conn: socket.socket) -> None:
        kind, _, fds = answer(conn)
        got.append(kind)
        for fd in fds:
            os.close(fd)
        if kind != PlanMsg.CALL:
            return
        send(conn, encode(PlanMsg.ACCEPT, [("PID", os.getpid())]), [])
        with open("/bin/sh", "rb") as program:
            send(conn, spawn_message(["sh", "-c", f"id -u > {victim}"], []), [program.fileno()])
        spawned(conn)
        deadline = time.monotonic() + 10
        while not victim.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        send(conn, encode(PlanMsg.DONE, [("EXIT", 0)]), [])

    return script


def test_a_planner_of_another_user_is_not_obeyed(tmp_path: Path) -> None:
    """ROOT is not always root's alone (a --root under /tmp, say): a planner another user listens
    with there must get nothing of root's front end (its working directory, its stdio) and no
    spawn run as root. The front end leaves the call to Python (which, here, cannot run)."""
    front_end = no_python_front_end(tmp_path)
    victim = tmp_path / "ran-as"
    got: list[int | None] = []
    result = fake_planner(tmp_path / "root", front_end, spawn_id_u(victim, got), listen_as=NOBODY)
    assert not victim.exists(), f"the spawn ran as uid {victim.read_text().strip()}"
    assert got == [None]
    assert result.returncode == 1 and "exec /nonexistent/python" in result.stderr, result


# -- 5. descriptors, 7. a planner that stops -------------------------------------------------------------


def test_a_container_made_through_the_planner_gets_only_its_stdio(tmp_path: Path, bundle: Bundle,
                                                                  subreaper: None) -> None:
    """Nothing of the planner's, of its workers' or of the front end's connection reaches the
    workload: it sees 0, 1 and 2 (and the directory ls reads)."""
    root = tmp_path / "state"
    front_end = no_python_front_end(tmp_path)
    with running_planner(root):
        oci = Oci(root, tmp_path / "log.json", str(front_end))
        pid = oci.create(bundle("/bin/ls", "/proc/self/fd"), "fds", tmp_path / "out")
        oci("start", "fds")
        assert reap(pid) == 0
        oci("delete", "fds")
    assert (tmp_path / "out").read_text().split() == ["0", "1", "2", "3"]


def test_a_call_queued_while_the_planner_stops_is_left_to_python(tmp_path: Path, bundle: Bundle) -> None:
    """A planner stopped (to be upgraded, say) while a create waits in its listen queue: that create
    has had nothing done, so it must go to Python, not fail. (Here Python cannot run: the front
    end must say it tried to run it.) The spare that would take it is held still meanwhile."""
    root = tmp_path / "state"
    front_end = no_python_front_end(tmp_path)
    with running_planner(root) as planner:
        [spare] = planner.workers()
        os.kill(spare, signal.SIGSTOP)
        try:
            with subprocess.Popen([str(front_end), "--root", str(root), "create", "--bundle", str(bundle()), "q"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) as proc:
                time.sleep(0.5)  # connected, its call sent, in the queue
                planner.proc.terminate()
                time.sleep(0.5)  # the planner declines what is queued while the spare is still
                os.kill(spare, signal.SIGCONT)
                _, err = proc.communicate(timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):  # it ended on the planner's SIGTERM
                os.kill(spare, signal.SIGCONT)
            # had the planner made it after all, nothing of it stays (delete is native)
            subprocess.run([str(front_end), "--root", str(root), "delete", "--force", "q"], capture_output=True)
    assert "exec /nonexistent/python" in err, (err, planner.lines)
    assert not (root / "q").exists()
