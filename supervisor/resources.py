"""The OCI ``linux.resources`` block, checked and typed: what a container's cgroup limits are.

Pure data. ``cgroups.py`` writes it to whichever cgroup version the host has. Fields of the OCI
spec that no driver applies yet are a ``SpecError`` naming them, never ignored.
"""

import re
from typing import Any

import attrs

from .errors import SpecError

__all__ = ["Resources", "Memory", "Cpu", "DeviceRule", "HugepageLimit", "parse_resources"]

_I64 = 2**63 - 1
_UNIFIED_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_.]+")


@attrs.frozen
class Memory:
    limit: int | None = None          # bytes; -1 unlimited
    reservation: int | None = None    # soft limit
    swap: int | None = None           # memory + swap (OCI's v1 meaning); -1 unlimited
    swappiness: int | None = None
    disable_oom_killer: bool = False
    #: an update must not set a limit below what the container uses now (runc's refusal)
    check_before_update: bool = False


@attrs.frozen
class Cpu:
    shares: int | None = None
    quota: int | None = None          # microseconds per period; -1 unlimited
    period: int | None = None
    cpus: str | None = None           # cpuset list, "0-1,3"
    mems: str | None = None
    burst: int | None = None          # microseconds a period may borrow from earlier ones
    idle: int | None = None           # 1: SCHED_IDLE for the whole cgroup


@attrs.frozen
class DeviceRule:
    allow: bool
    type: str = "a"                   # a, c or b
    major: int | None = None          # None: any
    minor: int | None = None
    access: str = "rwm"

    def v1(self) -> str:
        """The rule as the v1 devices controller takes it: ``c 1:3 rwm``."""
        if self.type == "a":
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


@attrs.frozen
class DeviceLimit:
    """A block device's limit: a throttle (bytes or operations a second) or a weight."""

    major: int
    minor: int
    value: int


#: OCI's blockIO throttle lists, and what cgroup v1 and v2 call each
THROTTLES = {"throttleReadBpsDevice": ("read_bps_device", "rbps"),
             "throttleWriteBpsDevice": ("write_bps_device", "wbps"),
             "throttleReadIOPSDevice": ("read_iops_device", "riops"),
             "throttleWriteIOPSDevice": ("write_iops_device", "wiops")}


@attrs.frozen
class HugepageLimit:
    page_size: str                    # "2MB", "1GB"
    limit: int


@attrs.frozen
class Resources:
    memory: Memory | None = None
    cpu: Cpu | None = None
    pids_limit: int | None = None     # -1 or 0: unlimited
    blkio_weight: int | None = None
    #: per device: (an OCI throttle list's name, its limits), in THROTTLES' order
    blkio_throttles: tuple[tuple[str, tuple[DeviceLimit, ...]], ...] = ()
    blkio_weight_devices: tuple[DeviceLimit, ...] = ()
    #: cgroup v2 files and their values, written as they are (``linux.resources.unified``)
    unified: tuple[tuple[str, str], ...] = ()
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    devices: tuple[DeviceRule, ...] = ()

    @property
    def empty(self) -> bool:
        return self == Resources()


_SUPPORTED = {
    "memory": {"limit", "reservation", "swap", "swappiness", "disableOOMKiller", "checkBeforeUpdate"},
    "cpu": {"shares", "quota", "period", "cpus", "mems", "burst", "idle"},
    "pids": {"limit"},
    "blockIO": {"weight", "weightDevice", *THROTTLES},
}


def parse_resources(value: Any, path: str = "linux.resources") -> Resources:
    if not isinstance(value, dict):
        raise SpecError(path, "expected an object")
    for key in value:
        if key not in (*_SUPPORTED, "hugepageLimits", "devices", "unified"):
            raise SpecError(f"{path}.{key}", "not supported yet")
    for section, keys in _SUPPORTED.items():
        block = value.get(section)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise SpecError(f"{path}.{section}", "expected an object")
        for key in block:
            if key not in keys:
                raise SpecError(f"{path}.{section}.{key}", "not supported yet")

    def num(section: str, key: str, lo: int = -1, hi: int = _I64) -> int | None:
        v = (value.get(section) or {}).get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise SpecError(f"{path}.{section}.{key}", f"expected an integer in {lo}..{hi}, got {v!r}")
        return v

    def text(section: str, key: str) -> str | None:
        v = (value.get(section) or {}).get(key)
        if v is not None and (not isinstance(v, str) or not all(c.isdigit() or c in ",-" for c in v)):
            raise SpecError(f"{path}.{section}.{key}", f'expected a list like "0-1,3", got {v!r}')
        return v

    memory = None
    if "memory" in value:
        flags = []
        for key in ("disableOOMKiller", "checkBeforeUpdate"):
            flag = value["memory"].get(key, False)
            if not isinstance(flag, bool):
                raise SpecError(f"{path}.memory.{key}", "expected true or false")
            flags.append(flag)
        memory = Memory(num("memory", "limit"), num("memory", "reservation"), num("memory", "swap"),
                        num("memory", "swappiness", 0, 100), *flags)
    cpu = None
    if "cpu" in value:
        cpu = Cpu(num("cpu", "shares", 2, 262144), num("cpu", "quota"), num("cpu", "period", 1000, 1000000),
                  text("cpu", "cpus"), text("cpu", "mems"), num("cpu", "burst", 0), num("cpu", "idle", 0, 1))
    hugepages = []
    for i, item in enumerate(value.get("hugepageLimits") or []):
        where = f"{path}.hugepageLimits[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("pageSize"), str) or not isinstance(
                item.get("limit"), int):
            raise SpecError(where, "expected {pageSize: string, limit: integer}")
        hugepages.append(HugepageLimit(item["pageSize"], item["limit"]))
    def device_limits(key: str, field: str, lo: int, hi: int) -> tuple[DeviceLimit, ...]:
        items = (value.get("blockIO") or {}).get(key) or []
        if not isinstance(items, list):
            raise SpecError(f"{path}.blockIO.{key}", "expected a list")
        out = []
        for i, item in enumerate(items):
            where = f"{path}.blockIO.{key}[{i}]"
            if not isinstance(item, dict) or set(item) - {"major", "minor", field}:
                raise SpecError(where, f"expected {{major, minor, {field}}}")
            major, minor, amount = (item.get(k) for k in ("major", "minor", field))
            if not (isinstance(major, int) and isinstance(minor, int) and isinstance(amount, int)) or any(
                    isinstance(n, bool) for n in (major, minor, amount)) or min(major, minor) < 0 or not (
                    lo <= amount <= hi):
                raise SpecError(where, f"expected major and minor numbers and a {field} in {lo}..{hi}")
            out.append(DeviceLimit(major, minor, amount))
        return tuple(out)

    unified = value.get("unified") or {}
    if not isinstance(unified, dict):
        raise SpecError(f"{path}.unified", "expected an object of cgroup v2 file names and values")
    for name, setting in unified.items():
        # a file of the container's own cgroup: "memory.high", never a path
        if not _UNIFIED_NAME.fullmatch(name) or not isinstance(setting, str):
            raise SpecError(f"{path}.unified.{name}", 'expected a cgroup file name ("memory.high") and a string value')
    throttles = tuple((key, limits) for key in THROTTLES if (limits := device_limits(key, "rate", 0, _I64)))
    weights = device_limits("weightDevice", "weight", 10, 1000)
    devices = []
    for i, item in enumerate(value.get("devices") or []):
        where = f"{path}.devices[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("allow"), bool):
            raise SpecError(where, "expected {allow: bool, type, major, minor, access}")
        kind = item.get("type", "a")
        access = item.get("access", "rwm")
        if kind not in ("a", "c", "b") or not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise SpecError(where, f"bad type {kind!r} or access {access!r}")
        for key in ("major", "minor"):
            if item.get(key) is not None and (not isinstance(item[key], int) or item[key] < 0):
                raise SpecError(f"{where}.{key}", "expected a number >= 0")
        devices.append(DeviceRule(item["allow"], kind, item.get("major"), item.get("minor"), access))
    return Resources(memory=memory, cpu=cpu, pids_limit=num("pids", "limit"),
                     blkio_weight=num("blockIO", "weight", 10, 1000), blkio_throttles=throttles,
                     blkio_weight_devices=weights, unified=tuple(sorted(unified.items())),
                     hugepage_limits=tuple(hugepages),
                     devices=tuple(devices))
