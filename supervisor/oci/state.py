"""A container's state directory, ``--root/ID/``, and what its status is.

``state.json`` is written once, at create, and read by every later call; beside it ``fast``, the
same facts as a record the native front end reads (``record.py``); ``exec.fifo`` exists from create
until start. The status is derived, never stored: ``stopped`` when the init is gone (or its pid
now belongs to another process: its start time is kept), ``paused`` when its cgroup is frozen,
``created`` while the FIFO exists, else ``running``.
"""

import json
import os
import time
from typing import TYPE_CHECKING, Any

from . import default_root
from .log import CommandError

if TYPE_CHECKING:
    from ..cgroups import Cgroup

__all__ = ["Container", "default_root", "start_time", "valid_id"]

STATE = "state.json"
FIFO = "exec.fifo"
#: the record the native front end reads (``record.py``, ``native/oci_fast.c``), written with state.json
FAST = "fast"


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
        """state.json, and beside it the record the native front end reads (``record.py``). Only
        ``create`` saves, once; a record that cannot be written is left out (the front end then hands
        every call to us)."""
        from .record import Record, RecordError  # create's path only: it needs cffi and pyroute2

        state = self.oci_state()
        rest = {k: v for k, v in state.items() if k not in ("pid", "status")}
        try:
            record: bytes | None = Record(
                pid=self.pid, start=int(self.data.get("start_time", 0)), hooks=bool(self.data.get("hooks")),
                cgroups=tuple(self.cgroup_dirs), freezer=self.freezer(),
                state=json.dumps(rest)[1:].encode()).encode()
        except RecordError:
            record = None
        if self.data.get("systemd_unit"):
            record = None  # its delete stops the unit, over D-Bus: the Python side's
        for name, data in ((FAST, record), (STATE, json.dumps(self.data).encode())):
            if data is None:
                continue
            tmp = os.path.join(self.dir, name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
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

    def freezer(self) -> tuple[int, str] | None:
        """(version, directory) of the cgroup that pauses the container: its directory in the v1
        freezer hierarchy when it has one (a hybrid host keeps the freezer controller there), else
        its v2 directory (every v2 cgroup but the root has ``cgroup.freeze``). One choice, made here
        and written into the native front end's record, so both front ends pause, resume and read
        the same file."""
        cgroups = self.data.get("cgroup", [])
        for d in cgroups:
            if int(d["version"]) == 1 and "freezer" in d["controllers"]:
                return 1, str(d["dir"])
        for d in cgroups:
            if int(d["version"]) == 2:
                return 2, str(d["dir"])
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
        """The freezer says so. v1: ``freezer.state`` is FROZEN or FREEZING (the effective state: a
        frozen ancestor freezes it too). v2: ``cgroup.freeze`` is 1 (pause asked for it: frozen, or
        freezing), or ``cgroup.events`` says ``frozen 1`` (the effective state: a frozen ancestor).
        The native front end reads the same files the same way."""
        freezer = self.freezer()
        if freezer is None:
            return False
        version, directory = freezer
        try:
            if version == 1:
                return _read(os.path.join(directory, "freezer.state")) in ("FROZEN", "FREEZING")
            return (_read(os.path.join(directory, "cgroup.freeze")) == "1"
                    or "frozen 1" in _read(os.path.join(directory, "cgroup.events")).splitlines())
        except OSError:
            return False

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


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def remove_cgroup_dirs(dirs: list[str]) -> None:
    """rmdir each; a cgroup whose last processes are still exiting is busy for a moment."""
    from ..cgroups import rmdir_when_empty  # not on the path of the calls that need no cgroup

    for d in dirs:
        if (error := rmdir_when_empty(d, 100)) is not None:
            raise CommandError(f"removing cgroup {d}: {error.strerror}")
