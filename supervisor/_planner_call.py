"""The planner protocol (``native/oci_planner.h``) in Python: its messages, both ways, and the front
end's side for ``supervisor run --bundle``.

``supervisor run --bundle`` is a new process each time, and most of its time went to imports. With
a planner serving ``supervisor-oci``'s default root (``supervisor-oci planner``), the command
offers it the call first, as the native front end does ``create`` (``native/oci_call.c``): the
planner's warm worker runs the command in this process's place, and this process only spawns the
bootstrap when asked, reaps its children when asked, and forwards the signals a foreground runtime
forwards to the worker. The container is then this process's child, as without the planner.

This module is the whole of that path, so it imports only what costs nothing here: ``_socket`` and
``_signal`` rather than ``socket`` and ``signal``, whose enums cost the one-shot CLI about 15 ms,
and a codec of its own rather than pyroute2's classes (about 7 ms with the logging module they
import). The codec takes each attribute's payload type from the C parser's table through the cffi
module, so it and the C side cannot disagree; the planner (``oci/planner.py``) uses it too.
"""

import os
import struct

import _signal  # type: ignore[import-not-found]  # no stubs: signal's own C module, without the enums
import _socket

from ._native import ffi, lib

TYPE_CHECKING = False  # typing, and even collections.abc, cost this path milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SOCKET_NAME", "call", "decode", "encode"]

#: the planner's socket below its root, as the native front end names it
SOCKET_NAME: str = ffi.string(lib.sv_plan_socket_name()).decode()

#: payload types (nla.h)
_U32, _STR = lib.SV_T_U32, lib.SV_T_STR


class ProtocolError(Exception):
    """A message that is not what the protocol allows."""


class _Gone(ProtocolError):
    """The planner's end of the call closed before DONE: its worker is gone."""


def encode(kind: int, pairs: "Sequence[tuple[int, int | str]]") -> bytes:
    """One message: the netlink header, then each (attribute id, value), typed by the C table."""
    body = bytearray()
    for attr, value in pairs:
        if lib.sv_plan_attr_type(attr) == _STR:
            payload = os.fsencode(str(value)) + b"\0"  # as argv and environ hold what is not UTF-8
        else:
            payload = struct.pack("=I", int(value))
        if len(payload) + 4 > 0xFFFF:
            raise ProtocolError(f"attribute {attr}: {len(payload)} bytes, too long")
        body += struct.pack("=HH", len(payload) + 4, attr) + payload + b"\0" * (-len(payload) % 4)
    if len(body) + 16 > lib.SV_PLAN_MAX_MESSAGE:
        raise ProtocolError(f"a message of {len(body) + 16} bytes, too long")
    return struct.pack("=IHHII", len(body) + 16, kind, 0, 0, 0) + bytes(body)


def decode(data: bytes) -> tuple[int, list[tuple[int, int | str]]]:
    """The type and the attributes of one whole message; ProtocolError for anything else."""
    if len(data) < 16 or struct.unpack_from("=I", data)[0] != len(data):
        raise ProtocolError(f"a message of {len(data)} bytes whose header disagrees")
    kind = struct.unpack_from("=H", data, 4)[0]
    pairs: list[tuple[int, int | str]] = []
    at = 16
    while at < len(data):
        if at + 4 > len(data):
            raise ProtocolError("trailing bytes")
        size, attr = struct.unpack_from("=HH", data, at)
        payload = data[at + 4:at + size]
        if size < 4 or at + size > len(data):
            raise ProtocolError(f"attribute {attr} out of bounds")
        t = lib.sv_plan_attr_type(attr)
        if t == _U32 and len(payload) == 4:
            pairs.append((attr, struct.unpack("=I", payload)[0]))
        elif t == _STR and payload.endswith(b"\0") and b"\0" not in payload[:-1]:
            pairs.append((attr, payload[:-1].decode(errors="surrogateescape")))
        else:
            raise ProtocolError(f"attribute {attr}: {len(payload)} bytes that are not its type")
        at += (size + 3) & ~3
    return kind, pairs


def _recv(sock: _socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    import array

    data, ancillary, flags, _ = sock.recvmsg(lib.SV_PLAN_MAX_MESSAGE + 1, _socket.CMSG_SPACE(max_fds * 4),
                                             _socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % 4])
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ProtocolError("a message that did not fit")
    return data, list(fds)


def _send(sock: _socket.socket, data: bytes, fds: "Sequence[int]" = ()) -> None:
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    sock.sendmsg([data], ancillary)


#: what a foreground runtime passes on to its container, terminal resizes among them: ``cli._FORWARDED``
_FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT")
#: the largest pid (pid_t is signed): a larger number from the planner is no process
_PID_MAX = 0x7FFFFFFF


def call(path: str, program: str, args: "Sequence[str]") -> int | None:
    """Offer a command to the planner on ``path``: its exit code once the planner ran it; None when
    there is no planner or it declined, and nothing was done."""
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        # The protocol sends all three, and the socket would take the lowest free number: a closed
        # stdin would have the worker's stdin, hence the container's, be our end of the connection.
        # The Python command copes with a closed stdio.
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        # a planner of our own user only: it is sent our working directory and stdio, and we run
        # what it says (the listener's credentials, as of its listen())
        _, uid, _ = struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))
        if uid != os.geteuid():
            raise PermissionError(f"a planner of uid {uid}")
    except OSError:
        sock.close()
        return None
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        umask = os.umask(0)
        os.umask(umask)
        pairs: list[tuple[int, int | str]] = [(lib.SV_PLAN_ATTR_PROGRAM, program)]
        pairs += [(lib.SV_PLAN_ATTR_ARG, a) for a in args]
        pairs += [(lib.SV_PLAN_ATTR_ENV, f"{k}={v}") for k, v in os.environ.items()]
        pairs.append((lib.SV_PLAN_ATTR_UMASK, umask))
        _send(sock, encode(lib.SV_PLAN_MSG_CALL, pairs), [cwd, 0, 1, 2])
    except (OSError, ProtocolError):
        sock.close()
        return None
    finally:
        os.close(cwd)

    worker = 0
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        if worker:
            try:
                os.kill(worker, signum)
            except ProcessLookupError:
                pass

    try:
        data, fds = _recv(sock, 1)
        if not data:  # gone before it took the call (a planner stopping, say): nothing was done
            sock.close()
            return None
        kind, values = decode(data)
        if kind == lib.SV_PLAN_MSG_DECLINE and not fds:
            sock.close()
            return None
        if kind != lib.SV_PLAN_MSG_ACCEPT or fds or [a for a, _ in values] != [lib.SV_PLAN_ATTR_PID]:
            for fd in fds:
                os.close(fd)
            raise ProtocolError(f"message type {kind}, not an answer to a call")
        worker = _pid(values[0][1])
        for name in _FORWARDED:
            _signal.signal(getattr(_signal, name), forward)
        return _serve(sock)
    except (OSError, ProtocolError, ValueError) as e:  # ValueError: what posix_spawn refuses
        _kill_children()
        if worker:
            # What a worker that is gone made for the call (supervisor-<its pid> cgroups below ours,
            # emptied now) goes as the next supervisor started here would sweep it.
            from .cgroups import _sweep_once, hierarchies

            _sweep_once(hierarchies())
        ending = [s for s in forwarded if s not in (_signal.SIGWINCH, _signal.SIGCONT)]
        if isinstance(e, _Gone) and ending:
            # The worker died of what we passed on (it does before the container runs, as the
            # command run here would have): so do we, as the command would have.
            _signal.signal(ending[0], _signal.SIG_DFL)
            os.kill(os.getpid(), ending[0])
        os.write(2, f"supervisor: the planner: {e}\n".encode())
        return 125
    finally:
        sock.close()


def _serve(sock: _socket.socket) -> int:
    """Do what the accepted call asks until it is done: its exit code."""
    while True:
        data, fds = _recv(sock, 16)
        if not data:
            raise _Gone("the planner ended the call without an answer")
        kind, values = decode(data)
        if kind == lib.SV_PLAN_MSG_SPAWN:
            _send_spawned(sock, values, fds)
            continue
        for fd in fds:
            os.close(fd)
        attrs = [a for a, _ in values]
        if kind == lib.SV_PLAN_MSG_WAIT and attrs == [lib.SV_PLAN_ATTR_PID]:
            try:
                answer = (lib.SV_PLAN_ATTR_STATUS, _wait(sock, _pid(values[0][1])))
            except ChildProcessError as e:
                answer = (lib.SV_PLAN_ATTR_ERRNO, e.errno or 0)
            _send(sock, encode(lib.SV_PLAN_MSG_WAITED, [answer]))
        elif kind == lib.SV_PLAN_MSG_DONE and attrs == [lib.SV_PLAN_ATTR_EXIT]:
            if int(values[0][1]) > 0xFF:
                raise ProtocolError(f"exit code {values[0][1]}")
            while True:  # what the call spawned and has ended
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
            return int(values[0][1])
        else:
            raise ProtocolError(f"message type {kind}")


def _pid(value: "int | str") -> int:
    if not 0 < int(value) <= _PID_MAX:
        raise ProtocolError(f"pid {value}")
    return int(value)


def _wait(sock: _socket.socket, pid: int) -> int:
    """Reap our child ``pid`` (ChildProcessError when it is none): waitpid's status. A WAIT may last
    as long as the container runs, so the connection is watched meanwhile: a worker that is gone
    (killed) ends the call, and what we spawned is killed, rather than running on unattended."""
    import select

    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return status
    pidfd = os.pidfd_open(pid)  # our child, not yet reaped: its pid is still its own
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(sock.fileno(), select.POLLIN)
        if pidfd not in {fd for fd, _ in poller.poll()}:  # the planner spoke out of turn, or is gone
            if not sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT):
                raise _Gone("the planner ended the call without an answer")
            raise ProtocolError("the planner spoke during a wait")
    finally:
        os.close(pidfd)
    return os.waitpid(pid, 0)[1]


def _send_spawned(sock: _socket.socket, values: list[tuple[int, int | str]], fds: list[int]) -> None:
    """Spawn what a SPAWN describes, as the C front end does: fds[0] is the program, the others go
    to the FD numbers, every signal at its default and none blocked."""

    argv = [str(v) for a, v in values if a == lib.SV_PLAN_ATTR_ARG]
    env = dict(str(v).partition("=")[::2] for a, v in values if a == lib.SV_PLAN_ATTR_ENV)
    targets = [int(v) for a, v in values if a == lib.SV_PLAN_ATTR_FD]
    try:
        if not fds or len(targets) != len(fds) - 1 or not argv:
            raise ProtocolError(f"a spawn of {len(argv)} arguments with {len(fds)} descriptors")
        import fcntl

        # sources may sit on targets: move each above the highest target first
        top = max([3, *(t + 1 for t in targets)])
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top) for fd in fds[1:]]
        try:
            every = [s for s in _signal.valid_signals() if s not in (_signal.SIGKILL, _signal.SIGSTOP)]
            actions = [(os.POSIX_SPAWN_DUP2, m, t) for m, t in zip(moved, targets, strict=True)]
            pid = os.posix_spawn(f"/proc/self/fd/{fds[0]}", argv, env, setsigdef=every, setsigmask=(),
                                 file_actions=actions)
        except OSError as e:
            _send(sock, encode(lib.SV_PLAN_MSG_SPAWNED, [(lib.SV_PLAN_ATTR_ERRNO, e.errno or 0)]))
            return
        finally:
            for fd in moved:
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)
    pidfd = os.pidfd_open(pid)
    try:
        _send(sock, encode(lib.SV_PLAN_MSG_SPAWNED, [(lib.SV_PLAN_ATTR_PID, pid)]), [pidfd])
    finally:
        os.close(pidfd)


def _kill_children() -> None:
    """The planner is gone mid-call: kill and reap every child (the bootstrap, the init)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
