"""The calls that need no planning: start, state, list, kill, delete, ps, pause, resume.

They read ``state.json`` and touch ``/proc``, the FIFO and the cgroup files, nothing else: no attrs,
no planner, no cffi (but for a start whose startContainer hook failed: its error record is read with
``pipes``). Signals go through a pidfd opened after the start time was checked, so a pid the kernel
reused for another process is never signalled.
"""

import json
import os
import select
import signal
import time
from collections.abc import Callable

from .log import CommandError
from .state import Container, remove_cgroup_dirs

__all__ = ["delete", "kill", "list_containers", "parse_signal", "pause", "ps", "resume", "start", "state"]


def parse_signal(text: str) -> int:
    """``9``, ``KILL`` or ``SIGKILL``."""
    if text.isdigit():
        number = int(text)
        if 0 < number < 65:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        value = getattr(signal, name, None)
        if isinstance(value, signal.Signals):
            return int(value)
    raise CommandError(f"unknown signal {text!r}")


def _pidfd(c: Container) -> int | None:
    """A pidfd of the init, or None when it is gone (checked after opening: no reuse race)."""
    try:
        fd = os.pidfd_open(c.pid)
    except OSError:
        return None
    if not c.alive():
        os.close(fd)
        return None
    return fd


def start(c: Container, warn: Callable[[str], None] | None = None) -> None:
    status = c.status()
    if status == "stopped":
        raise CommandError("cannot start a container that has stopped")
    if status != "created":
        raise CommandError("cannot start an already running container")
    pidfd = _pidfd(c)
    if pidfd is None:
        raise CommandError("cannot start a container that has stopped")
    try:
        fifo = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(pidfd)
        raise CommandError("cannot start an already running container") from None
    try:
        # The init's blocked open for writing returns now; it runs the startContainer hooks, writes
        # one byte and execs; or it writes why a hook failed (one write, shorter than PIPE_BUF: it
        # is all there once any of it is) and exits.
        poller = select.poll()
        poller.register(fifo, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        while True:
            ready = dict(poller.poll())
            if ready.get(fifo, 0) & select.POLLIN:
                try:
                    said = os.read(fifo, 8192)
                except BlockingIOError:
                    continue
                if said == b"0":
                    break
                if said:
                    _stop(pidfd)
                    raise CommandError(_failure(said))
            if pidfd in ready:
                raise CommandError("cannot start a container that has stopped")
            if ready.get(fifo, 0) & select.POLLHUP:
                raise CommandError("cannot start a container that has stopped")
    finally:
        os.close(fifo)
        os.close(pidfd)
    os.unlink(c.fifo)
    if c.data.get("hooks"):
        from .hooks import run_hooks

        run_hooks(c.data["hooks"], "poststart", c.oci_state(), warn or _ignore)


def _failure(said: bytes) -> str:
    """What the init wrote on the FIFO instead of its go-ahead: an error record (a failed
    startContainer hook), worded as for any start."""
    from ..pipes import parse_error_message

    return parse_error_message(said).message


def _stop(pidfd: int) -> None:
    """The init reported a failure and exits; make sure of it, and wait for it, so that the container
    is stopped once we say so."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return
    select.select([pidfd], [], [], 10.0)


def state(c: Container) -> str:
    return json.dumps(c.oci_state(), indent=2)


def list_containers(root: str, quiet: bool, fmt: str) -> str:
    try:
        ids = sorted(os.listdir(root))
    except FileNotFoundError:
        ids = []
    states = []
    for container_id in ids:
        try:
            states.append(Container.load(root, container_id).oci_state())
        except CommandError:
            continue  # being created or deleted right now
    if quiet:
        return "".join(f"{s['id']}\n" for s in states).rstrip("\n")
    if fmt == "json":
        return json.dumps(states)
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(str(s["id"]), str(s["pid"]), str(s["status"]), str(s["bundle"]), str(s["created"]), str(s["owner"]))
             for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _signal_all(c: Container, sig: int) -> None:
    """Every process of the cgroup, forks racing with us included (``kill --all``, which the shim
    uses for a container that shares its pid namespace, and ``delete --force``).

    SIGKILL on a v2 cgroup is one write to ``cgroup.kill``: the kernel kills every process in it,
    and one forked meanwhile too. Otherwise the freezer holds the processes still while we signal
    them by number: frozen, none forks past us, and none exits, so no pid passes to another process
    meanwhile (a v1 ``freezer.state`` FROZEN, or v2's ``cgroup.freeze`` once ``cgroup.events`` says
    frozen; v2 has no other freezer)."""
    if sig == signal.SIGKILL and _kill_v2(c):
        return
    freezer = c.freezer()
    paused = c.frozen()
    if freezer is not None and not paused:
        _freeze(freezer, True)
    try:
        for pid in c.procs():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    finally:
        if freezer is not None and not paused:
            _freeze(freezer, False)
        elif paused and sig == signal.SIGKILL:
            resume(c, check=False)  # a process frozen by v1 dies only once thawed


def _kill_v2(c: Container) -> bool:
    """SIGKILL to the container's v2 cgroup through ``cgroup.kill`` (Linux 5.14); False where there
    is none to write. Its v2 cgroup holds all its processes, on a hybrid host too."""
    for d in c.data.get("cgroup", []):
        if int(d["version"]) == 2:
            try:
                with open(os.path.join(str(d["dir"]), "cgroup.kill"), "w") as f:
                    f.write("1")
            except FileNotFoundError:
                return False
            return True
    return False


def kill(c: Container, sig: int, all_processes: bool) -> None:
    if all_processes and c.cgroup_dirs:
        if c.status() == "stopped" and not c.procs():
            return  # nothing left, which is what the caller wants
        _signal_all(c, sig)
        return
    pidfd = _pidfd(c)
    if pidfd is None:
        raise CommandError("container not running")
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise CommandError("container not running") from None
    finally:
        os.close(pidfd)
    if sig == signal.SIGKILL and c.frozen():
        resume(c, check=False)


def delete(c: Container, force: bool, warn: Callable[[str], None] | None = None) -> None:
    status = c.status()
    if status != "stopped":
        if not force:
            raise CommandError(f"cannot delete container {c.id} that is not stopped: {status}")
        pidfd = _pidfd(c)
        if c.cgroup_dirs:
            _signal_all(c, signal.SIGKILL)
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                # A pidfd is readable once the process has exited (its parent reaps it, not us).
                select.select([pidfd], [], [], 10.0)
            except ProcessLookupError:
                pass
            finally:
                os.close(pidfd)
    elif c.cgroup_dirs and c.procs():
        _signal_all(c, signal.SIGKILL)  # what outlived an init that shared its pid namespace
    if unit := c.data.get("systemd_unit"):
        from .systemd import Systemd

        with Systemd() as manager:  # systemd removes the directories it made for the scope
            manager.stop(str(unit))
    remove_cgroup_dirs(c.cgroup_dirs)
    final = c.oci_state()
    c.remove()
    if c.data.get("hooks"):
        from .hooks import run_hooks

        run_hooks(c.data["hooks"], "poststop", final, warn or _ignore)


def _ignore(_text: str) -> None:
    pass


def ps(c: Container, fmt: str) -> str:
    pids = c.procs()
    if not pids and c.status() == "stopped":
        raise CommandError("container not running")
    if fmt == "json":
        return json.dumps(pids)
    lines = ["PID    CMD"]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        lines.append(f"{pid:<6} {cmd}")
    return "\n".join(lines)


def _freeze(freezer: tuple[int, str], frozen: bool) -> None:
    """v2: write cgroup.freeze. v1: write freezer.state until it reads back (FREEZING passes)."""
    version, directory = freezer
    if version == 2:
        with open(os.path.join(directory, "cgroup.freeze"), "w") as f:
            f.write("1" if frozen else "0")
        if frozen:  # the write asks; the cgroup is frozen once cgroup.events says so
            for _ in range(1000):
                with open(os.path.join(directory, "cgroup.events")) as f:
                    if "frozen 1" in f.read().splitlines():
                        return
                time.sleep(0.001)
        return
    path = os.path.join(directory, "freezer.state")
    want = "FROZEN" if frozen else "THAWED"
    for _ in range(1000):
        with open(path, "w") as f:
            f.write(want)
        with open(path) as f:
            if f.read().strip() == want:
                return
        time.sleep(0.001)
    raise CommandError(f"the freezer did not reach {want}")


def pause(c: Container) -> None:
    status = c.status()
    if status not in ("running", "created"):
        raise CommandError("container not running")
    freezer = c.freezer()
    if freezer is None:
        raise CommandError("cannot pause: the container has no freezer cgroup")
    _freeze(freezer, True)


def resume(c: Container, check: bool = True) -> None:
    if check and c.status() != "paused":
        raise CommandError("container not paused")
    freezer = c.freezer()
    if freezer is not None:
        _freeze(freezer, False)
