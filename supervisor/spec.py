"""What a container is: ``ContainerSpec`` and its parts, loaded from an OCI bundle's ``config.json``.

The spec is the user's intent, checked for shape and known values but not yet resolved against the
machine (that is ``plan.py``). Field names follow the OCI runtime spec. Every value is checked where
it is read, and a bad one is a ``SpecError`` carrying its JSON path
(``process.rlimits[1].type: unknown rlimit "RLIMIT_FOO"``).

A field of the OCI spec that is not implemented yet is an error that names it, and so is a field the
OCI spec does not have: a typo must not be silently ignored. (The OCI spec asks runtimes to ignore
unknown properties; we prefer to be told.) ``annotations`` are kept and not interpreted.
``linux.resources`` becomes a typed ``Resources`` (``resources.py``), applied through cgroups.
"""

import contextlib
import contextvars
import json
import os
import resource
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from .errors import SpecError
from .resources import Resources, parse_resources
from .seccomp import Seccomp, parse_seccomp

__all__ = [
    "CAPABILITIES",
    "NAMESPACE_TYPES",
    "Capabilities",
    "ContainerSpec",
    "Device",
    "HOOK_KINDS",
    "Hook",
    "IdMapping",
    "Mount",
    "Namespace",
    "Process",
    "Rlimit",
    "Root",
    "User",
]

#: OCI namespace type -> the CLONE_NEW* flag (kernel ABI, include/uapi/linux/sched.h)
NAMESPACE_TYPES: Mapping[str, int] = {
    "cgroup": 0x02000000,
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "user": 0x10000000,
    "pid": 0x20000000,
    "network": 0x40000000,
    "mount": 0x00020000,
    "time": 0x00000080,
}

#: capability name -> bit (include/uapi/linux/capability.h)
CAPABILITIES: Mapping[str, int] = {name: bit for bit, name in enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
))}

#: rlimit name -> resource number
RLIMITS: Mapping[str, int] = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}

_U32 = 2**32 - 1
_U64 = 2**64 - 1


@attrs.frozen
class Root:
    path: str
    readonly: bool = False


@attrs.frozen
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()
    #: a user name (manifests): resolved inside the rootfs by the planner; uid/gid are then ignored
    name: str | None = None


@attrs.frozen
class Capabilities:
    bounding: frozenset[str] = frozenset()
    effective: frozenset[str] = frozenset()
    permitted: frozenset[str] = frozenset()
    inheritable: frozenset[str] = frozenset()
    ambient: frozenset[str] = frozenset()


@attrs.frozen
class Rlimit:
    type: str
    soft: int
    hard: int


@attrs.frozen
class Process:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: User = User()
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    terminal: bool = False
    #: (height, width) of the terminal's window before the workload runs (``consoleSize``)
    console_size: tuple[int, int] | None = None
    apparmor_profile: str | None = None
    selinux_label: str | None = None


@attrs.frozen
class Hook:
    """A program the runtime runs at a point of the container's life, the state JSON on its stdin."""

    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    #: seconds; None: no limit
    timeout: int | None = None


#: the runtime spec's hook points, in the order of a container's life
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


@attrs.frozen
class Mount:
    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()


@attrs.frozen
class Namespace:
    type: str
    path: str | None = None


@attrs.frozen
class IdMapping:
    container_id: int
    host_id: int
    size: int


@attrs.frozen
class Device:
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


def _default_namespaces() -> tuple[Namespace, ...]:
    return tuple(Namespace(t) for t in ("pid", "network", "ipc", "uts", "mount"))


@attrs.frozen
class ContainerSpec:
    """One container, as the OCI runtime spec describes it. Build it with ``from_bundle``,
    ``from_oci``, or directly in Python (paths absolute)."""

    root: Root
    process: Process
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    namespaces: tuple[Namespace, ...] = attrs.field(factory=_default_namespaces)
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()
    devices: tuple[Device, ...] = ()
    rootfs_propagation: str | None = None
    cgroups_path: str | None = None
    resources: Resources | None = None
    seccomp: Seccomp | None = None
    #: SELinux context for the container's mounts
    mount_label: str | None = None
    annotations: Mapping[str, str] = attrs.field(factory=dict, eq=False)
    #: (hook point, its hooks in order), for the points that have any (``HOOK_KINDS``)
    hooks: tuple[tuple[str, tuple[Hook, ...]], ...] = ()
    #: where relative paths (root.path, bind sources) were resolved from
    bundle: str | None = None
    #: the options our annotations carry, read once, typed: a minimal init as pid 1
    #: (``supervisor.init: "true"``), and a cgroup of the container's own (``supervisor.cgroup:
    #: "false"`` opts out). The planner reads these, never the annotations; unlike the annotations
    #: they are part of a spec's identity, so specs that differ in them never share a plan.
    init: bool = attrs.field(init=False)
    own_cgroup: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "init", self.annotations.get(INIT_ANNOTATION) == "true")
        object.__setattr__(self, "own_cgroup", self.annotations.get(CGROUP_ANNOTATION) != "false")

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], unknown: list[str] | None = None) -> "ContainerSpec":
        """Load ``DIR/config.json``; relative paths in it are relative to DIR. ``unknown``: see
        ``from_oci``."""
        bundle = os.path.abspath(path)
        config_path = os.path.join(bundle, "config.json")
        try:
            with open(config_path, "rb") as f:
                config = json.load(f)
        except FileNotFoundError:
            raise SpecError("", "no such file", config_path) from None
        except (OSError, ValueError) as e:
            raise SpecError("", f"not valid JSON: {e}", config_path) from None
        try:
            return cls.from_oci(config, bundle, unknown)
        except SpecError as e:
            raise e.with_file(config_path) from None

    @classmethod
    def from_oci(cls, config: Any, bundle: str | os.PathLike[str], unknown: list[str] | None = None
                 ) -> "ContainerSpec":
        """Build a spec from a parsed ``config.json`` document. A field we don't know is an error,
        unless ``unknown`` is a list: then its path is appended there and the field ignored (the
        runtime spec's rule for runtimes, which supervisor-oci follows; fields we know but don't
        implement stay errors)."""
        with lenient(unknown):
            return _load(_Obj(config, ""), os.path.abspath(bundle))



# -- reading JSON with paths ---------------------------------------------------------------------

#: where unknown fields go instead of raising (``from_oci``'s ``unknown``), for the current load
_UNKNOWN: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("unknown_fields", default=None)


@contextlib.contextmanager
def lenient(unknown: list[str] | None) -> Iterator[None]:
    """While loading: unknown fields are appended to ``unknown`` (a list) rather than errors."""
    token = _UNKNOWN.set(unknown)
    try:
        yield
    finally:
        _UNKNOWN.reset(token)


class _Obj:
    """A JSON object being read: typed getters that know the path, and a check that every key was
    understood."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SpecError(path or "(top level)", f"expected an object, got {_kind(value)}")
        self.value = value
        self.path = path
        self.used: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.value.get(key)

    def obj(self, key: str) -> "_Obj | None":
        v = self.get(key)
        return None if v is None else _Obj(v, self.at(key))

    def string(self, key: str, default: str | None = None) -> str | None:
        v = self.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise SpecError(self.at(key), f"expected a string, got {_kind(v)}")
        return v

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise SpecError(self.at(key), f"expected true or false, got {_kind(v)}")
        return v

    def integer(self, key: str, default: int | None = None, lo: int = 0, hi: int = _U32) -> int | None:
        v = self.get(key)
        if v is None:
            return default
        return _int(v, self.at(key), lo, hi)

    def items(self, key: str) -> list[tuple[str, Any]]:
        """The items of a list, each with its path."""
        v = self.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise SpecError(self.at(key), f"expected a list, got {_kind(v)}")
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(v)]

    def strings(self, key: str) -> tuple[str, ...]:
        out = []
        for path, item in self.items(key):
            if not isinstance(item, str):
                raise SpecError(path, f"expected a string, got {_kind(item)}")
            out.append(item)
        return tuple(out)

    def done(self, unsupported: Sequence[str] = ()) -> None:
        """Every key must have been read; keys we know but don't implement get their own error."""
        for key in self.value:
            if key in unsupported:
                raise SpecError(self.at(key), "not supported yet")
            if key not in self.used:
                unknown = _UNKNOWN.get()
                if unknown is None:
                    raise SpecError(self.at(key), "unknown field")
                unknown.append(self.at(key))


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _int(v: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(path, f"expected an integer, got {_kind(v)}")
    if not lo <= v <= hi:
        raise SpecError(path, f"{v} is out of range ({lo}..{hi})")
    return v


# -- the loader ----------------------------------------------------------------------------------

_PROCESS_UNSUPPORTED = ("commandLine", "ioPriority",
                        "scheduler", "execCPUAffinity")
_LINUX_UNSUPPORTED = ("timeOffsets", "unified", "intelRdt", "personality",
                      "memoryPolicy", "netDevices")
#: the annotation that asks for a pid-1 init in the container
INIT_ANNOTATION = "supervisor.init"
#: the annotation that keeps a container in the supervisor's cgroup: no limits, stats or OOM
#: reports, but a faster start (no cgroup to make, join and remove)
CGROUP_ANNOTATION = "supervisor.cgroup"
_TOP_UNSUPPORTED = ("solaris", "windows", "vm", "zos")
_PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable")


def _load(top: _Obj, bundle: str) -> ContainerSpec:
    top.string("ociVersion")
    root_obj = top.obj("root")
    if root_obj is None:
        raise SpecError("root", "required")
    root_path = root_obj.string("path")
    if not root_path:
        raise SpecError("root.path", "required")
    root = Root(os.path.join(bundle, root_path), root_obj.flag("readonly"))
    root_obj.done()

    proc_obj = top.obj("process")
    if proc_obj is None:
        raise SpecError("process", "required")
    process = _process(proc_obj)

    mounts = tuple(_mount(path, item) for path, item in top.items("mounts"))
    linux = top.obj("linux") or _Obj({}, "linux")
    namespaces = _namespaces(linux)
    spec = ContainerSpec(
        root=root,
        process=process,
        hostname=top.string("hostname"),
        domainname=top.string("domainname"),
        mounts=mounts,
        namespaces=namespaces,
        uid_mappings=_mappings(linux, "uidMappings"),
        gid_mappings=_mappings(linux, "gidMappings"),
        masked_paths=linux.strings("maskedPaths"),
        readonly_paths=linux.strings("readonlyPaths"),
        sysctl=_sysctl(linux),
        devices=tuple(_device(path, item) for path, item in linux.items("devices")),
        rootfs_propagation=_propagation(linux),
        cgroups_path=linux.string("cgroupsPath"),
        mount_label=linux.string("mountLabel") or None,
        resources=_resources(linux),
        seccomp=None if linux.get("seccomp") is None else parse_seccomp(linux.get("seccomp"), linux.at("seccomp")),
        annotations=_annotations(top),
        hooks=_hooks(top),
        bundle=bundle,
    )
    linux.done(_LINUX_UNSUPPORTED)
    top.done(_TOP_UNSUPPORTED)
    return spec


def _hooks(top: _Obj) -> tuple[tuple[str, tuple[Hook, ...]], ...]:
    h = top.obj("hooks")
    if h is None:
        return ()
    out = []
    for kind in HOOK_KINDS:
        hooks = []
        for path, item in h.items(kind):
            o = _Obj(item, path)
            program = o.string("path")
            if not program or not program.startswith("/"):
                raise SpecError(o.at("path"), "required: an absolute path")
            env = o.strings("env")
            for i, entry in enumerate(env):
                if "=" not in entry:
                    raise SpecError(f"{o.at('env')}[{i}]", f'"{entry}" is not NAME=VALUE')
            hooks.append(Hook(program, o.strings("args"), env, o.integer("timeout", None, lo=1)))
            o.done()
        if hooks:
            out.append((kind, tuple(hooks)))
    h.done()
    return tuple(out)


def _process(p: _Obj) -> Process:
    args = p.strings("args")
    if not args:
        raise SpecError(p.at("args"), "required: at least the program to run")
    env = p.strings("env")
    for i, entry in enumerate(env):
        if "=" not in entry:
            raise SpecError(f"{p.at('env')}[{i}]", f'"{entry}" is not NAME=VALUE')
    cwd = p.string("cwd", "/")
    assert cwd is not None
    if not cwd.startswith("/"):
        raise SpecError(p.at("cwd"), f'"{cwd}" is not an absolute path')
    user = User()
    u = p.obj("user")
    if u is not None:
        user = User(
            uid=u.integer("uid", 0) or 0,
            gid=u.integer("gid", 0) or 0,
            umask=u.integer("umask", None, 0, 0o777),
            additional_gids=tuple(_int(v, path, 0, _U32) for path, v in u.items("additionalGids")),
        )
        u.done(("username",))
    caps = None
    c = p.obj("capabilities")
    if c is not None:
        sets = {}
        for key in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            names = c.strings(key)
            for i, name in enumerate(names):
                if name not in CAPABILITIES:
                    raise SpecError(f"{c.at(key)}[{i}]", f'unknown capability "{name}"')
            sets[key] = frozenset(names)
        c.done()
        caps = Capabilities(**sets)
    rlimits = []
    seen = set()
    for path, item in p.items("rlimits"):
        r = _Obj(item, path)
        kind = r.string("type")
        if kind is None or kind not in RLIMITS:
            raise SpecError(r.at("type"), f'unknown rlimit "{kind}"')
        if kind in seen:
            raise SpecError(r.at("type"), f'"{kind}" given twice')
        seen.add(kind)
        soft = r.integer("soft", None, 0, _U64)
        hard = r.integer("hard", None, 0, _U64)
        if soft is None or hard is None:
            raise SpecError(path, "needs soft and hard")
        if soft > hard:
            raise SpecError(r.at("soft"), f"{soft} is above the hard limit {hard}")
        r.done()
        rlimits.append(Rlimit(kind, soft, hard))
    console_size = None
    if (size := p.obj("consoleSize")) is not None:
        height, width = size.integer("height", 0, 0, 0xFFFF), size.integer("width", 0, 0, 0xFFFF)
        size.done()
        assert height is not None and width is not None
        console_size = (height, width)
    process = Process(
        args=args,
        env=env,
        cwd=cwd,
        user=user,
        capabilities=caps,
        rlimits=tuple(rlimits),
        no_new_privileges=p.flag("noNewPrivileges"),
        oom_score_adj=p.integer("oomScoreAdj", None, -1000, 1000),
        terminal=p.flag("terminal"),
        console_size=console_size,
        apparmor_profile=p.string("apparmorProfile") or None,
        selinux_label=p.string("selinuxLabel") or None,
    )
    p.done(_PROCESS_UNSUPPORTED)
    return process


def _mount(path: str, item: Any) -> Mount:
    m = _Obj(item, path)
    dest = m.string("destination")
    if not dest:
        raise SpecError(m.at("destination"), "required")
    mount = Mount(dest, m.string("type"), m.string("source"), m.strings("options"))
    m.done(("uidMappings", "gidMappings"))
    return mount


def _namespaces(linux: _Obj) -> tuple[Namespace, ...]:
    out = []
    seen = set()
    for path, item in linux.items("namespaces"):
        n = _Obj(item, path)
        kind = n.string("type")
        if kind is None or kind not in NAMESPACE_TYPES:
            raise SpecError(n.at("type"), f'unknown namespace type "{kind}"')
        if kind in seen:
            raise SpecError(n.at("type"), f'"{kind}" given twice')
        seen.add(kind)
        ns_path = n.string("path") or None
        if ns_path is not None and not ns_path.startswith("/"):
            raise SpecError(n.at("path"), f'"{ns_path}" is not an absolute path')
        n.done()
        out.append(Namespace(kind, ns_path))
    return tuple(out)


def _mappings(linux: _Obj, key: str) -> tuple[IdMapping, ...]:
    out = []
    for path, item in linux.items(key):
        m = _Obj(item, path)
        mapping = IdMapping(m.integer("containerID", 0) or 0, m.integer("hostID", 0) or 0, m.integer("size", 0) or 0)
        if mapping.size == 0:
            raise SpecError(m.at("size"), "must be at least 1")
        m.done()
        out.append(mapping)
    return tuple(out)


def _sysctl(linux: _Obj) -> tuple[tuple[str, str], ...]:
    s = linux.obj("sysctl")
    if s is None:
        return ()
    out = []
    for key in sorted(s.value):
        value = s.string(key)
        assert value is not None
        out.append((key, value))
    return tuple(out)


def _device(path: str, item: Any) -> Device:
    d = _Obj(item, path)
    dev_path = d.string("path")
    if not dev_path or not dev_path.startswith("/dev/"):
        raise SpecError(d.at("path"), f'"{dev_path}" is not a path under /dev')
    kind = d.string("type")
    if kind not in ("c", "b", "u", "p"):
        raise SpecError(d.at("type"), f'"{kind}" is not one of c, b, u, p')
    device = Device(
        path=dev_path,
        type=kind,
        major=d.integer("major", 0) or 0,
        minor=d.integer("minor", 0) or 0,
        file_mode=d.integer("fileMode", 0o666, 0, 0o7777) or 0,
        uid=d.integer("uid", 0) or 0,
        gid=d.integer("gid", 0) or 0,
    )
    d.done()
    return device


def _propagation(linux: _Obj) -> str | None:
    value = linux.string("rootfsPropagation")
    if value is not None and value not in _PROPAGATIONS:
        raise SpecError(linux.at("rootfsPropagation"), f'"{value}" is not one of {", ".join(_PROPAGATIONS)}')
    return value


def _resources(linux: _Obj) -> Resources | None:
    value = linux.get("resources")
    return None if value is None else parse_resources(value, linux.at("resources"))


def _annotations(top: _Obj) -> Mapping[str, str]:
    a = top.obj("annotations")
    if a is None:
        return {}
    out = {}
    for key in a.value:
        value = a.string(key)
        assert value is not None
        out[key] = value
    return out
