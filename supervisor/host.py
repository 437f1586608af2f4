"""What planning needs to know about the host, probed once.

A plan depends on who we are (root or not: a rootless start gets a user namespace and writes its id
maps differently), which LSMs are on (a label where its LSM is off is an error), which setuid
helpers exist (``newuidmap``/``newgidmap``), and which cgroup hierarchies the host mounts (and where
ours is in each). These are facts about the process and the host, not
about a container: a ``Supervisor`` probes them once and plans every container with them, the CLI
validates with the same facts, and tests plan for a host they describe instead of the one they run
on (a root plan without root).
"""

import functools
import os

import attrs

from .cgroups import Hierarchy, hierarchies

__all__ = ["Host"]


@attrs.frozen
class Host:
    euid: int
    egid: int
    apparmor: bool = False
    selinux: bool = False
    #: the setuid helpers that map more than our own ids (Debian's uidmap), when installed; probed only
    #: for an unprivileged supervisor, the only one that needs them
    newuidmap: str | None = None
    newgidmap: str | None = None
    #: the cgroup hierarchies the host mounts; None: not probed (read when needed)
    cgroups: tuple[Hierarchy, ...] | None = None

    @property
    def rootless(self) -> bool:
        return self.euid != 0

    def hierarchies(self) -> list[Hierarchy]:
        return list(self.cgroups) if self.cgroups is not None else hierarchies()

    @classmethod
    def probe(cls) -> "Host":
        """This host, now (a ``Supervisor`` probes once, when it is made)."""
        euid = os.geteuid()
        newuidmap = newgidmap = None
        if euid != 0:  # only an unprivileged supervisor needs the helpers (and root need not pay for shutil)
            import shutil

            newuidmap, newgidmap = shutil.which("newuidmap"), shutil.which("newgidmap")
        return cls(euid=euid, egid=os.getegid(), apparmor=_apparmor_enabled(), selinux=_selinux_enabled(),
                   newuidmap=newuidmap, newgidmap=newgidmap, cgroups=tuple(hierarchies()))

    @classmethod
    def current(cls) -> "Host":
        """This host, probed once per identity for the calls made without a ``Supervisor``
        (``run``, ``open_container``, ``plan``): a start must not pay for the probe every time."""
        return _probe_as(os.geteuid(), os.getegid())


@functools.lru_cache(maxsize=4)
def _probe_as(euid: int, egid: int) -> Host:
    return Host.probe()


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def _selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")
