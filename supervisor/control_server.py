"""The control socket's server, inside ``supervisor run``: one task per connection, a fixed set of
commands (see ``control.py``), peers checked with ``SO_PEERCRED``: root or our own uid only."""

import datetime
import json
import os
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from . import _aio
from .control import MAX_REQUEST, socket_path
from .errors import BootstrapError
from .logs import LogLine
from .states import State
from .supervise import Handle, Supervisor

__all__ = ["serve"]


#: what ``reload`` calls: re-reads the manifest, returns the answer (``{"ok": ..., ...}``)
Reloader = Callable[[], Awaitable[dict[str, Any]]]


async def serve(sup: Supervisor, state_dir: str, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                reload: Reloader | None = None) -> None:
    """Answer the control socket until cancelled; the socket file goes with it. ``reload``: what
    the ``reload`` command does (``supervisor run`` re-reads its manifest); without it the command
    is refused."""
    path = socket_path(state_dir)
    try:
        os.unlink(path)  # a stale one, from a supervisor that was killed
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.setblocking(False)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
        task_status.started()
        async with anyio.create_task_group() as connections:
            while True:
                connections.start_soon(_serve_one, sup, await _aio.accept(listener), reload)
    finally:
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


_SO_PEERPIDFD = 77  # Linux 6.5; Python 3.11's socket module does not name it
_OUR_NAMESPACES = ("mnt", "pid")


def _peer_is_outside_containers(conn: socket.socket) -> bool:
    """Whether the peer shares our mount and pid namespaces. uid 0 is not enough: root in a
    container without a user namespace is uid 0 too, and a unix socket stays connectable on a
    read-only mount, so a container that can see the state directory could exec into, stop and start
    its siblings. The peer is pinned by a pidfd, so its pid cannot have been reused meanwhile."""
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    except OSError:
        pidfd = -1  # an older kernel: the pid alone
    try:
        pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        for ns in _OUR_NAMESPACES:
            if os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino:
                return False
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, 0)  # still the process we looked at
        return True
    except OSError:
        return False  # gone, or not ours to look at
    finally:
        if pidfd >= 0:
            os.close(pidfd)


async def _send(conn: socket.socket, answer: dict[str, Any]) -> None:
    await _aio.send_all(conn, (json.dumps(answer) + "\n").encode())


async def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    buf = bytearray()
    fds: list[int] = []
    while b"\n" not in buf:
        data, received = await _aio.recv_fds(conn, 65536, 3)
        fds.extend(received)
        if not data:
            break
        buf += data
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too long")
    message = json.loads(buf.split(b"\n", 1)[0] or b"{}")
    if not isinstance(message, dict):
        raise ValueError("a request is a JSON object")
    return message, fds


async def _serve_one(sup: Supervisor, conn: socket.socket, reload: Reloader | None = None) -> None:
    fds: list[int] = []
    with conn:
        try:
            # read the request first even from a stranger: closing on unread data would reset the
            # connection before our answer arrives (the fds it passed are closed below, unused)
            message, fds = await _read_request(conn)
            uid = _peer_uid(conn)
            if uid not in (0, os.geteuid()):
                await _send(conn, {"ok": False, "error": f"uid {uid} may not control this supervisor"})
                return
            if not _peer_is_outside_containers(conn):
                await _send(conn, {"ok": False, "error": "a process in another mount or pid namespace (a "
                                                         "container's) may not control this supervisor"})
                return
            await _dispatch(sup, conn, message, fds, reload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - one bad request must never take the supervisor down
            try:
                await _send(conn, {"ok": False, "error": f"bad request: {e}" if isinstance(
                    e, (ValueError, KeyError, TypeError, AttributeError)) else str(e)})
            except OSError:
                pass
        finally:
            for fd in fds:
                os.close(fd)


def _handle(sup: Supervisor, name: Any) -> Handle:
    if not isinstance(name, str) or name not in sup.handles:
        raise KeyError(f"no container named {name!r}")
    return sup.handles[name]


async def _dispatch(sup: Supervisor, conn: socket.socket, m: dict[str, Any], fds: list[int],
                    reload: Reloader | None = None) -> None:
    cmd = m.get("cmd")
    if cmd == "ps":
        await _send(conn, {"ok": True, "containers": [_row(h) for h in sup.handles.values()]})
    elif cmd == "stop":
        await sup.stop(_handle(sup, m.get("name")).name)
        await _send(conn, {"ok": True})
    elif cmd == "start":
        handle = await sup.start(_handle(sup, m.get("name")).name)
        await _send(conn, {"ok": True, "state": handle.state.value})
    elif cmd == "logs":
        await _logs(sup, conn, _handle(sup, m.get("name")), bool(m.get("follow")))
    elif cmd == "exec":
        await _exec(conn, _handle(sup, m.get("name")), m, fds)
    elif cmd == "restart":
        handle = await sup.restart(_handle(sup, m.get("name")).name)
        await _send(conn, {"ok": True, "state": handle.state.value, "pid": handle.pid})
    elif cmd == "kill":
        sup.kill(_handle(sup, m.get("name")).name, _signal_number(m.get("signal", "KILL")))
        await _send(conn, {"ok": True})
    elif cmd == "events":
        await _events(sup, conn, bool(m.get("follow")))
    elif cmd == "reload":
        if reload is None:
            raise KeyError("this supervisor has no manifest to reload")
        await _send(conn, await reload())
    else:
        raise KeyError(f"unknown command {cmd!r}")


def _row(h: Handle) -> dict[str, Any]:
    row: dict[str, Any] = {"name": h.name, "state": h.state.value,
                           "health": h.health.value if h.health is not None else None,
                           "pid": h.pid, "restarts": h.restarts,
                           "uptime": round(time.time() - h.started_at, 1) if h.state == State.RUNNING and
                           h.started_at else None,
                           "last_exit": str(h.last_exit) if h.last_exit else None, "error": h.last_error}
    stats = h.container.stats() if h.container is not None else None
    if stats is not None:
        row.update(memory=stats.memory_bytes, pids=stats.pids, cpu_ns=stats.cpu_ns)
    return row


def _log_answer(line: LogLine) -> dict[str, Any]:
    return {"line": line.data.decode(errors="replace"), "stream": line.stream,
            "time": _stamp(line.time)}


def _stamp(t: float) -> str:
    """RFC 3339 in UTC, to the microsecond (what ``logs --timestamps`` prints)."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def _logs(sup: Supervisor, conn: socket.socket, h: Handle, follow: bool) -> None:
    for line in sup.log_book.recent(h.name):
        await _send(conn, _log_answer(line))
    if not follow:
        await _send(conn, {"ok": True})
        return
    send, receive = anyio.create_memory_object_stream[LogLine](1000)

    def deliver(line: LogLine) -> None:
        try:
            send.send_nowait(line)
        except anyio.WouldBlock:
            pass  # a reader that cannot keep up loses lines, the containers never wait for it

    stop = sup.log_book.follow(h.name, deliver)
    try:
        async with anyio.create_task_group() as group, receive:
            group.start_soon(_cancel_on_eof, conn, group.cancel_scope)
            async for line in receive:
                await _send(conn, _log_answer(line))
    finally:
        stop()


async def _events(sup: Supervisor, conn: socket.socket, follow: bool) -> None:
    """The events the supervisor remembers, then (``follow``) every new one, as JSON records."""
    async with sup.events() as events:  # subscribed before the past is read: nothing falls between
        for event in sup.recent_events():
            await _send(conn, {"event": json.loads(event.to_json())})
        if not follow:
            await _send(conn, {"ok": True})
            return
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_eof, conn, group.cancel_scope)
            async for event in events:
                await _send(conn, {"event": json.loads(event.to_json())})
            group.cancel_scope.cancel()  # cut off (too far behind) or the supervisor is ending


def _signal_number(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in signal.valid_signals():
        return value
    if isinstance(value, str):
        name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise ValueError(f"not a signal: {value!r}")


async def _cancel_on_eof(conn: socket.socket, scope: anyio.CancelScope) -> None:
    while await _aio.recv(conn, 4096):
        pass
    scope.cancel()


async def _exec(conn: socket.socket, h: Handle, m: dict[str, Any], fds: list[int]) -> None:
    if h.container is None or h.state != State.RUNNING:
        await _send(conn, {"ok": False, "error": f"{h.name} is not running ({h.state.value})"})
        return
    args = m.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise ValueError("exec needs args: a non-empty list of strings")
    terminal = bool(m.get("tty"))
    size = m.get("size")
    console_size = (size[0], size[1]) if isinstance(size, list) and len(size) == 2 and all(
        isinstance(n, int) and 0 <= n <= 0xFFFF for n in size) else None
    stdio: list[int | None] = [*fds[:3], None, None, None][:3]

    async def hand_over(master: int) -> None:
        """The pty master goes to the client, which attaches its terminal to it."""
        try:
            data = (json.dumps({"console": True}) + "\n").encode()
            await _aio.send_fds(conn, data, [master])
        finally:
            os.close(master)
    container = h.container
    outcome: dict[str, Any] = {}

    async def run(scope: anyio.CancelScope) -> None:
        try:
            outcome["status"] = await container.exec(args, env=m.get("env"), cwd=m.get("cwd"), stdin=stdio[0],
                                                     stdout=stdio[1], stderr=stdio[2], terminal=terminal,
                                                     console_size=console_size,
                                                     on_console=hand_over if terminal else None)
        except BootstrapError as e:
            outcome["error"] = e
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(run, group.cancel_scope)
        group.start_soon(_cancel_on_eof, conn, group.cancel_scope)  # the client gone (Ctrl-C): kill it
    if "error" in outcome:
        e = outcome["error"]
        await _send(conn, {"ok": False, "error": e.message, "errno": e.errno, "stage": e.stage})
    elif "status" in outcome:
        await _send(conn, {"ok": True, "code": outcome["status"].code, "signal": outcome["status"].signal})
