"""The runtime spec's hooks, run by supervisor-oci: each with the container's state JSON on stdin, its
``args``, ``env`` and ``timeout``, the failure worded as runc words it (``error running prestart hook
#0 (/bin/x): exit status 3, output: ...``).

Where each point runs here, in the order of a container's life:
- ``prestart`` (deprecated, first) and ``createRuntime``: in ``create``, by us, from the host's
  namespaces, once the container's namespaces exist and before the init mounts anything (the
  bootstrap's host-side step); a failure fails ``create``, which stops the container;
- ``createContainer``: in ``create``, by the init (``native/hooks.c``), in the container's namespaces
  after its mounts and before pivot_root, with the init's full privileges; the path is the host's.
  A failure fails ``create``, which stops the container: nothing is left;
- ``startContainer``: in ``start``, by the init, once ``start`` opened the exec FIFO and before the
  workload's execve, in the container (after pivot_root: the path is the container's) with the
  workload's credentials and seccomp filter; without ``env`` it gets the workload's (as under runc).
  A failure comes back on the FIFO in place of the go-ahead byte: ``start`` fails with it and the
  container is stopped;
- ``poststart``: in ``start``, once the workload was let go; a failure is a warning;
- ``poststop``: in ``delete``, once the container is gone; a failure is a warning.
The hooks the init runs get the state as the container sees it: status ``creating`` for
createContainer and ``created`` for startContainer (runc's), and the init's pid in the container's
pid namespace, the runtime spec's rule for hooks run in the container namespace (1, with a pid
namespace of its own); the planner writes the text around the pid (``plan.with_hook_state``).

Hooks are stored in ``state.json`` at create as plain lists, so ``start`` and ``delete`` need neither
the bundle nor the planner to run them; ``start`` falls to the Python side (not the native front end)
for a container with hooks, so that a startContainer failure is read and worded.
"""

import json
from collections.abc import Callable
from typing import Any

from .log import CommandError

__all__ = ["RUNS", "run_hooks", "to_state"]

#: the hook points supervisor-oci takes care of: all of them (``plan.INIT_HOOKS`` through the init)
RUNS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


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

    from ..errors import hook_problem

    document = json.dumps(state).encode()
    for i, hook in enumerate(hooks[kind]):
        args = hook["args"] or [hook["path"]]
        env = dict(entry.split("=", 1) for entry in hook["env"])
        try:
            result = subprocess.run(args, executable=hook["path"], input=document, env=env, capture_output=True,
                                    timeout=hook["timeout"], check=False, cwd="/", close_fds=True)
        except subprocess.TimeoutExpired:
            problem = hook_problem(kind, i, hook["path"], timed_out=hook["timeout"])
        except OSError as e:
            problem = hook_problem(kind, i, hook["path"], err=e.errno or 0)
        else:
            if result.returncode == 0:
                continue
            problem = hook_problem(kind, i, hook["path"], code=max(result.returncode, 0),
                                   signal=max(-result.returncode, 0),
                                   output=(result.stderr or result.stdout).decode(errors="replace"))
        if warn is None:
            raise CommandError(problem)
        warn(problem)
