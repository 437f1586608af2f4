"""Container output: whole lines from a pipe, to a terminal with the container's name in front, and
to log files rotated by size.

A reader never passes on part of a line: it buffers up to the newline (or ``MAX_LINE`` bytes, so a
program that never writes one cannot grow the buffer without end), and at the end of the stream it
passes on what is left. Writers get one whole line per call and write it with one ``write``, so lines
of different containers never interleave.
"""

import collections
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import attrs

from . import _aio

__all__ = ["MAX_LINE", "FileWriter", "LogBook", "LogLine", "LogSink", "PrefixedOutput", "RotatingFile", "pump_lines"]

MAX_LINE = 1 << 20
_COLORS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)


class LogSink(Protocol):
    def line(self, container: str, stream: str, data: bytes) -> None:
        """One whole line, with its newline."""


class PrefixedOutput:
    """``name | line`` on our stdout (stderr lines too, like ``docker compose up``), coloured by
    container when the output is a terminal.

    The lines are written by a thread of its own: a stdout whose reader stalls (``| less``, a slow
    log collector) must not stop the event loop, hence the supervision of every container. Up to
    ``buffer`` bytes wait for it; past that, lines are dropped and counted (``dropped``), and
    ``close`` says how many. Use it as a context manager, or call ``close``: it writes what waits.
    """

    def __init__(self, fd: int = 1, color: bool | None = None, buffer: int = 64 * 1024 * 1024) -> None:
        self.fd = fd
        self.color = os.isatty(fd) if color is None else color
        self.width = 0
        self.dropped = 0
        self._colors: dict[str, int] = {}
        self._limit = buffer
        self._waiting = 0  # bytes queued, not yet written
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PrefixedOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writer(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                _write_all(self.fd, data)
            except OSError:
                pass  # our stdout is gone: nothing to tell it
            with self._lock:
                self._waiting -= len(data)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self.dropped:
            _write_all(2, f"supervisor: {self.dropped} lines of output dropped: stdout did not keep up\n".encode())
            self.dropped = 0

    def prefix(self, container: str) -> bytes:
        self.width = max(self.width, len(container))
        text = f"{container:<{self.width}} | "
        if self.color:
            color = self._colors.setdefault(container, _COLORS[len(self._colors) % len(_COLORS)])
            text = f"\x1b[{color}m{text}\x1b[0m"
        return text.encode()

    def line(self, container: str, stream: str, data: bytes) -> None:
        data = self.prefix(container) + data
        with self._lock:
            if self._waiting + len(data) > self._limit:
                self.dropped += 1
                return
            self._waiting += len(data)
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="supervisor output", daemon=True)
            self._thread.start()
        self._queue.put(data)


class RotatingFile:
    """A log file that moves to ``.1`` (``.1`` to ``.2``, …) when it would grow past ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = -1
        self._size = 0

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self.backups == 0:
            os.truncate(self.path, 0)
            return
        for i in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{self.path}.{i}"):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
            self._open()
        _write_all(self._fd, data)
        self._size += len(data)

    def write_lines(self, lines: list[bytes]) -> None:
        for data in lines:
            self.write(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FileWriter:
    """One run's lines for a ``RotatingFile``, written in batches by worker threads: a slow or full
    disk never stalls the event loop, hence every other container. ``run`` writes until ``close``
    and then what is left; a write error (ENOSPC, say) is raised from ``run``: in the Supervisor,
    that container's failure."""

    def __init__(self, file: RotatingFile) -> None:
        self.file = file
        self._pending: list[bytes] = []
        self._wake = anyio.Event()
        self._closed = False

    def line(self, data: bytes) -> None:
        self._pending.append(data)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            batch, self._pending = self._pending, []
            if batch:
                await anyio.to_thread.run_sync(self.file.write_lines, batch)
            if self._closed and not self._pending:
                return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            import select

            select.select([], [fd], [])


async def pump_lines(fd: int, emit: Callable[[bytes], None]) -> None:
    """Read a pipe (or a pty master) to its end, calling ``emit`` with every whole line. Takes
    ownership of ``fd``."""
    pending = bytearray()
    try:
        _aio.nonblocking(fd)
        while chunk := await _aio.read(fd):
            pending += chunk
            end = pending.rfind(b"\n")
            if end >= 0:
                start = 0
                while (nl := pending.find(b"\n", start, end + 1)) >= 0:
                    emit(bytes(pending[start:nl + 1]))
                    start = nl + 1
                del pending[:end + 1]
            while len(pending) >= MAX_LINE:
                emit(bytes(pending[:MAX_LINE]) + b"\n")
                del pending[:MAX_LINE]
    finally:
        os.close(fd)
    if pending:
        emit(bytes(pending) + b"\n")


@attrs.frozen
class LogLine:
    """One line of a container's output as the ``LogBook`` keeps it: when it was read, from which
    stream (``stdout`` or ``stderr``), and the bytes with their newline."""

    time: float
    stream: str
    data: bytes


class LogBook:
    """The last lines of every container, and the readers following them (``supervisor logs -f``)."""

    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self._lines: dict[str, collections.deque[LogLine]] = {}
        self._followers: dict[str, list[Callable[[LogLine], None]]] = {}

    def line(self, container: str, stream: str, data: bytes) -> None:
        record = LogLine(time.time(), stream, data)
        self._lines.setdefault(container, collections.deque(maxlen=self.keep)).append(record)
        for follow in self._followers.get(container, ()):
            follow(record)

    def recent(self, container: str) -> list[LogLine]:
        return list(self._lines.get(container, ()))

    def follow(self, container: str, callback: Callable[[LogLine], None]) -> Callable[[], None]:
        """Call ``callback`` with every new line; returns the function that stops it."""
        self._followers.setdefault(container, []).append(callback)
        return lambda: self._followers[container].remove(callback)
