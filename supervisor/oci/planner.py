"""``supervisor-oci planner``: a service that keeps the planner imported, so that ``create`` (and
``supervisor run --bundle``) cost what planning costs and not what importing it costs.

Theory of operation. A ``create`` through a new Python process spends most of its time importing
(attrs, pyroute2, the planner: about 70 ms here, against runc's whole create of 18 ms). The planner
is a process that has imported all of it once; the native front end (``native/oci_call.c``) offers
it each ``create`` on ``ROOT/planner.sock``, and the ``supervisor`` command each
``run --bundle`` on the default root's (``_planner_call.py``; protocol: ``native/oci_planner.h``).
Per call it forks a worker, which:

- checks the caller (the process that connected, by its pidfd): the same user as the planner, in the
  same namespaces and root directory, with every capability the planner has and no confinement
  (no_new_privs, seccomp, another LSM label); else it declines, having done nothing, and the caller
  runs the Python command itself;
- becomes the caller for the call's length: its cgroups, working directory, stdio, environment and
  umask, so that the call behaves as the command run by the caller would;
- runs the command's ``main`` on the caller's arguments, with ``_launch.spawner`` set so that the
  bootstrap is spawned by the caller, and reaped by it when the worker asks: the init is then the
  caller's child, hence its subreaper's, and inherits the caller's rlimits, signal state and
  credentials, exactly as without the planner;
- answers with the exit code, and exits.

Only ``create`` without ``--preserve-fds`` (the descriptors to pass are the caller's) and
``supervisor run --bundle`` come here; everything else the worker declines. Signals a foreground
``run`` forwards reach the worker from the caller, and go on to the container from there.

The planner runs the code it imported at its start: after an upgrade, restart it.
"""


import gc
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable

from .._planner_call import SOCKET_NAME, ProtocolError, _recv, _send, decode, encode
from .._wire import PlanAttr, PlanMsg
from .log import CommandError

__all__ = ["serve"]

#: the namespaces a caller must share with the planner: a path, a pid, a cgroup mean the same here
_NAMESPACES = ("mnt", "pid", "net", "ipc", "uts", "user", "cgroup")


class Declined(Exception):
    """The call is not the planner's: nothing was done, and the front end runs it itself."""


class CallerGone(ConnectionError):
    """The caller's end of the connection closed mid-call (it was killed, say)."""


# -- the worker: one call ----------------------------------------------------------------------


class FrontEnd:
    """The caller's front end, as the worker's ``_launch.spawner``: it spawns what it is sent, and
    reaps its children when asked."""

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid

    def spawn(self, program: int, argv: list[str], env: dict[str, str],
              fds: list[tuple[int, int]]) -> tuple[int, int, int]:
        pairs: list[tuple[int, int | str]] = [(PlanAttr.ARG, a) for a in argv]
        pairs += [(PlanAttr.ENV, f"{k}={v}") for k, v in env.items()]
        pairs += [(PlanAttr.FD, target) for _, target in fds]
        _send(self.conn, encode(PlanMsg.SPAWN, pairs), [program, *(fd for fd, _ in fds)])
        values, received = self._answer(PlanMsg.SPAWNED, 1)
        if "ERRNO" in values and not received:
            errno_value = values["ERRNO"]
            raise OSError(errno_value, f"spawning the bootstrap: {os.strerror(errno_value)}")
        if "PID" not in values or len(received) != 1:
            raise CommandError("the front end's answer to a spawn has no pid")
        return values["PID"], received[0], self.pid

    def wait(self, pid: int) -> int:
        _send(self.conn, encode(PlanMsg.WAIT, [(PlanAttr.PID, pid)]))
        values, _ = self._answer(PlanMsg.WAITED, 0)
        if "STATUS" not in values:
            errno_value = values.get("ERRNO", 0)
            raise ChildProcessError(errno_value, f"waiting for {pid}: {os.strerror(errno_value)}")
        return values["STATUS"]

    def _answer(self, kind: PlanMsg, max_fds: int) -> tuple[dict[str, int], list[int]]:
        data, received = _recv(self.conn, max_fds)
        if not data:
            raise CallerGone(f"the caller (pid {self.pid}) went away")
        got, pairs = decode(data)
        if got != kind or len(received) > max_fds:
            for fd in received:
                os.close(fd)
            raise CommandError(f"the front end answered with message type {got}, not {kind.name}")
        return {PlanAttr(a).name: int(v) for a, v in pairs}, received


def _credentials(conn: socket.socket) -> tuple[int, int]:
    """The caller's pid and uid, as the kernel saw them when it connected."""
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


#: SO_PEERPIDFD (Linux 6.5; Python 3.11 lacks the name): a pidfd for the process that connected.
#: SO_PEERCRED's pid outlives that process: once it is gone, the pid may be any process's.
_SO_PEERPIDFD = 77


def _check_peer(conn: socket.socket, pid: int, uid: int) -> None:
    """Declined unless the caller shares our user, namespaces and root directory, and is no less
    privileged than we are."""
    if uid != os.geteuid():
        raise Declined(f"uid {uid}")
    try:
        # the process that connected: the checks below are about it if it still lives after them
        # (a living process keeps its pid), not about whoever has its pid once it has exited
        pidfd = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    except OSError as e:
        raise Declined(f"no pidfd for the caller: {e}") from None
    try:
        _check_process(pid)
        signal.pidfd_send_signal(pidfd, 0)
    except OSError as e:
        raise Declined(str(e)) from None
    finally:
        os.close(pidfd)


def _check_process(pid: int) -> None:
    """Declined unless process ``pid`` is in our namespaces and root directory, holds every
    capability we hold and is not confined (no_new_privs, a seccomp filter, another LSM label): a
    root process that could not create the container itself must not have the planner create it,
    run its hooks and write its files with ours."""
    for ns in _NAMESPACES:
        if _ident(f"/proc/{pid}/ns/{ns}") != _ident(f"/proc/self/ns/{ns}"):
            raise Declined(f"another {ns} namespace")
    if _ident(f"/proc/{pid}/root") != _ident("/"):
        raise Declined("another root directory")
    theirs, ours = _status(f"/proc/{pid}/status"), _status("/proc/self/status")
    for field in ("CapEff", "CapPrm", "CapBnd"):
        if int(ours[field], 16) & ~int(theirs[field], 16):
            raise Declined(f"fewer capabilities ({field} {theirs[field]})")
    for field in ("NoNewPrivs", "Seccomp"):
        if theirs[field] != "0":
            raise Declined(f"confined ({field} {theirs[field]})")
    if _label(f"/proc/{pid}/attr/current") != _label("/proc/self/attr/current"):
        raise Declined("another LSM label")


def _status(path: str) -> dict[str, str]:
    with open(path) as f:
        return {name: value.strip() for name, _, value in (line.partition(":") for line in f)}


def _label(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # no LSM
        return b""


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
    os.environ.update(item.partition("=")[::2] for item in env if "=" in item[1:])  # no nameless entry
    os.umask(umask)


def _program(name: str, args: list[str]) -> Callable[[list[str]], int]:
    """The ``main`` that runs a call: ``create`` without descriptors to pass on (supervisor-oci's),
    or ``run --bundle`` (the supervisor CLI's one-shot); anything else is Declined."""
    if name == "supervisor":
        if args[:1] == ["run"] and any(a in ("--bundle", "-b") or a.startswith("--bundle=") for a in args):
            from ..cli import main as cli_main

            return cli_main
        raise Declined("not a run --bundle")
    from .args import UsageError, parse
    from .main import _COMMANDS, _GLOBAL, main

    try:
        _, rest = parse(args, _GLOBAL)
        if not rest or rest[0] != "create":
            raise Declined("not a create")
        flags, _ = parse(rest[1:], _COMMANDS["create"])
    except UsageError:
        raise Declined("not a create") from None  # the Python command says what is wrong
    if str(flags["preserve_fds"] or "0") != "0":
        raise Declined("a create with descriptors to pass on")
    return main


#: the planner's own stderr (a worker's fd 2 is its caller's), and whether each call is reported on it
_log_fd = 2
_debug = False


def _say(text: str) -> None:
    os.write(_log_fd, f"supervisor-oci planner: {text}\n".encode(errors="replace"))


def _call(conn: socket.socket) -> None:
    from .. import _launch

    conn.settimeout(10)  # a caller that connects and says nothing does not keep a worker
    data, fds = _recv(conn, 4)
    conn.settimeout(None)
    if not data:
        return  # a connection closed unused (someone checking that we listen)
    pid, uid = _credentials(conn)
    try:
        try:
            kind, pairs = decode(data)
        except ProtocolError as e:
            raise Declined(str(e)) from None
        if kind != PlanMsg.CALL or len(fds) != 4:
            raise Declined(f"message type {kind} with {len(fds)} descriptors")
        args = [str(v) for a, v in pairs if a == PlanAttr.ARG]
        env = [str(v) for a, v in pairs if a == PlanAttr.ENV]
        umask = next((int(v) for a, v in pairs if a == PlanAttr.UMASK), 0o022)
        program = next((str(v) for a, v in pairs if a == PlanAttr.PROGRAM), "supervisor-oci")
        _check_peer(conn, pid, uid)
        main = _program(program, args)
        _become(pid, fds, env, umask)
        fds = []
    except Declined as e:
        for fd in fds:
            os.close(fd)
        _send(conn, encode(PlanMsg.DECLINE, []))
        if _debug:
            _say(f"pid {pid}: declined: {e}")
        return
    if program == "supervisor":
        # From here on a SIGTERM is the caller's, forwarded (run --bundle's front end forwards what a
        # foreground runtime does): it ends us as it would end the command run by the caller, whose
        # front end then dies of it too. Until the container runs and it is passed on, that is.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _send(conn, encode(PlanMsg.ACCEPT, [(PlanAttr.PID, os.getpid())]))
    _launch.spawner = FrontEnd(conn, pid)
    started = time.monotonic()
    try:
        code = main(args)
    except SystemExit as e:  # argparse's, after it said why on the caller's stderr
        code = e.code if isinstance(e.code, int) else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    try:
        _send(conn, encode(PlanMsg.DONE, [(PlanAttr.EXIT, code & 0xFF)]))
    except OSError:  # the caller is gone (killed mid-call): what the call made is cleaned up all the same
        if _debug:
            _say(f"pid {pid}: {program} {' '.join(args)}: the caller went away")
        return
    if _debug:
        _say(f"pid {pid}: {program} {' '.join(args)}: exit {code} ({(time.monotonic() - started) * 1000:.1f} ms)")


#: set once a spare has taken a call: from then on a SIGTERM from the service no longer ends it
_busy = False


class _Stop(BaseException):
    """An idle spare's SIGTERM."""


def _spare(listener: socket.socket, accepted: int, service_fds: list[int]) -> None:
    """A worker forked ahead of its call: it makes the pages a call touches its own (fork shares
    them copy-on-write, and a call that copies them as it goes is milliseconds slower), then waits
    in accept. It tells the service when it took a call (a byte on ``accepted``), so another spare
    is forked. An idle spare ends on a SIGTERM (the service's, or systemd's to the service's cgroup);
    a busy one ignores it until it has left that cgroup for its caller's, and it leaves the service's
    session at once."""
    global _busy

    def stop(_signum: int, _frame: object) -> None:
        if not _busy:
            raise _Stop  # out of accept, or of a warm-up (whose temporary directory goes)

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in service_fds:
        os.close(fd)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT))  # blocked by the fork
        _touch()
        _check_process(os.getpid())  # what a call runs first, run once on ourselves
        _join_cgroups(os.getpid())
        conn, _ = listener.accept()
        _busy = True
        # Out of the service's session and process group: the ^C, hangup and job control of the
        # terminal the service was started from are not the caller's, and must not reach the call
        # (attend() would pass them on to its container).
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        listener.close()
        os.write(accepted, b"x")
        os.close(accepted)
        _call(conn)
    except _Stop:
        pass
    except BaseException as e:  # the front end reports the call as failed; the planner's log says why
        _say(f"worker {os.getpid()}: {type(e).__name__}: {e}")
    finally:
        os._exit(0)


# -- the service ---------------------------------------------------------------------------------


def _warm() -> None:
    """Import and prepare what every ``create`` and ``run --bundle`` needs, once: the sealed copy of
    the bootstrap, pyroute2's message classes (each compiles its tables at its first message), the
    steps most containers share (``bootstrap._nested`` is cached by value), the CLI's parser."""
    from .. import _launch, bootstrap, cli, console  # noqa: F401
    from . import create, lifecycle, record  # noqa: F401

    _launch.sealed_bootstrap()
    cli._parser()
    record.Record(pid=1, start=1).encode()
    _touch()


def _touch() -> None:
    """Plan and encode runc's default config, as a call would, and forget what describes the host
    as this process sees it (``Host.current``, its own cgroup among them): a worker takes its
    caller's cgroups."""
    import tempfile

    from .. import bootstrap
    from ..host import _probe_as
    from ..plan import plan
    from ..spec import ContainerSpec
    from .info import default_spec

    with tempfile.TemporaryDirectory() as bundle:
        config = default_spec()
        config["root"]["path"] = bundle
        bootstrap.encode(plan(ContainerSpec.from_oci(config, bundle), "warm"))
    bootstrap._encode.cache_clear()
    _probe_as.cache_clear()


def _decline_queued(listener: socket.socket) -> None:
    """Decline the calls still in the listen queue, once no new one can come (the socket's name is
    gone): closing the listener would reset them, and their front ends would fail calls that had
    nothing done instead of running them in Python."""
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            try:
                # read what it sent, and stop it sending more: a socket closed with unread data
                # resets its peer, which then sees the reset before our answer
                conn.shutdown(socket.SHUT_RD)
                while True:
                    data, fds = _recv(conn, 4)
                    for fd in fds:
                        os.close(fd)
                    if not data:
                        break
            except (OSError, ProtocolError):
                pass
            try:
                _send(conn, encode(PlanMsg.DECLINE, []))
            except OSError:
                pass  # that front end is gone


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
    accepted_r, accepted_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    gc.freeze()  # what the service made stays shared with the workers: no collection copies it
    workers: dict[int, int] = {}  # pidfd -> pid
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    poller.register(accepted_r, select.POLLIN)

    def fork_spare() -> int:
        # the child starts with the service's handlers: it must not take a SIGTERM before its own
        signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT))
        pid = os.fork()
        if pid == 0:
            try:
                _spare(listener, accepted_w, [wake_r, wake_w, accepted_r, *workers])
            finally:
                os._exit(0)  # never back into the service's loop
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT))
        pidfd = os.pidfd_open(pid)
        workers[pidfd] = pid
        poller.register(pidfd, select.POLLIN)
        return pidfd

    spare = fork_spare()
    try:
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if wake_r in ready:
                break
            if accepted_r in ready:
                os.read(accepted_r, 64)
                spare = fork_spare()
            for fd in ready:
                if fd in workers:
                    os.waitid(os.P_PIDFD, fd, os.WEXITED)
                    poller.unregister(fd)
                    os.close(fd)
                    del workers[fd]
                    if fd == spare:  # it died idle (it could not warm up): another, not in a busy loop
                        _say("an idle worker ended; forking another in a second")
                        time.sleep(1)
                        spare = fork_spare()
    finally:
        try:
            if _ident(path) == mine:
                os.unlink(path)
        except FileNotFoundError:
            pass
        if spare in workers:  # the idle spare goes (a busy one ignores this); calls under way finish
            signal.pidfd_send_signal(spare, signal.SIGTERM)
            os.waitid(os.P_PIDFD, spare, os.WEXITED)
            os.close(spare)
            del workers[spare]
        _decline_queued(listener)
        listener.close()
        for pidfd in workers:
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
            os.close(pidfd)
    return 0
