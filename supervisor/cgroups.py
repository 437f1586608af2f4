"""Cgroups: one per container, in every hierarchy the host mounts, v1 and v2 alike.

Theory of operation. ``hierarchies()`` reads what the host mounts (``/proc/self/mountinfo``) and where
the supervisor itself sits in each hierarchy (``/proc/self/cgroup``). A container's cgroup is the same
relative path in each of them: the OCI ``cgroupsPath`` (absolute: from the hierarchy's root; relative:
below the supervisor's own cgroup), or ``supervisor-<pid>/<name>`` below the supervisor's own cgroup.
Each limit is written to the hierarchy that carries its controller, so a v1 host, a pure v2 host and a
hybrid (v1 controllers plus a cgroup2 mount, as on the machine this was written on) take the same
code. The supervisor creates the cgroup and writes the limits before spawning the bootstrap, adds the
bootstrap to it before sending the bootstrap message (the bootstrap blocks reading it), so the init
and everything it forks are born inside. After the container ended the cgroup is removed.

Device rules (``devices.py`` says what they mean) go to the v1 devices controller where the host
mounts one, as lines written to ``devices.deny``/``devices.allow``. cgroup v2 has no devices
controller: every v2 cgroup can carry a BPF device program instead, so where no v1 hierarchy has
``devices``, the v2 hierarchy is the one that carries it (``hierarchies`` says so), and the rules
become a program attached to the container's cgroup (``_bpf.py``; containers with the same rules
share one while any of them runs); the kernel drops it with the last cgroup that has it.
"""

import errno
import os
import signal
import time
from collections.abc import Iterable

import attrs

from . import devices
from .errors import BootstrapError
from .resources import THROTTLES, Resources

__all__ = ["Hierarchy", "Cgroup", "CgroupDriver", "Stats", "hierarchies", "default_path", "BASE_CONTROLLERS",
           "controllers_for", "select", "cgroup_dirs"]


@attrs.frozen
class Hierarchy:
    version: int                  # 1 or 2
    mountpoint: str
    controllers: frozenset[str]   # v1: its controllers (and "name=..."); v2: cgroup.controllers
    own: str                      # the supervisor's cgroup in it, relative to the mountpoint


@attrs.frozen
class Stats:
    memory_bytes: int | None
    pids: int | None
    cpu_ns: int | None


def hierarchies() -> list[Hierarchy]:
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            own[names] = path
    seen: set[frozenset[str]] = set()
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            fstype, _, options = right.split()[:3]
            root, mountpoint = fields[3], fields[4]
            if fstype == "cgroup":
                controllers = frozenset(o for o in options.split(",") if o not in ("rw", "ro"))
                key = next((k for k in own if k and set(k.split(",")) <= controllers), None)
                version = 1
            elif fstype == "cgroup2":
                try:
                    with open(os.path.join(mountpoint, "cgroup.controllers")) as c:
                        controllers = frozenset(c.read().split()) | {"cgroup2"}
                except OSError:
                    continue
                key = ""
                version = 2
            else:
                continue
            if key is None or controllers in seen:
                continue
            seen.add(controllers)
            path = own.get(key, "/")
            if os.path.basename(path) == _LEAF:
                # the leaf we moved ourselves into (see _move_into_leaf) only holds us: containers
                # still go below the cgroup we came from, never into a leaf of the leaf
                path = os.path.dirname(path)
            rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
            out.append(Hierarchy(version, mountpoint, controllers, "" if rel == "." else rel))
    if not any("devices" in h.controllers for h in out):
        # no v1 devices controller: the v2 hierarchy takes device rules, as a BPF program
        out = [attrs.evolve(h, controllers=h.controllers | {"devices"}) if h.version == 2 else h for h in out]
    return out


def cgroup_dirs(path: str, hier: Iterable[Hierarchy]) -> dict[Hierarchy, str]:
    """The host directory of cgroup ``path`` in each hierarchy (absolute: from the hierarchy's root;
    relative: below the supervisor's own cgroup). It never leaves the hierarchy."""
    dirs = {}
    for h in hier:
        base = h.mountpoint if path.startswith("/") else os.path.join(h.mountpoint, h.own)
        target = os.path.normpath(os.path.join(base, path.lstrip("/")))
        if target != h.mountpoint and not target.startswith(h.mountpoint.rstrip("/") + "/"):
            raise BootstrapError(errno.EINVAL, "cgroup", "resolve", path)
        dirs[h] = target
    return dirs


#: what every container's cgroup is for, limits or not: memory, pids and CPU use, and OOM kills
BASE_CONTROLLERS = frozenset({"memory", "pids", "cpuacct"})


def controllers_for(resources: Resources | None, own_pid_ns: bool, device_rules: bool = True) -> frozenset[str]:
    """The controllers a container needs. On a v1 host every hierarchy costs a mkdir, a move and an
    rmdir per container, so a container is put only where it needs to be: the base set, devices
    (every container gets device rules, unless ``device_rules`` is off and the spec has none), the
    freezer to kill it without a pid namespace, and what its limits use."""
    needed = set(BASE_CONTROLLERS)
    if device_rules:
        needed.add("devices")
    if not own_pid_ns:
        needed.add("freezer")
    if resources is not None:
        if resources.cpu is not None:
            c = resources.cpu
            if c.shares is not None or c.quota is not None or c.period or c.burst is not None or c.idle is not None:
                needed.add("cpu")
            if resources.cpu.cpus is not None or resources.cpu.mems is not None:
                needed.add("cpuset")
        if resources.blkio_weight is not None or resources.blkio_throttles or resources.blkio_weight_devices:
            needed.update(("blkio", "io"))
        if resources.hugepage_limits:
            needed.add("hugetlb")
        if resources.unified:
            needed.add("cgroup2")
        if resources.devices:
            needed.add("devices")
    return frozenset(needed)


def select(hier: Iterable[Hierarchy], controllers: frozenset[str] | None) -> list[Hierarchy]:
    """The hierarchies that carry any of ``controllers`` (all of them for None; the one there is on a
    pure v2 host)."""
    hier = list(hier)
    if controllers is None or len(hier) == 1:
        return hier
    return [h for h in hier if h.controllers & controllers]


def default_path(name: str) -> str:
    """A container's cgroup, relative to the supervisor's own."""
    return f"{_ours()}/{name}"


def _ours() -> str:
    """The parent of this process's default cgroup paths: its name says it is this process's."""
    return f"supervisor-{os.getpid()}"


def _controller(filename: str) -> str:
    return filename.split(".", 1)[0]


def rmdir_when_empty(path: str, attempts: int = 50) -> OSError | None:
    """rmdir a cgroup, gone already or not; None once it is gone, else why it is not. A cgroup whose
    last processes are still exiting says EBUSY for a moment: it is tried ``attempts`` times, 2 ms
    apart (blocking)."""
    for attempt in range(attempts):
        try:
            os.rmdir(path)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or attempt == attempts - 1:
                return e
            time.sleep(0.002)
    return None


class CgroupDriver:
    """The cgroups of one supervisor (a ``Supervisor``, or one ``open_container``): which
    directories it made (and so may remove), and whether it may move this process into a leaf of
    its own cgroup. Two supervisors in one process share nothing here; the ``supervisor-<pid>``
    parent that their default paths share is removed by whoever leaves it empty (its name says it
    is this process's)."""

    def __init__(self, *, move_into_leaf: bool = False, hierarchies: Iterable[Hierarchy] | None = None) -> None:
        self.move_into_leaf = move_into_leaf
        #: the directories this driver created and has not removed yet
        self.made: set[str] = set()
        #: the host's hierarchies, when the caller knows them (a ``Host``'s facts)
        self._hierarchies: list[Hierarchy] | None = None if hierarchies is None else list(hierarchies)

    def hierarchies(self) -> list[Hierarchy]:
        """The host's hierarchies, read once for this driver: what the host mounts does not change
        under a supervisor, and reading /proc for it on every start cost more than the device rules."""
        if self._hierarchies is None:
            self._hierarchies = hierarchies()
        return self._hierarchies

    def create(self, path: str, resources: Resources | None, hier: Iterable[Hierarchy] | None = None,
               controllers: frozenset[str] | None = None, device_policy: devices.Policy | None = None
               ) -> "Cgroup":
        """Make the cgroup (in the hierarchies of ``controllers``), write its limits and its device
        policy (``devices.fold`` of the container's rules; None leaves devices alone); on any failure,
        remove what was made. With ``move_into_leaf``: on cgroup v2, when the cgroup holding this
        process is in the way of delegating a controller, move this process into a leaf of it; only
        a program that is the supervisor and nothing else should allow it."""
        hier = list(hier if hier is not None else self.hierarchies())
        _sweep_once(hier)
        cgroup = Cgroup(cgroup_dirs(path, select(hier, controllers)), self)
        try:
            for h, target in cgroup.dirs.items():
                cgroup._make_dirs(h, target)
            if resources is not None:
                cgroup.apply(resources)
            if device_policy is not None:
                cgroup.set_devices(device_policy)
        except OSError as e:
            cgroup.remove()
            if isinstance(e, BootstrapError):
                raise
            raise BootstrapError(e.errno or 0, "cgroup", "create", e.filename or path) from None
        return cgroup


class Cgroup:
    """One container's cgroup directories, one per hierarchy. Made by ``CgroupDriver.create``."""

    def __init__(self, dirs: dict[Hierarchy, str], driver: CgroupDriver) -> None:
        self.dirs = dirs
        self.driver = driver
        #: the device policy in force (None: what the cgroup inherited)
        self.device_policy: devices.Policy | None = None

    def _make_dirs(self, h: Hierarchy, target: str) -> None:
        """mkdir -p, while other containers (in other threads) make and remove the shared parents."""
        for attempt in range(10):
            missing = []
            d = target
            while not os.path.isdir(d):
                missing.append(d)
                d = os.path.dirname(d)
            try:
                for d in reversed(missing):
                    try:
                        os.mkdir(d)
                    except FileExistsError:
                        continue  # made by another container meanwhile
                    self.driver.made.add(d)
                if h.version == 1 and "cpuset" in h.controllers:
                    self._fill_cpusets(h, target)
                return
            except FileNotFoundError:
                if attempt == 9:
                    raise  # a parent keeps being removed under us

    @staticmethod
    def _fill_cpusets(h: Hierarchy, target: str) -> None:
        """A new v1 cpuset is empty, and no task may join an empty one: every cpuset from ours down
        to the container's takes its parent's values, top first. Idempotent, so that containers
        making and removing the shared parents at the same time all end up right."""
        base = os.path.normpath(os.path.join(h.mountpoint, h.own))
        chain = []
        d = target
        while d != base and d.startswith(base + "/"):
            chain.append(d)
            d = os.path.dirname(d)
        for d in reversed(chain):
            for name in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(d, name)) as f:
                    if f.read().strip():
                        continue
                with open(os.path.join(os.path.dirname(d), name)) as f:
                    _write(os.path.join(d, name), f.read().strip())

    # -- limits --------------------------------------------------------------------------------

    def _hierarchy_of(self, controller: str) -> Hierarchy | None:
        return next((h for h in self.dirs if controller in h.controllers), None)

    def _set(self, filename: str, value: str) -> None:
        h = self._hierarchy_of(_controller(filename))
        if h is None:
            raise BootstrapError(errno.ENOTSUP, "cgroup", "set", f"{filename} (no {_controller(filename)} "
                                 f"controller on this host)")
        if h.version == 2:
            self._enable(h, _controller(filename))
        _write(os.path.join(self.dirs[h], filename), value)

    def _enable(self, h: Hierarchy, controller: str) -> None:
        """v2: a controller's files exist in a cgroup only when every ancestor delegates it."""
        target = self.dirs[h]
        chain = []
        d = os.path.dirname(target)
        while d.startswith(h.mountpoint) and len(d) >= len(h.mountpoint):
            chain.append(d)
            if d == h.mountpoint:
                break
            d = os.path.dirname(d)
        own = os.path.normpath(os.path.join(h.mountpoint, h.own))
        for d in reversed(chain):
            with open(os.path.join(d, "cgroup.subtree_control")) as f:
                if controller in f.read().split():
                    continue
            try:
                _write(os.path.join(d, "cgroup.subtree_control"), f"+{controller}")
            except OSError as e:
                # v2 lets no cgroup both hold processes and hand controllers down. When the one
                # holding us is in the way, move ourselves into a leaf of it (what crun and systemd
                # do) and try again, if allowed: the embedding program's process is not ours to
                # move unless it says so; anything else in that cgroup never is.
                if e.errno != errno.EBUSY or d != own:
                    raise
                if not self.driver.move_into_leaf:
                    raise BootstrapError(errno.EBUSY, "cgroup", "delegate controllers from", f"{own} (this "
                                         "process lives in it: run in a cgroup of its own, or allow "
                                         "move_into_leaf=True)") from None
                _move_into_leaf(own)
                _write(os.path.join(d, "cgroup.subtree_control"), f"+{controller}")

    def apply(self, r: Resources) -> None:
        memory = self._hierarchy_of("memory")
        v2 = memory is not None and memory.version == 2
        if r.memory is not None:
            m = r.memory
            if v2:
                if m.limit is not None:
                    self._set("memory.max", _max(m.limit))
                if m.reservation is not None:
                    self._set("memory.low", _max(m.reservation))
                if m.swap is not None:
                    swap = m.swap if m.swap < 0 or m.limit is None or m.limit < 0 else m.swap - m.limit
                    self._set("memory.swap.max", _max(swap))
                if m.swappiness is not None or m.disable_oom_killer:
                    raise BootstrapError(errno.ENOTSUP, "cgroup", "set", "memory.swappiness/disableOOMKiller "
                                         "(not on cgroup v2)")
            else:
                # v1 keeps limit <= memsw at every step: raising both (an update) takes memsw first,
                # lowering both (or a new cgroup, where memsw is unlimited) takes the limit first.
                try:
                    if m.limit is not None:
                        self._set("memory.limit_in_bytes", str(m.limit))
                except OSError as e:
                    if e.errno != errno.EINVAL or m.swap is None:
                        raise
                    self._set("memory.memsw.limit_in_bytes", str(m.swap))
                    self._set("memory.limit_in_bytes", str(m.limit))
                if m.swap is not None:
                    self._set("memory.memsw.limit_in_bytes", str(m.swap))
                if m.reservation is not None:
                    self._set("memory.soft_limit_in_bytes", str(m.reservation))
                if m.swappiness is not None:
                    self._set("memory.swappiness", str(m.swappiness))
                if m.disable_oom_killer:
                    self._set("memory.oom_control", "1")
        if r.cpu is not None:
            c = r.cpu
            cpu_v2 = (h := self._hierarchy_of("cpu")) is not None and h.version == 2
            if c.shares is not None:
                if cpu_v2:
                    self._set("cpu.weight", str(1 + ((c.shares - 2) * 9999) // 262142))
                else:
                    self._set("cpu.shares", str(c.shares))
            if c.quota is not None or c.period is not None:
                if cpu_v2:
                    self._set("cpu.max", f"{_max(c.quota if c.quota is not None else -1)} {c.period or 100000}")
                else:
                    if c.period is not None:
                        self._set("cpu.cfs_period_us", str(c.period))
                    if c.quota is not None:
                        self._set("cpu.cfs_quota_us", str(c.quota))
            if c.burst is not None:  # after the quota it may not exceed
                self._set("cpu.max.burst" if cpu_v2 else "cpu.cfs_burst_us", str(c.burst))
            if c.idle is not None:
                self._set("cpu.idle", str(c.idle))
            if c.cpus is not None:
                self._set("cpuset.cpus", c.cpus)
            if c.mems is not None:
                self._set("cpuset.mems", c.mems)
        if r.pids_limit is not None:
            self._set("pids.max", "max" if r.pids_limit <= 0 else str(r.pids_limit))
        if r.blkio_weight is not None:
            h = self._hierarchy_of("blkio") or self._hierarchy_of("io")
            prefix = "blkio" if h is not None and h.version == 1 else "io"
            for name in (f"{prefix}.bfq.weight", f"{prefix}.weight"):
                if h is not None and os.path.exists(os.path.join(self.dirs[h], name)):
                    self._set(name, str(r.blkio_weight))
                    break
            else:
                raise BootstrapError(errno.ENOTSUP, "cgroup", "set", f"{prefix}.weight (no weight file here)")
        if r.blkio_throttles or r.blkio_weight_devices:
            self._apply_device_limits(r)
        if r.unified:
            self._apply_unified(r.unified)
        for limit in r.hugepage_limits:
            h = self._hierarchy_of("hugetlb")
            suffix = "max" if h is not None and h.version == 2 else "limit_in_bytes"
            self._set(f"hugetlb.{limit.page_size}.{suffix}", str(limit.limit))

    def _apply_unified(self, settings: tuple[tuple[str, str], ...]) -> None:
        """``linux.resources.unified``: files of the container's cgroup v2 directory, as given (after
        the typed limits, which they may refine), their controller delegated down to it first."""
        h = next((h for h in self.dirs if h.version == 2), None)
        if h is None:
            raise BootstrapError(errno.ENOTSUP, "cgroup", "set", "linux.resources.unified (no cgroup v2 here)")
        for name, value in settings:
            if _controller(name) != "cgroup":
                self._enable(h, _controller(name))
            _write(os.path.join(self.dirs[h], name), value)

    def _apply_device_limits(self, r: Resources) -> None:
        """blockIO's per-device throttles and weights: v1 takes a file per kind, v2 one io.max line a
        device with every kind of it."""
        h = self._hierarchy_of("blkio") or self._hierarchy_of("io")
        v1 = h is not None and h.version == 1
        if v1:
            for key, limits in r.blkio_throttles:
                for d in limits:
                    self._set(f"blkio.throttle.{THROTTLES[key][0]}", f"{d.major}:{d.minor} {d.value}")
        else:
            per_device: dict[tuple[int, int], list[str]] = {}
            for key, limits in r.blkio_throttles:
                for d in limits:
                    per_device.setdefault((d.major, d.minor), []).append(f"{THROTTLES[key][1]}={d.value}")
            for (major, minor), settings in per_device.items():
                self._set("io.max", f"{major}:{minor} " + " ".join(settings))
        prefix = "blkio" if v1 else "io"
        for d in r.blkio_weight_devices:
            names = (f"{prefix}.bfq.weight_device", f"{prefix}.weight_device") if v1 else (f"{prefix}.bfq.weight",
                                                                                           f"{prefix}.weight")
            name = next((n for n in names if h is not None and os.path.exists(os.path.join(self.dirs[h], n))), None)
            if name is None:
                raise BootstrapError(errno.ENOTSUP, "cgroup", "set", f"{prefix} device weights (no weight file here)")
            self._set(name, f"{d.major}:{d.minor} {d.value}")

    def update(self, r: Resources) -> None:
        """New limits for a running container: ``apply``, and the device rules (the spec's, then the
        defaults) in place of the ones in force. With ``memory.checkBeforeUpdate``, a memory limit below
        what the container uses now is refused, and nothing changes."""
        m = r.memory
        if m is not None and m.check_before_update and m.limit is not None and m.limit > 0:
            usage = self.stats().memory_bytes
            if usage is not None and usage > m.limit:
                raise BootstrapError(errno.EBUSY, "cgroup", "update",
                                     f"memory limit {m.limit} (below the {usage} bytes in use: checkBeforeUpdate)")
        self.apply(r)
        self.set_devices(devices.fold(devices.effective(r.devices)))

    def set_devices(self, policy: devices.Policy) -> None:
        """Put ``policy`` in force: v1 lines on the devices controller (only the difference from the
        policy in force), or a v2 program in place of the cgroup's."""
        if policy == self.device_policy:
            return
        h = self._hierarchy_of("devices")
        if h is None:
            if policy == devices.DEFAULT_POLICY:
                return  # a host with neither a v1 devices controller nor cgroup v2: runc's defaults go too
            raise BootstrapError(errno.ENOTSUP, "cgroup", "set", "device rules (no devices controller and no "
                                 "cgroup v2 here)")
        target = self.dirs[h]
        if h.version == 1:
            # one open per file, one write per line: opening a cgroup file costs more than the write
            # (12 lines: 33 µs instead of 185 µs here)
            files: dict[str, int] = {}
            try:
                for filename, line in devices.v1_writes(self.device_policy, policy):
                    try:
                        if filename not in files:
                            files[filename] = os.open(os.path.join(target, filename), os.O_WRONLY | os.O_CLOEXEC)
                        os.write(files[filename], line.encode())
                    except OSError as e:
                        raise BootstrapError(e.errno or 0, "cgroup", "set", f"{filename} {line!r} in {target}"
                                             ) from None
            finally:
                for fd in files.values():
                    os.close(fd)
        else:
            try:
                _attach_device_policy(target, policy)
            except OSError as e:
                raise BootstrapError(e.errno or 0, "cgroup", "set", f"device program on {target} ({e.strerror})"
                                     ) from None
        self.device_policy = policy

    # -- processes -----------------------------------------------------------------------------

    def add(self, pid: int) -> None:
        for d in self.dirs.values():
            try:
                _write(os.path.join(d, "cgroup.procs"), str(pid))
            except OSError as e:
                raise BootstrapError(e.errno or 0, "cgroup", "join", d) from None

    def procs(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs.values():
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids.update(int(p) for p in f.read().split())
            except FileNotFoundError:
                pass
        return pids

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (for a container without a pid namespace)."""
        v2 = next((h for h in self.dirs if h.version == 2), None)
        if v2 is not None and os.path.exists(os.path.join(self.dirs[v2], "cgroup.kill")):
            _write(os.path.join(self.dirs[v2], "cgroup.kill"), "1")
            return
        freezer = self._hierarchy_of("freezer")
        state = os.path.join(self.dirs[freezer], "freezer.state") if freezer is not None else None
        if state is not None:
            _write(state, "FROZEN")  # nothing forks while we kill
        try:
            for pid in self.procs():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if state is not None:
                _write(state, "THAWED")

    # -- reading -------------------------------------------------------------------------------

    def _read(self, controller: str, *names: str) -> str | None:
        h = self._hierarchy_of(controller)
        if h is None:
            return None
        for name in names:
            try:
                with open(os.path.join(self.dirs[h], name)) as f:
                    return f.read()
            except FileNotFoundError:
                continue
        return None

    def oom_kills(self) -> int:
        text = self._read("memory", "memory.events", "memory.oom_control") or ""
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def cpu_quota(self) -> tuple[int, int] | None:
        """The CPU bandwidth limit in force, (quota, period) in microseconds, quota -1 for none; None
        without a cpu controller. (v2's ``cpu.max``, or v1's two ``cfs`` files.)"""
        text = self._read("cpu", "cpu.max")  # v2's; v1 has no such file
        if text is not None:
            quota, period = text.split()
            return -1 if quota == "max" else int(quota), int(period)
        v1_quota, v1_period = self._read("cpu", "cpu.cfs_quota_us"), self._read("cpu", "cpu.cfs_period_us")
        if v1_quota is None or v1_period is None:
            return None
        return int(v1_quota), int(v1_period)

    def stats(self) -> Stats:
        memory = self._read("memory", "memory.current", "memory.usage_in_bytes")
        pids = self._read("pids", "pids.current")
        cpu_ns = None
        usage = self._read("cpuacct", "cpuacct.usage")
        if usage is not None:
            cpu_ns = int(usage)
        else:
            stat = self._read("cpu", "cpu.stat") or ""
            for line in stat.splitlines():
                if line.startswith("usage_usec "):
                    cpu_ns = int(line.split()[1]) * 1000
        return Stats(int(memory) if memory else None, int(pids) if pids else None, cpu_ns)

    # -- the end -------------------------------------------------------------------------------

    def remove(self, attempts: int = 50) -> bool:
        """Remove the container's directories, and the parents this process made once no container
        uses them; True when the container's are gone. A cgroup whose last processes are still
        exiting says EBUSY for a moment: try again a few times (blocking: call it from a thread
        when ``attempts`` > 1)."""
        made = self.driver.made
        for d in self.dirs.values():
            if d not in made:
                continue  # an existing cgroup we were pointed at (cgroupsPath): not ours to remove
            if rmdir_when_empty(d, attempts) is not None:
                continue  # still busy: the other hierarchies all the same, and a later try
            made.discard(d)
            parent = os.path.dirname(d)
            while parent in made or os.path.basename(parent) == _ours():
                try:
                    os.rmdir(parent)
                except OSError:
                    break  # another container still uses it: the last one out removes it
                made.discard(parent)
                parent = os.path.dirname(parent)
        return not any(os.path.isdir(d) for d in self.dirs.values())


#: leftovers of killed supervisors are swept once per process (they are no supervisor's own)
_swept = False


def _sweep_once(hier: Iterable[Hierarchy]) -> None:
    """Remove what a supervisor that was killed (SIGKILL leaves no time to clean up) left: the empty
    ``supervisor-<pid>`` cgroups of processes that are gone. Its containers died with it."""
    global _swept
    if _swept:
        return
    _swept = True
    for h in hier:
        base = os.path.join(h.mountpoint, h.own)
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        for entry in entries:
            pid = entry.removeprefix("supervisor-")
            if entry == pid or not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
                continue
            stale = os.path.join(base, entry)
            for child in os.listdir(stale):
                if os.path.isdir(os.path.join(stale, child)):
                    try:
                        os.rmdir(os.path.join(stale, child))
                    except OSError:
                        pass  # still has processes: leave it
            try:
                os.rmdir(stale)
            except OSError:
                pass


_LEAF = "supervisor-leaf"


def _move_into_leaf(own: str) -> None:
    leaf = os.path.join(own, _LEAF)
    os.makedirs(leaf, exist_ok=True)
    _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    try:
        with open(os.path.join(own, "cgroup.procs")) as f:
            others = f.read().split()
    except OSError:
        others = []
    if others:
        raise BootstrapError(errno.EBUSY, "cgroup", "delegate controllers from", f"{own} (other processes "
                             f"live in it: {' '.join(others[:5])}; run the supervisor in a cgroup of its own)")


#: v2 device programs this process loaded, by policy: (id, tag). Loading one costs about 250 µs here
#: (the verifier and the JIT), attaching a loaded one 6 µs, and nearly every container has the
#: default policy: while a cgroup still holds the program, the next container is given the same one
#: by its id. No fd is kept: a program lives as long as the cgroups that have it.
_PROGRAMS: dict[devices.Policy, tuple[int, bytes]] = {}
_PROGRAMS_KEPT = 16


def _attach_device_policy(target: str, policy: devices.Policy) -> None:
    from . import _bpf  # the cffi module: only where a v2 program is needed

    known = _PROGRAMS.get(policy)
    prog = _bpf.reopen_device_program(*known) if known is not None else None
    loaded = prog is None
    if prog is None:
        prog = _bpf.load_device_program(devices.assemble(devices.program(policy)), devices.LICENSE)
    try:
        if loaded:
            if len(_PROGRAMS) >= _PROGRAMS_KEPT:
                _PROGRAMS.clear()
            _PROGRAMS[policy] = _bpf.program_identity(prog)
        cgroup_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _bpf.attach_device_program(cgroup_fd, prog)
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(prog)  # the cgroup holds the program now; it goes with the cgroup


def _max(value: int) -> str:
    return "max" if value < 0 else str(value)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)

