"""Errors and warnings the way runc's callers read them.

containerd's shim decodes ``--log`` as JSON objects ``{"level","msg","time"}`` and shows the last
``error``'s msg (``OCI runtime create failed: <msg>``); stderr is its fallback and what people read.
Callers match on runc's wording (``container does not exist``, ``container not running``), so the
messages that matter use it.
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
        print(msg, file=sys.stderr, flush=True)
        self._write("error", msg)

    def warning(self, msg: str) -> None:
        # create's stderr may be the workload's: with a log, warnings go there only
        if self.path:
            self._write("warning", msg)
        else:
            print(f"warning: {msg}", file=sys.stderr, flush=True)

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self._write("debug", msg)
