"""The runtime spec's hooks, run by supervisor-oci: each with the container's state JSON on stdin.

Where each point runs here:
- ``createRuntime`` and ``prestart`` (its deprecated twin, first): in ``create``, from the host's
  namespaces, once the container's namespaces exist and before the init goes on to mount anything
  (the bootstrap's host-side step); a failure fails ``create``, which stops the container;
- ``poststart``: in ``start``, once the workload was let go; a failure is a warning;
- ``poststop``: in ``delete``, once the container is gone; a failure is a warning.
``createContainer`` and ``startContainer`` run inside the container, which needs the init's help: an
error that names them, for now (``plan(runs_hooks=...)``).

Hooks are stored in ``state.json`` at create as plain lists, so ``start`` and ``delete`` need neither
the bundle nor the planner to run them.
"""

import json
import os
from collections.abc import Callable
from typing import Any

from .log import CommandError

__all__ = ["RUNS", "run_hooks", "to_state"]

#: the hook points supervisor-oci runs
RUNS = ("prestart", "createRuntime", "poststart", "poststop")


def to_state(hooks: Any) -> dict[str, list[dict[str, Any]]]:
    """A spec's hooks as JSON for ``state.json``."""
    return {kind: [{"path": h.path, "args": list(h.args), "env": list(h.env), "timeout": h.timeout} for h in items]
            for kind, items in hooks}


def run_hooks(hooks: dict[str, list[dict[str, Any]]], kind: str, state: dict[str, Any],
              warn: Callable[[str], None] | None = None) -> None:
    """Run the hooks of one point in order. A failure raises ``CommandError``, or with ``warn``, is
    reported through it and the next hook runs."""
    if not hooks.get(kind):
        return
    import subprocess

    document = json.dumps(state).encode()
    for i, hook in enumerate(hooks[kind]):
        args = hook["args"] or [hook["path"]]
        env = dict(entry.split("=", 1) for entry in hook["env"])
        what = f"{kind} hook #{i} ({hook['path']})"
        try:
            result = subprocess.run(args, executable=hook["path"], input=document, env=env, capture_output=True,
                                    timeout=hook["timeout"], check=False, cwd="/", close_fds=True)
        except subprocess.TimeoutExpired:
            problem = f"{what}: timed out after {hook['timeout']}s"
        except OSError as e:
            problem = f"{what}: {os.strerror(e.errno or 0)}"
        else:
            if result.returncode == 0:
                continue
            output = (result.stderr or result.stdout).decode(errors="replace").strip()
            status = (f"exit status {result.returncode}" if result.returncode > 0
                      else f"killed by signal {-result.returncode}")
            problem = f"{what}: {status}" + (f", output: {output}" if output else "")
        if warn is None:
            raise CommandError(f"error running {problem}")
        warn(f"error running {problem}")
