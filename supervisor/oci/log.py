"""Errors and warnings the way runc's callers read them.

containerd's shim decodes ``--log`` as JSON objects ``{"level","msg","time"}`` and shows the last
``error``'s msg (``OCI runtime create failed: <msg>``); stderr is its fallback and what people read.
Callers match on runc's wording (``container does not exist``, ``container not running``), so the
messages that matter use it.

The log is written first and stderr is best effort: stderr may not take a write at all. containerd
gives ``create`` of a container without stdio (a pod's sandbox) its "null IO", one ``/dev/null``
opened read-only for fds 0, 1 and 2, so a write there fails with EBADF; had that failure stopped
us, the shim would find no log and report only an exit status.
"""

import json
import os
import sys
import time

__all__ = ["CommandError", "Log"]


class CommandError(Exception):
    """A command failed; its text is what the caller sees."""


class Log:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_on = debug

    def _write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": stamp})
        else:
            line = f"time={json.dumps(stamp)} level={level} msg={json.dumps(msg)}"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # the log is the caller's; failing to write it must not change our outcome

    def error(self, msg: str) -> None:
        self._write("error", msg)
        _to_stderr(msg)

    def warning(self, msg: str) -> None:
        # create's stderr may be the workload's: with a log, warnings go there only
        if self.path:
            self._write("warning", msg)
        else:
            _to_stderr(f"warning: {msg}")

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self._write("debug", msg)


def _to_stderr(msg: str) -> None:
    """One unbuffered write to fd 2, if it takes it (a failed buffered print would fail again when
    the interpreter flushes at exit, and change the exit status)."""
    try:
        sys.stderr.flush()
        os.write(2, (msg + "\n").encode(errors="replace"))
    except OSError:
        pass
