"""``supervisor-oci``: runc's command line over the supervisor's bootstrap, for containerd and Kubernetes.

Theory of operation. Every call is a new process and the container outlives it, so everything a
later call needs is written at ``create`` into ``--root/ID/``: ``state.json`` (the init's pid and its
start time, against pid reuse; the bundle; the cgroup directories) and ``exec.fifo``.

``create`` plans the bundle (the only call that imports the planner), spawns the C bootstrap as every
start does, and waits on the sync socket. The init sets everything up and closes the sync socket
(so ``create`` may return), then blocks opening ``exec.fifo`` for writing. The bootstrap cloned the init
with ``CLONE_PARENT``, so it is a child of ``create``; when ``create`` exits the kernel hands it to the
caller's subreaper (containerd's shim), which reaps it and reports its exit. No parent-death signal:
the container must outlive ``create``.

``start`` opens the FIFO for reading: the init's open returns, it runs the startContainer hooks,
writes one byte and execs the workload (or writes an error record in its place when a hook failed);
``start`` reads the byte and removes the FIFO, so "created" is "the FIFO exists".
``state``, ``kill``, ``delete``, ``ps``, ``pause`` and ``resume`` read ``state.json`` and touch only
``/proc`` and the cgroup files, with the standard library: they are the calls containerd makes most,
and a Python start is already most of their budget (``python -X importtime -m supervisor.oci``).

Module map: ``main`` (global flags, dispatch), ``args`` (the flag parser), ``log`` (runc's error
wording on stderr and in ``--log``), ``state`` (the state directory), ``lifecycle`` (the fast
commands), ``create`` (create, run, exec), ``hooks`` (the runtime spec's hooks), ``update`` (new
cgroup limits), ``info`` (spec, features), ``record`` (what the native front end reads),
``systemd`` (the systemd cgroup driver), ``planner`` (the service that plans warm).

Config files are read as the runtime spec asks of a runtime: unknown fields are ignored with one
warning in ``--log``; fields we know but don't implement stay errors that name them.
"""

import os


def default_root() -> str:
    """``--root``'s default: root's under /run; an ordinary user's under their runtime directory.
    (Here, not in ``state``, because the ``supervisor`` command looks for a planner there
    with nothing else imported.)"""
    if os.geteuid() == 0:
        return "/run/supervisor-oci"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/supervisor-oci-{os.getuid()}"
    return os.path.join(base, "supervisor-oci")
