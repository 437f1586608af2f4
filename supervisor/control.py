"""The control socket's protocol and its client: how ``supervisor ps|exec|stop|start|restart|kill|
events|logs|reload`` talk to a running ``supervisor run``. Blocking and trio-free, like the one-shot
CLI; the server is ``control_server.py``.

The state directory (``--state-dir``, default ``/run/supervisor``) holds ``supervisor.pid``, locked
with ``flock`` for as long as its supervisor runs (a second one on the same directory refuses to
start and names the first), and ``control.sock``, a unix stream socket.

One request per connection: a JSON object on one line, ``{"cmd": ...}``; ``exec`` passes the
client's stdin, stdout and stderr along with it (``SCM_RIGHTS``), so the process inside the
container reads and writes the client's own terminal or pipes. Answers are JSON lines too: a final
``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``, and for ``logs`` a ``{"line", "stream",
"time"}`` per line first, for ``events`` an ``{"event": {...}}`` per event (``--events``' records).
The commands are a fixed set; nothing is looked up by name on the server.
"""

import array
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["COMMANDS", "Connection", "ControlError", "acquire_state_dir", "default_state_dir",
           "release_state_dir", "request", "socket_path"]

def default_state_dir() -> str:
    """/run/supervisor for root; an ordinary user's own runtime directory otherwise."""
    if os.geteuid() == 0:
        return "/run/supervisor"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "supervisor") if runtime else f"/tmp/supervisor-{os.geteuid()}"


COMMANDS = ("ps", "exec", "stop", "start", "restart", "kill", "events", "logs", "reload")
MAX_REQUEST = 1 << 20


class ControlError(Exception):
    """The control socket could not be used, or the supervisor refused the request (``answer``)."""

    def __init__(self, message: str, answer: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.answer = answer or {}


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, "control.sock")


def acquire_state_dir(state_dir: str) -> int:
    """Lock the state directory for this process; the returned fd holds the lock."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, "supervisor.pid"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ControlError(f"another supervisor (pid {other}) is running on {state_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_state_dir(state_dir: str, fd: int) -> None:
    for name in ("control.sock", "supervisor.pid"):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
    os.close(fd)


class Connection:
    """One request's connection: send it (with descriptors), read the answers (with theirs)."""

    def __init__(self, state_dir: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(socket_path(state_dir))
        except (FileNotFoundError, ConnectionRefusedError):
            self.sock.close()
            raise ControlError(f"no supervisor is running on {state_dir}") from None
        except PermissionError:
            self.sock.close()
            raise ControlError(f"not allowed to use {socket_path(state_dir)}") from None
        self._buf = bytearray()
        self._fds: list[int] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = (json.dumps(message) + "\n").encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = self.sock.sendmsg([data], ancillary)
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def receive(self) -> tuple[dict[str, Any], list[int]] | None:
        """The next answer and the descriptors that came with it; None at the end."""
        while b"\n" not in self._buf:
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC)
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[:len(payload) - len(payload) % 4])
                    self._fds.extend(received)
            if not data:
                return None
            self._buf += data
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        answer = json.loads(line)
        if answer.get("ok") is False:
            raise ControlError(answer.get("error", "refused"), answer)
        fds, self._fds = self._fds, []
        return answer, fds

    def close(self) -> None:
        self.sock.close()
        for fd in self._fds:
            os.close(fd)


def request(state_dir: str, message: dict[str, Any], fds: Sequence[int] = ()) -> Iterator[dict[str, Any]]:
    """Send one request and yield the answers; raises ``ControlError`` when no supervisor answers."""
    conn = Connection(state_dir)
    try:
        conn.send(message, fds)
        while (got := conn.receive()) is not None:
            answer, extra = got
            for fd in extra:
                os.close(fd)
            yield answer
    except OSError as e:
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            raise ControlError("the supervisor closed the connection") from None
        raise
    finally:
        conn.close()
