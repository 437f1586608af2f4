"""The sync protocol's state machine, fed bytes the way a socket would give them."""

import errno
import struct

import pytest

from supervisor._wire import Stage, Sync
from supervisor.errors import BootstrapError, HookError
from supervisor.pipes import (
    ExecAnnounced,
    Execed,
    Handshake,
    HostSetup,
    InitDied,
    InitStarted,
    Recv,
    Send,
    SetupFailed,
    SyncConnection,
    SyncState,
    parse_error_message,
)


def msg(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack("=II", kind, len(payload)) + payload


def error(stage: int, err: int, op: str, obj: str) -> bytes:
    return msg(Sync.ERROR, struct.pack("=Ii", stage, err) + op.encode() + b"\0" + obj.encode() + b"\0")


def feed(conn: SyncConnection, data: bytes, chunk: int) -> list[object]:
    events: list[object] = []
    for i in range(0, len(data), chunk):
        events += conn.receive_data(data[i:i + chunk])
    return events


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_exec_is_eof_after_the_exec_message(chunk: int) -> None:
    conn = SyncConnection()
    assert feed(conn, msg(Sync.PID, struct.pack("=I", 4242)), chunk) == [InitStarted(4242)]
    assert conn.state == SyncState.AWAIT_EXEC
    assert conn.continue_bytes() == msg(Sync.CONTINUE)
    assert feed(conn, msg(Sync.EXEC), chunk) == [ExecAnnounced()]
    assert conn.state == SyncState.EXEC_NEXT
    assert conn.receive_data(b"") == [Execed()]
    assert conn.state == SyncState.EXECED


def test_eof_before_the_exec_message_is_an_init_that_died() -> None:
    """A crash or an OOM kill during setup closes the socket too: never taken for a running workload."""
    conn = SyncConnection()
    conn.receive_data(msg(Sync.PID, struct.pack("=I", 4242)))
    [failed] = conn.receive_data(b"")
    assert isinstance(failed, SetupFailed) and isinstance(failed.error, InitDied)
    assert conn.state == SyncState.FAILED


def test_an_error_after_the_exec_message_is_a_failure() -> None:
    """execve itself, or the seccomp filter installed after the announcement, can still fail."""
    conn = SyncConnection()
    events = conn.receive_data(msg(Sync.PID, struct.pack("=I", 7)) + msg(Sync.EXEC)
                               + error(Stage.EXEC, errno.ENOENT, "exec", "/bin/nope"))
    assert isinstance(events[-1], SetupFailed) and events[-1].error.errno == errno.ENOENT


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_error_record(chunk: int) -> None:
    conn = SyncConnection()
    events = feed(conn, msg(Sync.PID, struct.pack("=I", 7)) + error(Stage.EXEC, errno.ENOENT, "exec", "/bin/nope"),
                  chunk)
    assert events[0] == InitStarted(7)
    failed = events[1]
    assert isinstance(failed, SetupFailed)
    e = failed.error
    assert (e.errno, e.stage, e.operation, e.object) == (errno.ENOENT, "exec", "exec", "/bin/nope")
    assert e.message == 'exec "/bin/nope": No such file or directory'
    assert conn.receive_data(b"") == []  # final


@pytest.mark.parametrize("err, status, timed_out, output, message", [
    (0, 1 << 8, 0, b"no GPU\n", "exit status 1, output: no GPU"),
    (0, 9, 0, b"", "killed by signal 9"),
    (0, 9, 5, b"partial", "timed out after 5s"),
    (errno.ENOENT, -1, 0, b"", "No such file or directory"),
])
def test_a_hook_record(err: int, status: int, timed_out: int, output: bytes, message: str) -> None:
    """A hook the init ran: the record carries how it ended, Python words it (as for host-side hooks)."""
    record = msg(Sync.ERROR, struct.pack("=Ii", Stage.HOOK, err) + b"createContainer\0/usr/bin/x\0"
                 + struct.pack("=IiI", 2, status, timed_out) + output)
    conn = SyncConnection()
    [_, failed] = conn.receive_data(msg(Sync.PID, struct.pack("=I", 7)) + record)
    assert isinstance(failed, SetupFailed) and isinstance(failed.error, HookError)
    e = failed.error
    assert (e.stage, e.operation, e.object, e.index) == ("hook", "createContainer", "/usr/bin/x", 2)
    assert e.message == f"error running createContainer hook #2 (/usr/bin/x): {message}"
    assert parse_error_message(record).message == e.message  # as supervisor-oci start reads it off the FIFO
    assert "expected" in str(parse_error_message(record[:-1] if output else record + b"x"))
    short = msg(Sync.ERROR, struct.pack("=Ii", Stage.HOOK, 0) + b"createContainer\0/usr/bin/x\0\1\2")
    assert "short hook failure record" in str(parse_error_message(short))


def test_eof_before_pid_is_a_failure() -> None:
    conn = SyncConnection()
    [event] = conn.receive_data(b"")
    assert isinstance(event, SetupFailed) and "without starting the init" in str(event.error)


def test_out_of_order_messages_are_protocol_errors() -> None:
    conn = SyncConnection()
    [event] = conn.receive_data(msg(Sync.CONTINUE))
    assert isinstance(event, SetupFailed) and event.error.errno == errno.EPROTO
    conn = SyncConnection()
    conn.receive_data(msg(Sync.PID, struct.pack("=I", 1)))
    [event] = conn.receive_data(msg(Sync.PID, struct.pack("=I", 1)))
    assert isinstance(event, SetupFailed)
    conn = SyncConnection()
    conn.receive_data(msg(Sync.PID, struct.pack("=I", 1)) + msg(Sync.EXEC) + b"\1\0")
    [event] = conn.receive_data(b"")
    assert isinstance(event, SetupFailed) and "inside a message" in str(event.error)
    with pytest.raises(RuntimeError):
        SyncConnection().continue_bytes()


def test_handshake_runs_host_setup_between_pid_and_continue() -> None:
    hs = Handshake()
    gen = hs.run(b"MSG")
    assert next(gen) == Send(b"MSG")
    assert gen.send(None) == Recv(watch_bootstrap=True)
    assert gen.send((msg(Sync.PID, struct.pack("=I", 99)), [])) == HostSetup(99)
    assert hs.init_pid == 99
    assert gen.send(None) == Send(msg(Sync.CONTINUE))
    assert gen.send(None) == Recv()
    assert gen.send((msg(Sync.EXEC), [])) == Recv()
    with pytest.raises(StopIteration) as done:
        gen.send((b"", []))
    assert done.value.value == 99

    gen = Handshake().run(b"MSG")
    next(gen), gen.send(None)
    with pytest.raises(BootstrapError) as info:
        gen.send((error(Stage.PARSE, errno.EINVAL, "parse bootstrap message", "no argv"), []))
    assert info.value.stage == "parse"
