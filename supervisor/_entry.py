"""The ``supervisor`` command (``_bin/supervisor`` runs this).

``supervisor run --bundle`` is offered first to a planner (``supervisor-oci planner``;
``_planner_call.py``), before anything else is imported: that call is a new process each time, and
the CLI's own imports would cost it more than the whole container does. The planner is the one on
``$SUPERVISOR_PLANNER`` (a socket's path; empty: none), else the one serving supervisor-oci's
default root. Without a planner, or when it declines, the CLI runs as always (``cli.py``).
"""

import os
import sys


def entry() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["run"] and any(a in ("--bundle", "-b") or a.startswith("--bundle=") for a in argv):
        from ._planner_call import SOCKET_NAME, call

        path = os.environ.get("SUPERVISOR_PLANNER")
        if path is None:
            from .oci import default_root

            path = os.path.join(default_root(), SOCKET_NAME)

        code = call(path, "supervisor", argv) if path else None
        if code is not None:
            os._exit(code)  # nothing of ours is buffered: the planner's worker wrote the output
    from .cli import entry as cli_entry

    cli_entry()
