"""Attaching the user's terminal to a container's pty, for the foreground CLI (blocking, trio-free).

Our stdin goes to the pty master and the master's output to our stdout. When stdin is a terminal it
is put in raw mode for the while (every key, ^C included, goes to the container's foreground
process, as in ``docker run -t``) and restored however we leave; its size is copied to the pty now
and on every SIGWINCH. The relay ends when ``done_fd`` becomes readable (the init's pidfd, or the
control socket's answer), after draining what the pty still holds, or when our terminal hangs up
(the caller then ends the container: a shell at pid 1 would ignore the pty's SIGHUP and run on).
"""

import errno
import fcntl
import os
import select
import signal
import termios
import tty
from types import FrameType

__all__ = ["attend", "relay", "copy_window_size", "window_size"]


def window_size(fd: int = 0) -> tuple[int, int] | None:
    """(height, width) of the terminal at ``fd``, or None when it is not one."""
    import struct

    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def copy_window_size(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass  # not a terminal


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def relay(master: int, done_fd: int, stdin: int = 0, stdout: int = 1) -> bool:
    """Returns False when our terminal went away (hung up) before the other side was done."""
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None

    def resized(_signum: int, _frame: FrameType | None) -> None:
        copy_window_size(stdin, master)

    old_handler = signal.signal(signal.SIGWINCH, resized)
    try:
        if is_tty:
            copy_window_size(stdin, master)
            tty.setraw(stdin)
        # The master never blocks: input waits in `pending` while the pty's queue is full, so its
        # output is still read (a `cat` filling both directions cannot deadlock us).
        os.set_blocking(master, False)
        pending = bytearray()
        poller = select.poll()
        poller.register(stdin, select.POLLIN)
        poller.register(master, select.POLLIN)
        poller.register(done_fd, select.POLLIN)
        reading_stdin = True
        while True:
            wanted = select.POLLIN | (select.POLLOUT if pending else 0)
            poller.modify(master, wanted)
            if reading_stdin:
                poller.modify(stdin, select.POLLIN if len(pending) < 65536 else 0)
            events = dict(poller.poll())
            if pending and events.get(master, 0) & select.POLLOUT:
                try:
                    del pending[:os.write(master, pending)]
                except BlockingIOError:
                    pass
            if events.get(master, 0) & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    data = os.read(master, 65536)
                except BlockingIOError:
                    data = None
                except OSError as e:
                    if e.errno != errno.EIO:  # EIO: every holder of the pty's other side is gone
                        raise
                    data = b""
                if data == b"":
                    break
                if data:
                    _write_all(stdout, data)
            if reading_stdin and events.get(stdin):
                try:
                    data = os.read(stdin, 65536)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    pending += data
                elif is_tty:
                    return False  # our terminal hung up: nobody is left to talk to the container
                else:
                    reading_stdin = False
                    poller.unregister(stdin)
                    pending += b"\x04"  # end of input, as the pty's reader understands it
            if events.get(done_fd):
                _drain(master, stdout)
                break
            if events.get(stdin, 0) & (select.POLLHUP | select.POLLERR) and is_tty:
                return False
    finally:
        signal.signal(signal.SIGWINCH, old_handler)
        if saved is not None:
            try:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal is gone
    return True


def _drain(master: int, stdout: int) -> None:
    """What the pty still holds, without waiting for more (the master is non-blocking)."""
    try:
        while data := os.read(master, 65536):
            _write_all(stdout, data)
    except OSError:  # BlockingIOError: nothing more now; EIO: the other side is gone
        return


def attend(pidfd: int, console: int | None, signals: "tuple[signal.Signals, ...]") -> None:
    """What a foreground runtime does while its container runs: pass ``signals`` on to the process
    behind ``pidfd`` (unblocking them, in case the caller held them back during the start) and relay
    our terminal to ``console``, a pty master (closed here), until the process is done."""
    def forward(signum: int, _frame: FrameType | None) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass

    for sig in signals:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    if console is not None:
        try:
            if not relay(console, pidfd):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # the user's terminal is gone
        finally:
            os.close(console)
