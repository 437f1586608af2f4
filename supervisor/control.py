"""The control socket's protocol and its client: how ``supervisor ps|exec|stop|start|logs`` talk to a
running ``supervisor run``. Blocking and trio-free, like the one-shot CLI; the server is
``control_server.py``.

The state directory (``--state-dir``, default ``/run/supervisor``) holds ``supervisor.pid``, locked
with ``flock`` for as long as its supervisor runs (a second one on the same directory refuses to
start and names the first), and ``control.sock``, a unix stream socket.

One request per connection: a JSON object on one line, ``{"cmd": ...}``; ``exec`` passes the
client's stdin, stdout and stderr along with it (``SCM_RIGHTS``), so the process inside the
container reads and writes the client's own terminal or pipes. Answers are JSON lines too: a final
``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``, and for ``logs`` a ``{"line": ...}`` per
line first. The commands are a fixed set; nothing is looked up by name on the server.
"""

import array
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["COMMANDS", "DEFAULT_STATE_DIR", "ControlError", "acquire_state_dir", "release_state_dir", "request",
           "socket_path"]

DEFAULT_STATE_DIR = "/run/supervisor"
COMMANDS = ("ps", "exec", "stop", "start", "logs")
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


def request(state_dir: str, message: dict[str, Any], fds: Sequence[int] = ()) -> Iterator[dict[str, Any]]:
    """Send one request and yield the answers; raises ``ControlError`` when no supervisor answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(socket_path(state_dir))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no supervisor is running on {state_dir}") from None
        except PermissionError:
            raise ControlError(f"not allowed to use {socket_path(state_dir)}") from None
        data = (json.dumps(message) + "\n").encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = sock.sendmsg([data], ancillary)
        if sent < len(data):
            sock.sendall(data[sent:])
        with sock.makefile("rb") as answers:
            for line in answers:
                answer = json.loads(line)
                if answer.get("ok") is False:
                    raise ControlError(answer.get("error", "refused"), answer)
                yield answer
    except OSError as e:
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            raise ControlError("the supervisor closed the connection") from None
        raise
    finally:
        sock.close()
