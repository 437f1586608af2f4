"""Leaving a one-shot command without the interpreter's teardown.

A command such as ``supervisor-oci create`` or ``supervisor run --bundle`` is a new process every
time, and the interpreter's orderly exit (freeing every module, every attrs class, pyroute2's tables)
costs it about 12 ms here, a tenth of a ``create``. Nothing of ours needs that teardown: files are
closed where they are used, containers are handed over or reaped before ``main`` returns, and the
only buffered output is stdout and stderr, which are flushed first. So the commands end with
``os._exit``.
"""

import os
import sys

TYPE_CHECKING = False  # typing itself costs a one-shot command about 9 ms here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

__all__ = ["exit_after"]


def exit_after(main: "Callable[[], int]") -> "NoReturn":
    """Run ``main`` and leave with its code. As at an ordinary exit, an output that cannot be flushed
    (a closed pipe) turns a success into 120; an exception propagates (its traceback is Python's)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)
