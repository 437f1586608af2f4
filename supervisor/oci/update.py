"""``update``: new cgroup limits for a running container, from ``--resources FILE|-`` (the OCI
``LinuxResources`` JSON, what containerd's CRI sends for UpdateContainerResources) or runc's flags."""

import json
import sys
from typing import Any

from .args import Options
from .log import CommandError
from .state import Container

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
    try:
        cgroup.apply(resources)
    except BootstrapError as e:
        raise CommandError(f"updating the cgroup: {e.message}") from None
    except OSError as e:
        raise CommandError(f"updating the cgroup: {e}") from None


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"--{name.replace('_', '-')} {text!r}: expected an integer") from None
