"""What anyio lacks, written once for both of its backends: I/O on raw descriptors.

anyio 4 waits for any descriptor to become readable or writable (``anyio.wait_readable(fd)``: epoll
under trio and under asyncio's selector loop alike), which is all a pidfd needs: it turns readable
when its process exits. It has no stream over a raw pipe or pty, and its descriptor passing belongs
to its own socket stream classes (which do not ask for ``MSG_CMSG_CLOEXEC``). The sync socket, the
output pipes, the pty masters and the control socket are raw descriptors that this package owns, so
each operation here is the same small loop: try the non-blocking call, and on ``EAGAIN`` wait for
readiness and try again. Every function is a checkpoint, as trio's own I/O is: a task that always
finds data still lets the others run, and a cancellation is seen before any byte is consumed.

Descriptors passed in must be non-blocking (``nonblocking`` sets it). Received descriptors are
close-on-exec from the moment they arrive: no bootstrap spawned meanwhile inherits them.
"""

import array
import errno
import os
import socket
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._launch import fds_of

__all__ = ["accept", "nonblocking", "read", "recv", "recv_fds", "send_all", "send_fds"]

T = TypeVar("T")


def nonblocking(fd: int) -> int:
    os.set_blocking(fd, False)
    return fd


async def _once_readable(target: "int | socket.socket", call: Callable[[], T]) -> T:
    """``call()`` (a non-blocking read of ``target``) until it stops saying EAGAIN, waiting for
    readiness in between; a checkpoint either way, as trio's own I/O is."""
    await checkpoint_if_cancelled()
    while True:
        try:
            result = call()
        except BlockingIOError:
            await anyio.wait_readable(target)
            continue  # the wait was the checkpoint
        else:
            await cancel_shielded_checkpoint()
            return result


async def read(fd: int, size: int = 65536) -> bytes:
    """Some bytes from a pipe or pty; ``b""`` at its end (a pty whose other side is gone says EIO)."""
    def call() -> bytes:
        try:
            return os.read(fd, size)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            return b""

    return await _once_readable(fd, call)


async def recv(sock: socket.socket, size: int = 65536) -> bytes:
    return await _once_readable(sock, lambda: sock.recv(size))


async def recv_fds(sock: socket.socket, size: int = 65536, max_fds: int = 4) -> tuple[bytes, list[int]]:
    """A read of a unix socket and the descriptors that came with it (close-on-exec)."""
    data, ancillary, _, _ = await _once_readable(
        sock, lambda: sock.recvmsg(size, socket.CMSG_SPACE(max_fds * 4), socket.MSG_CMSG_CLOEXEC))
    return data, fds_of(ancillary)


async def send_all(sock: socket.socket, data: bytes) -> None:
    await checkpoint_if_cancelled()
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            await anyio.wait_writable(sock)
    await cancel_shielded_checkpoint()


async def send_fds(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """``data`` with ``fds`` attached to its first byte, then the rest of it."""
    await checkpoint_if_cancelled()
    while True:
        try:
            sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            break
        except BlockingIOError:
            await anyio.wait_writable(sock)
    await send_all(sock, data[sent:])


async def accept(listener: socket.socket) -> socket.socket:
    """The next connection, non-blocking and close-on-exec."""
    conn, _ = await _once_readable(listener, listener.accept)
    conn.setblocking(False)
    return conn
