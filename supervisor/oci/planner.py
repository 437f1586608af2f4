"""``supervisor-oci planner``: a service that keeps the planner imported, so that ``create`` costs
what planning costs and not what importing it costs.

Theory of operation. A ``create`` through a new Python process spends most of its time importing
(attrs, pyroute2, the planner: about 70 ms here, against runc's whole create of 18 ms). The planner
is a process that has imported all of it once; the native front end (``native/oci_call.c``) offers
it each ``create`` on ``ROOT/planner.sock`` (protocol: ``native/oci_planner.h``). Per call it forks
a worker, which:

- checks the caller: the same user as the planner, in the same namespaces and root directory (else
  it declines, having done nothing, and the front end runs the Python command itself);
- becomes the caller for the call's length: its cgroups, working directory, stdio, environment and
  umask, so that the call behaves as ``supervisor-oci create`` run by the caller would;
- runs ``main`` on the caller's arguments, with ``_launch.spawner`` set so that the bootstrap is
  spawned by the front end: the init is then the caller's child, hence its subreaper's, and
  inherits the caller's rlimits, signal state and credentials, exactly as without the planner;
- answers with the exit code, and exits.

Only ``create`` without ``--preserve-fds`` comes here (the descriptors to pass are the caller's);
everything else the worker declines. A worker reaps nothing of the caller's: what it must wait for
it waits for through pidfds (``_launch.reap``).

The planner runs the code it imported at its start: after an upgrade, restart it.
"""

import os
import signal
import socket
import struct
import sys
from typing import Any

from .._pyroute2 import nlmsg
from .._wire import PlanAttr, PlanMsg, lib, nla_map, plan_payload_type
from .log import CommandError

__all__ = ["serve"]

SOCKET_NAME: str = "planner.sock"
_MAX_MESSAGE: int = lib.SV_PLAN_MAX_MESSAGE
#: the namespaces a caller must share with the planner: a path, a pid, a cgroup mean the same here
_NAMESPACES = ("mnt", "pid", "net", "ipc", "uts", "user", "cgroup")

PlanMessage: type[nlmsg] = type("PlanMessage", (nlmsg,), {"nla_map": nla_map(PlanAttr, plan_payload_type)})


class Declined(Exception):
    """The call is not the planner's: nothing was done, and the front end runs it itself."""


def encode(kind: PlanMsg, pairs: list[tuple[str, Any]]) -> bytes:
    msg = PlanMessage()
    msg["header"]["type"] = kind
    msg["attrs"] = pairs
    msg.encode()
    return bytes(msg.data)


def decode(data: bytes) -> tuple[int, list[tuple[str, Any]]]:
    msg = PlanMessage(data)
    msg.decode()
    return msg["header"]["type"], list(msg["attrs"])


def _recv(conn: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    from .._launch import fds_of

    data, ancillary, flags, _ = conn.recvmsg(_MAX_MESSAGE + 1, socket.CMSG_SPACE(max_fds * 4),
                                             socket.MSG_CMSG_CLOEXEC)
    fds = fds_of(ancillary)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise CommandError("the front end's message was truncated")
    return data, fds


def _send(conn: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    conn.sendmsg([data], ancillary)


# -- the worker: one call ----------------------------------------------------------------------


class FrontEnd:
    """The caller's front end, as the worker's ``_launch.spawner``: it spawns what it is sent."""

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid

    def __call__(self, program: int, argv: list[str], env: dict[str, str],
                 fds: list[tuple[int, int]]) -> tuple[int, int, int]:
        pairs: list[tuple[str, Any]] = [("ARG", a) for a in argv]
        pairs += [("ENV", f"{k}={v}") for k, v in env.items()]
        pairs += [("FD", target) for _, target in fds]
        _send(self.conn, encode(PlanMsg.SPAWN, pairs), [program, *(fd for fd, _ in fds)])
        data, received = _recv(self.conn, 1)
        kind, attrs = decode(data)
        values = dict(attrs)
        if kind != PlanMsg.SPAWNED or ("PID" in values) != (len(received) == 1):
            for fd in received:
                os.close(fd)
            raise CommandError(f"the front end's answer to a spawn: message type {kind}")
        if "PID" not in values:
            errno_value = int(values.get("ERRNO", 0))
            raise OSError(errno_value, f"spawning the bootstrap: {os.strerror(errno_value)}")
        return int(values["PID"]), received[0], self.pid


def _credentials(conn: socket.socket) -> tuple[int, int]:
    """The caller's pid and uid, as the kernel saw them when it connected."""
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def _check_peer(pid: int, uid: int) -> None:
    """Declined unless the caller shares our user, namespaces and root directory."""
    if uid != os.geteuid():
        raise Declined(f"uid {uid}")
    pidfd = os.pidfd_open(pid)  # the checks below are about this process, if it still lives after them
    try:
        for ns in _NAMESPACES:
            if _ident(f"/proc/{pid}/ns/{ns}") != _ident(f"/proc/self/ns/{ns}"):
                raise Declined(f"another {ns} namespace")
        if _ident(f"/proc/{pid}/root") != _ident("/"):
            raise Declined("another root directory")
        signal.pidfd_send_signal(pidfd, 0)
    except OSError as e:
        raise Declined(str(e)) from None
    finally:
        os.close(pidfd)


def _ident(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _join_cgroups(pid: int) -> None:
    """Move this process into the caller's cgroups, where a ``create`` of its own would have run
    (relative cgroup paths resolve from there, and the call's CPU is the caller's)."""
    mounts: list[tuple[str, str, frozenset[str]]] = []  # (root, mountpoint, v1 controllers; v2: empty)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            fstype, _, options = right.split()[:3]
            if fstype == "cgroup":
                mounts.append((fields[3], fields[4], frozenset(options.split(",")) - {"rw", "ro"}))
            elif fstype == "cgroup2":
                mounts.append((fields[3], fields[4], frozenset()))
    with open(f"/proc/{pid}/cgroup") as f:
        theirs = [line.rstrip("\n").split(":", 2) for line in f]
    with open("/proc/self/cgroup") as f:
        ours = {names: path for _, names, path in (line.rstrip("\n").split(":", 2) for line in f)}
    me = str(os.getpid())
    for _, names, path in theirs:
        if ours.get(names) == path:
            continue
        wanted = frozenset(names.split(",")) if names else frozenset()
        for root, mountpoint, controllers in mounts:
            if (controllers >= wanted and wanted) or (not wanted and not controllers):
                if path == root or path.startswith(root.rstrip("/") + "/"):
                    directory = os.path.join(mountpoint, os.path.relpath(path, root))
                    with open(os.path.join(directory, "cgroup.procs"), "w") as procs:
                        procs.write(me)
                    break


def _become(pid: int, fds: list[int], env: list[str], umask: int) -> None:
    """Take the caller's place: its cgroups, working directory, stdio, environment and umask."""
    try:
        _join_cgroups(pid)
    except OSError as e:
        raise Declined(f"joining the caller's cgroups: {e}") from None
    cwd, *stdio = fds
    os.fchdir(cwd)
    os.close(cwd)
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(item.partition("=")[::2] for item in env if "=" in item)
    os.umask(umask)


def _handled(args: list[str]) -> bool:
    """Whether a call is the planner's: ``create``, without descriptors to pass on."""
    from .args import UsageError, parse
    from .main import _COMMANDS, _GLOBAL

    try:
        _, rest = parse(args, _GLOBAL)
        if not rest or rest[0] != "create":
            return False
        flags, _ = parse(rest[1:], _COMMANDS["create"])
    except UsageError:
        return False  # the Python command says what is wrong
    return str(flags["preserve_fds"] or "0") == "0"


#: the planner's own stderr (a worker's fd 2 is its caller's), and whether each call is reported on it
_log_fd = 2
_debug = False


def _say(text: str) -> None:
    os.write(_log_fd, f"supervisor-oci planner: {text}\n".encode(errors="replace"))


def _call(conn: socket.socket) -> None:
    from .. import _launch
    from .main import main

    data, fds = _recv(conn, 4)
    if not data:
        return  # a connection closed unused (someone checking that we listen)
    pid, uid = _credentials(conn)
    try:
        kind, attrs = decode(data)
        if kind != PlanMsg.CALL or len(fds) != 4:
            raise Declined(f"message type {kind} with {len(fds)} descriptors")
        args = [str(v) for k, v in attrs if k == "ARG"]
        env = [str(v) for k, v in attrs if k == "ENV"]
        umask = next((int(v) for k, v in attrs if k == "UMASK"), 0o022)
        _check_peer(pid, uid)
        if not _handled(args):
            raise Declined("not a create")
        _become(pid, fds, env, umask)
        fds = []
    except Declined as e:
        for fd in fds:
            os.close(fd)
        _send(conn, encode(PlanMsg.DECLINE, []))
        if _debug:
            _say(f"pid {pid}: declined: {e}")
        return
    _launch.spawner = FrontEnd(conn, pid)
    code = main(args)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    _send(conn, encode(PlanMsg.DONE, [("EXIT", code & 0xFF)]))
    if _debug:
        _say(f"pid {pid}: {' '.join(args)}: exit {code}")


def _worker(conn: socket.socket, listener: socket.socket, service_fds: list[int]) -> None:
    """A forked worker: it keeps nothing of the service's but its own connection."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    listener.close()
    for fd in service_fds:
        os.close(fd)
    try:
        _call(conn)
    except BaseException as e:  # the front end reports the call as failed; the planner's log says why
        _say(f"worker {os.getpid()}: {type(e).__name__}: {e}")
    finally:
        os._exit(0)


# -- the service ---------------------------------------------------------------------------------


def _warm() -> None:
    """Import and prepare what every ``create`` needs, once."""
    from .. import _launch, bootstrap
    from . import create, lifecycle, record  # noqa: F401

    _launch.sealed_bootstrap()
    # pyroute2 compiles a message class's attribute tables at its first message
    bootstrap._attributes([("CGROUP_PATH", "warm")])
    record.Record(pid=1, start=1).encode()
    encode(PlanMsg.DONE, [("EXIT", 0)])


def serve(root: str, debug: bool = False) -> int:
    """Serve ``ROOT/planner.sock`` until SIGTERM or SIGINT. ``debug``: one line per call on stderr."""
    import select

    global _log_fd, _debug
    _log_fd = os.dup(2)  # close-on-exec
    _debug = debug
    _warm()
    os.makedirs(root, mode=0o700, exist_ok=True)
    path = os.path.join(root, SOCKET_NAME)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
        raise CommandError(f"a planner already serves {root}")
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    finally:
        probe.close()
    try:
        os.unlink(path)  # a dead planner's
    except FileNotFoundError:
        pass
    old = os.umask(0o177)  # the socket: 0600, the planner's user alone
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    mine = _ident(path)
    listener.listen(128)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    workers: dict[int, int] = {}  # pidfd -> pid
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    try:
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if wake_r in ready:
                break
            for fd in ready:
                if fd in workers:
                    os.waitid(os.P_PIDFD, fd, os.WEXITED)
                    poller.unregister(fd)
                    os.close(fd)
                    del workers[fd]
            if listener.fileno() in ready:
                conn, _ = listener.accept()
                pid = os.fork()
                if pid == 0:
                    _worker(conn, listener, [wake_r, wake_w, *workers])
                conn.close()
                pidfd = os.pidfd_open(pid)
                workers[pidfd] = pid
                poller.register(pidfd, select.POLLIN)
    finally:
        try:
            if _ident(path) == mine:
                os.unlink(path)
        except FileNotFoundError:
            pass
        listener.close()
        for pidfd in workers:  # calls under way finish
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
            os.close(pidfd)
    return 0
