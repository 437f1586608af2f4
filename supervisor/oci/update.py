"""``update``: new cgroup limits for a running container, from ``--resources FILE|-`` (the OCI
``LinuxResources`` JSON, what containerd's CRI sends for UpdateContainerResources) or runc's flags."""

import json
import sys
from typing import TYPE_CHECKING, Any

from .args import Options
from .log import CommandError
from .state import Container

if TYPE_CHECKING:
    from ..cgroups import Cgroup
    from ..resources import Resources

__all__ = ["update"]

#: runc's flag -> (section, key); sizes and counts as integers
_FLAGS = {"memory": ("memory", "limit"), "memory_reservation": ("memory", "reservation"),
          "memory_swap": ("memory", "swap"), "cpu_shares": ("cpu", "shares"), "cpu_quota": ("cpu", "quota"),
          "cpu_period": ("cpu", "period"), "cpuset_cpus": ("cpu", "cpus"), "cpuset_mems": ("cpu", "mems"),
          "pids_limit": ("pids", "limit"), "blkio_weight": ("blockIO", "weight")}


def _prune(value: Any) -> Any:
    """Drop nulls and empty objects and lists: callers send every field, set or not."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    return value


def update(c: Container, flags: Options) -> None:
    from ..errors import BootstrapError, SpecError
    from ..resources import parse_resources

    if c.status() == "stopped":
        raise CommandError("container not running")
    source = flags.get("resources")
    doc: dict[str, Any] = {}
    if source is not None:
        try:
            if source == "-":
                doc = json.load(sys.stdin)
            else:
                with open(str(source)) as f:
                    doc = json.load(f)
        except (OSError, ValueError) as e:
            raise CommandError(f"reading the resources: {e}") from None
    for name, (section, key) in _FLAGS.items():
        value = flags.get(name)
        if value is None:
            continue
        text = str(value)
        doc.setdefault(section, {})[key] = text if key in ("cpus", "mems") else _integer(name, text)
    doc = _prune(doc)
    if not doc:
        return
    try:
        resources = parse_resources(doc, "resources")
    except SpecError as e:
        raise CommandError(str(e)) from None
    cgroup = c.cgroup()
    if unit := c.data.get("systemd_unit"):
        _tell_systemd(str(unit), resources, cgroup)
    try:
        cgroup.apply(resources)
    except BootstrapError as e:
        raise CommandError(f"updating the cgroup: {e.message}") from None
    except OSError as e:
        raise CommandError(f"updating the cgroup: {e}") from None


def _tell_systemd(unit: str, resources: "Resources", cgroup: "Cgroup") -> None:
    """A container of the systemd driver: its scope's properties get the new limits first (as runc
    does), so that systemd, when it applies the unit's settings again (a ``daemon-reload``), keeps them
    rather than putting the old ones back; the files are written after, as for any container (systemd
    has no property for some limits). Only the limits the update carries are sent. A quota or a period
    alone takes the other half from the cgroup: systemd's quota is per second of the two."""
    import attrs

    from .systemd import Systemd, SystemdError, limit_properties

    cpu = resources.cpu
    if cpu is not None and (cpu.quota is None) != (cpu.period is None) and (now := cgroup.cpu_quota()):
        quota, period = now
        if cpu.quota is None:
            # v2 writes the period with "max" when the update has no quota (cpu.max takes both)
            v2 = any(h.version == 2 for h in cgroup.dirs if "cpu" in h.controllers)
            cpu = attrs.evolve(cpu, quota=-1 if v2 else quota)
        else:
            cpu = attrs.evolve(cpu, period=period)
        resources = attrs.evolve(resources, cpu=cpu)
    memory_v2 = any(h.version == 2 and "memory" in h.controllers for h in cgroup.dirs)
    props = limit_properties(resources, memory_v2)
    if not props:
        return
    try:
        with Systemd() as manager:
            manager.set_properties(unit, props)
    except SystemdError as e:
        raise CommandError(f"updating unit {unit}: {e}") from None


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"--{name.replace('_', '-')} {text!r}: expected an integer") from None
