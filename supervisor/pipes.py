"""The sync protocol between the supervisor and one bootstrap, sans I/O.

Theory of operation. After the bootstrap message, the socket carries framed messages
(``struct sv_sync_header`` + payload, ``wire.h``):

    bootstrap → supervisor   PID(init pid)          the init exists, blocked before any setup
    supervisor → init        CONTINUE               uid/gid maps, cgroup and network are ready
    init → supervisor        CONSOLE + an fd        the pty master, when the workload has a terminal
    init → supervisor        EXEC                   set up; the workload's execve comes next
    bootstrap/init → sup.    ERROR(record)          a step failed; the sender exits (a hook's record
                                                    says how the hook ended: HookError)
    (end of stream)                                 the socket is close-on-exec in the init: after
                                                    EXEC, the workload runs

So the outcomes are kept apart: setup failed (an ERROR record), the init died during setup (the end
of the stream before EXEC: a crash or an OOM kill, which must not pass for a running workload), the
bootstrap died before reporting a pid (the caller watches its pidfd beside the socket, since the init
it may have cloned still holds the socket open), exec'd (EXEC, then the end of the stream without a
record), and later the workload's exit (seen on its pidfd, not here).

``SyncConnection`` takes bytes and returns events; all its transitions are in ``_advance``.
``Handshake`` is the supervisor's side of a whole start as a generator of I/O requests, so that the
blocking CLI and the trio supervisor run the same logic with their own transports.
"""

import enum
import errno
import os
import struct
from collections.abc import Generator, Sequence

import attrs

from ._wire import ERROR_RECORD_SIZE, HOOK_FAILURE_SIZE, SYNC_HEADER_SIZE, Stage, Sync
from .errors import BootstrapError, HookError

__all__ = [
    "ConsoleReady",
    "ExecAnnounced",
    "Execed",
    "InitDied",
    "Handshake",
    "HostSetup",
    "Request",
    "InitStarted",
    "ProtocolError",
    "parse_error_message",
    "Recv",
    "Send",
    "SetupFailed",
    "SyncConnection",
    "SyncState",
]

_HEADER = struct.Struct("=II")
_RECORD = struct.Struct("=Ii")
_HOOK_FAILURE = struct.Struct("=IiI")
assert _HEADER.size == SYNC_HEADER_SIZE and _RECORD.size == ERROR_RECORD_SIZE
assert _HOOK_FAILURE.size == HOOK_FAILURE_SIZE


class ProtocolError(BootstrapError):
    """The bootstrap said something the protocol does not allow."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EPROTO, "sync", "sync", what)


class InitDied(BootstrapError):
    """The init ended before it announced the workload's execve: a crash or a kill during setup.
    ``how`` says how once the caller has reaped it (``killed by SIGKILL``)."""

    def __init__(self) -> None:
        super().__init__(errno.ECHILD, "init", "set up", "the container")
        self.how = "died"

    @property
    def message(self) -> str:
        return f"the init {self.how} during setup, before exec"


@attrs.frozen
class InitStarted:
    pid: int


@attrs.frozen
class SetupFailed:
    error: BootstrapError


@attrs.frozen
class ExecAnnounced:
    pass


@attrs.frozen
class Execed:
    pass


@attrs.frozen
class ConsoleReady:
    fd: int  # the pty master; the receiver owns it


Event = InitStarted | SetupFailed | ExecAnnounced | Execed | ConsoleReady


class SyncState(enum.Enum):
    AWAIT_PID = "await pid"
    AWAIT_EXEC = "await exec"
    EXEC_NEXT = "exec next"
    EXECED = "exec'd"
    FAILED = "failed"


class SyncConnection:
    """The supervisor's end of one sync socket."""

    def __init__(self) -> None:
        self.state = SyncState.AWAIT_PID
        self._buf = bytearray()
        self._fds: list[int] = []
        self._console = False

    def receive_data(self, data: bytes, fds: Sequence[int] = ()) -> list[Event]:
        """Feed what the socket gave, and the descriptors that came with it (the connection owns
        them until an event hands one out; ``close`` closes the rest); ``b""`` means end of stream."""
        self._fds.extend(fds)
        if self.state in (SyncState.EXECED, SyncState.FAILED):
            return []
        if not data:
            return [self._advance("eof", b"")]
        self._buf += data
        events: list[Event] = []
        while len(self._buf) >= _HEADER.size and self.state not in (SyncState.EXECED, SyncState.FAILED):
            kind, length = _HEADER.unpack_from(self._buf)
            if length > 1 << 16:
                events.append(self._fail(ProtocolError(f"message {kind} of {length} bytes")))
                break
            if len(self._buf) < _HEADER.size + length:
                break
            payload = bytes(self._buf[_HEADER.size:_HEADER.size + length])
            del self._buf[:_HEADER.size + length]
            events.append(self._advance(kind, payload))
        return events

    def continue_bytes(self) -> bytes:
        if self.state != SyncState.AWAIT_EXEC:
            raise RuntimeError(f"cannot continue in state {self.state.value}")
        return _HEADER.pack(Sync.CONTINUE, 0)

    def close(self) -> None:
        """Close descriptors that arrived but were not handed out."""
        while self._fds:
            os.close(self._fds.pop())

    def _fail(self, error: BootstrapError) -> SetupFailed:
        self.state = SyncState.FAILED
        return SetupFailed(error)

    def _advance(self, kind: "int | str", payload: bytes) -> Event:
        """Every transition of the protocol."""
        if kind == Sync.ERROR:
            return self._fail(_parse_error(payload))
        if self.state == SyncState.AWAIT_PID:
            if kind == Sync.PID and len(payload) == 4:
                self.state = SyncState.AWAIT_EXEC
                return InitStarted(struct.unpack("=I", payload)[0])
            if kind == "eof":
                return self._fail(ProtocolError("the bootstrap exited without starting the init"))
        elif self.state == SyncState.AWAIT_EXEC:
            if kind == Sync.CONSOLE and not payload and self._fds and not self._console:
                self._console = True
                return ConsoleReady(self._fds.pop(0))
            if kind == Sync.EXEC and not payload:
                self.state = SyncState.EXEC_NEXT
                return ExecAnnounced()
            if kind == "eof":
                return self._fail(InitDied())
        elif self.state == SyncState.EXEC_NEXT:
            if kind == "eof":
                if self._buf:
                    return self._fail(ProtocolError("the stream ended inside a message"))
                self.state = SyncState.EXECED
                return Execed()
        return self._fail(ProtocolError(f"unexpected message {kind} in state {self.state.value}"))


def _parse_error(payload: bytes) -> BootstrapError:
    """stage, errno, operation NUL, object NUL; for a hook, a ``struct sv_hook_failure`` and its output
    after that."""
    if len(payload) < _RECORD.size:
        return ProtocolError("short error record")
    stage, err = _RECORD.unpack_from(payload)
    op_end = payload.find(b"\0", _RECORD.size)
    object_end = payload.find(b"\0", op_end + 1) if op_end >= 0 else -1
    if object_end < 0:
        return ProtocolError("malformed error record")
    op = payload[_RECORD.size:op_end].decode(errors="replace")
    what = payload[op_end + 1:object_end].decode(errors="replace")
    if stage == Stage.HOOK:
        rest = payload[object_end + 1:]
        if len(rest) < _HOOK_FAILURE.size:
            return ProtocolError("short hook failure record")
        index, status, timed_out = _HOOK_FAILURE.unpack_from(rest)
        return HookError(err, op, what, index, None if status < 0 else status, timed_out,
                         rest[_HOOK_FAILURE.size:].decode(errors="replace"))
    try:
        stage_name = Stage(stage).name.lower()
    except ValueError:
        stage_name = str(stage)
    return BootstrapError(err, stage_name, op, what)


def parse_error_message(data: bytes) -> BootstrapError:
    """One whole ERROR message (header and record), as the init writes it to supervisor-oci's exec FIFO
    when a startContainer hook failed."""
    if len(data) < _HEADER.size:
        return ProtocolError(f"{len(data)} bytes where an error message was expected")
    kind, length = _HEADER.unpack_from(data)
    if kind != Sync.ERROR or len(data) != _HEADER.size + length:
        return ProtocolError(f"message {kind} of {length} bytes where an error was expected")
    return _parse_error(data[_HEADER.size:])


@attrs.frozen
class Send:
    data: bytes


@attrs.frozen
class Recv:
    """Read the socket. With ``watch_bootstrap``, also wake when the bootstrap (stage 0) exits and
    answer with an end of stream if it said nothing more: until it reported the init's pid, an init
    it cloned holds the socket open, and would wait for ever for a go-ahead nobody sends."""

    watch_bootstrap: bool = False


@attrs.frozen
class HostSetup:
    """The init waits: do the supervisor's share now (id maps, network), then ask for the next request."""

    pid: int


Request = Send | Recv | HostSetup


@attrs.define
class Handshake:
    """One container start from the supervisor's side, as a generator of I/O requests.

    ``run`` sends the bootstrap message, waits for the init's pid, asks for the host-side work
    (``HostSetup``), lets the init go on, and returns the pid once the workload is exec'd. It raises
    the ``BootstrapError`` the bootstrap reported. ``init_pid`` is known from the first event on, so a
    caller can reap the init whatever happens.
    """

    init_pid: int | None = None
    #: the pty master, when the workload has a terminal: the caller owns it
    console: int | None = None

    def run(self, message: bytes) -> Generator[Request, tuple[bytes, list[int]] | None, int]:
        """Send ``Recv``'s answer as (bytes, descriptors that came with them)."""
        conn = SyncConnection()
        try:
            yield Send(message)
            while True:
                received = yield Recv(watch_bootstrap=self.init_pid is None)
                data, fds = received if received is not None else (b"", [])
                for event in conn.receive_data(data, fds):
                    if isinstance(event, InitStarted):
                        self.init_pid = event.pid
                        yield HostSetup(event.pid)
                        yield Send(conn.continue_bytes())
                    elif isinstance(event, ConsoleReady):
                        self.console = event.fd
                    elif isinstance(event, SetupFailed):
                        self.close_console()
                        raise event.error
                    elif isinstance(event, Execed):
                        assert self.init_pid is not None
                        return self.init_pid
        finally:
            conn.close()

    def close_console(self) -> None:
        if self.console is not None:
            os.close(self.console)
            self.console = None
