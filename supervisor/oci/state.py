"""A container's state directory, ``--root/ID/``, and what its status is.

``state.json`` is written once, at create, and read by every later call; ``exec.fifo`` exists from
create until start. The status is derived, never stored: ``stopped`` when the init is gone (or its pid
now belongs to another process: its start time is kept), ``paused`` when its cgroup is frozen,
``created`` while the FIFO exists, else ``running``.
"""

import json
import os
import time
from typing import TYPE_CHECKING, Any

from .log import CommandError

if TYPE_CHECKING:
    from ..cgroups import Cgroup

__all__ = ["Container", "default_root", "start_time", "valid_id"]

STATE = "state.json"
FIFO = "exec.fifo"
#: what the native front end reads (``native/oci_fast.c``), written with state.json
FAST = "fast"


def default_root() -> str:
    if os.geteuid() == 0:
        return "/run/supervisor-oci"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/supervisor-oci-{os.getuid()}"
    return os.path.join(base, "supervisor-oci")


def valid_id(container_id: str) -> str:
    """runc's rule: a name that is safe as one path component."""
    ok = container_id and container_id not in (".", "..") and all(
        c.isalnum() or c in "_+-." for c in container_id)
    if not ok:
        raise CommandError(f"invalid id format: {container_id}")
    return container_id


def start_time(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19]), fields[0].decode()


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class Container:
    """One container's state directory."""

    def __init__(self, root: str, container_id: str, data: dict[str, Any]) -> None:
        self.root = root
        self.id = container_id
        self.dir = os.path.join(root, container_id)
        self.data = data

    # -- loading and saving --------------------------------------------------------------------

    @classmethod
    def load(cls, root: str, container_id: str) -> "Container":
        path = os.path.join(root, valid_id(container_id), STATE)
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise CommandError("container does not exist") from None
        except (OSError, ValueError) as e:
            raise CommandError(f"reading the state of {container_id}: {e}") from None
        return cls(root, container_id, data)

    @classmethod
    def make_dir(cls, root: str, container_id: str) -> "Container":
        """The state directory of a new container, with its FIFO. Raises if the id is taken."""
        os.makedirs(root, mode=0o711, exist_ok=True)
        c = cls(root, valid_id(container_id), {})
        try:
            os.mkdir(c.dir, 0o711)
        except FileExistsError:
            raise CommandError(f"container with id exists: {container_id}") from None
        # 0622: the init writes it after dropping to the container's user
        os.mkfifo(c.fifo, 0o622)
        os.chmod(c.fifo, 0o622)
        return c

    def save(self) -> None:
        """state.json, and ``fast`` for the native front end: one item a line (see oci_fast.c)."""
        state = self.oci_state()
        rest = {k: v for k, v in state.items() if k not in ("pid", "status")}
        lines = [f"pid {self.pid}", f"start {self.data.get('start_time', 0)}",
                 f"hooks {1 if self.data.get('hooks') else 0}"]
        lines += [f"cgroup {d}" for d in self.cgroup_dirs if "\n" not in d]
        lines.append("json " + json.dumps(rest)[1:])
        for name, text in ((FAST, "\n".join(lines) + "\n"), (STATE, json.dumps(self.data))):
            tmp = os.path.join(self.dir, name + ".tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.rename(tmp, os.path.join(self.dir, name))

    def remove(self) -> None:
        for name in (FAST, STATE, FIFO, STATE + ".tmp", FAST + ".tmp"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass

    # -- what it is ------------------------------------------------------------------------------

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, FIFO)

    @property
    def pid(self) -> int:
        return int(self.data.get("pid", 0))

    @property
    def cgroup_dirs(self) -> list[str]:
        return [str(d["dir"]) for d in self.data.get("cgroup", [])]

    def cgroup_file(self, *names: str) -> str | None:
        """The first of ``names`` that exists in one of the container's cgroup directories."""
        for d in self.cgroup_dirs:
            for name in names:
                path = os.path.join(d, name)
                if os.path.exists(path):
                    return path
        return None

    def alive(self) -> bool:
        """The init still runs (a zombie has ended), and it is ours, not a reused pid."""
        if self.pid <= 0:
            return False
        now = start_time(self.pid)
        return now is not None and now[0] == self.data.get("start_time") and now[1] not in "ZX"

    def cgroup(self) -> "Cgroup":
        """The container's cgroup as the library's ``Cgroup`` (for update and events: it imports the
        cgroup driver, which the fast calls do without)."""
        from ..cgroups import Cgroup, CgroupDriver, Hierarchy

        dirs = {Hierarchy(int(d["version"]), str(d["mountpoint"]), frozenset(d["controllers"]), str(d["own"])):
                str(d["dir"]) for d in self.data.get("cgroup", [])}
        return Cgroup(dirs, CgroupDriver())

    def frozen(self) -> bool:
        path = self.cgroup_file("freezer.state", "cgroup.freeze")
        if path is None:
            return False
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            return False
        return value in ("FROZEN", "FREEZING", "1")

    def status(self) -> str:
        if not self.alive():
            return "stopped"
        if self.frozen():
            return "paused"
        return "created" if os.path.exists(self.fifo) else "running"

    def procs(self) -> list[int]:
        """Every process in the container's cgroup (the init alone when it has none)."""
        pids: set[int] = set()
        for d in self.cgroup_dirs:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                continue
            break  # one hierarchy holds them all
        if not self.cgroup_dirs and self.alive():
            pids.add(self.pid)
        return sorted(pids)

    def oci_state(self) -> dict[str, Any]:
        """runc's ``state`` document."""
        status = self.status()
        return {
            "ociVersion": self.data.get("oci_version", "1.0.2"),
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.data.get("bundle", ""),
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
            "owner": self.data.get("owner", ""),
            "annotations": self.data.get("annotations") or {},
        }


def remove_cgroup_dirs(dirs: list[str]) -> None:
    """rmdir each; a cgroup whose last processes are still exiting is busy for a moment."""
    from ..cgroups import rmdir_when_empty  # not on the path of the calls that need no cgroup

    for d in dirs:
        if (error := rmdir_when_empty(d, 100)) is not None:
            raise CommandError(f"removing cgroup {d}: {error.strerror}")
