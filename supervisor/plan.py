"""From a ``ContainerSpec`` to a ``Plan``: every decision made, every name resolved, before a spawn.

The bootstrap executes a plan without judgement, so everything that needs some lives here: user and
group names are looked up in the rootfs's own ``/etc/passwd`` and ``/etc/group`` (symlinks resolved
as if the rootfs were ``/``, so they never lead out of it); mount options become flags and data;
capability names become masks; the program is turned into the list of paths ``execve`` will try; the
filesystem work becomes an ordered list of ``Step``s, in the order runc performs it:

    [host root: the whole tree read-only] → mounts → /dev nodes and links → [createContainer hooks]
    → pivot_root → read-only root → sysctls → read-only paths → masked paths

Reading the rootfs (passwd, group, whether a mount source is a directory) is the only I/O here.
"""

import os
import posixpath
import signal
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from . import devices
from ._wire import Mk, Op
from .cgroups import Hierarchy, cgroup_dirs, controllers_for, default_path, select
from .errors import SpecError
from .host import Host
from .resources import Resources
from .seccomp import compile_seccomp
from .spec import (
    CAPABILITIES,
    CGROUP_ANNOTATION,
    NAMESPACE_TYPES,
    RLIMITS,
    ContainerSpec,
    Device,
    Hook,
    IdMapping,
    Mount,
    Namespace,
)

__all__ = ["DEFAULT_PATH", "INIT_HOOKS", "Plan", "Step", "for_container", "plan", "plan_exec", "resolve_in_root",
           "with_hook_state"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# mount(2) flags (include/uapi/linux/mount.h)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_SYNCHRONOUS, MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC = 16, 32, 64, 128
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24

#: option -> (sets the flag?, flag)
_OPTION_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (True, 0),
    "ro": (True, MS_RDONLY), "rw": (False, MS_RDONLY),
    "nosuid": (True, MS_NOSUID), "suid": (False, MS_NOSUID),
    "nodev": (True, MS_NODEV), "dev": (False, MS_NODEV),
    "noexec": (True, MS_NOEXEC), "exec": (False, MS_NOEXEC),
    "sync": (True, MS_SYNCHRONOUS), "async": (False, MS_SYNCHRONOUS),
    "dirsync": (True, MS_DIRSYNC),
    "mand": (True, MS_MANDLOCK), "nomand": (False, MS_MANDLOCK),
    "noatime": (True, MS_NOATIME), "atime": (False, MS_NOATIME),
    "nodiratime": (True, MS_NODIRATIME), "diratime": (False, MS_NODIRATIME),
    "relatime": (True, MS_RELATIME), "norelatime": (False, MS_RELATIME),
    "strictatime": (True, MS_STRICTATIME), "nostrictatime": (False, MS_STRICTATIME),
    "bind": (True, MS_BIND), "rbind": (True, MS_BIND | MS_REC),
}
_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
_UNSUPPORTED_OPTIONS = {"tmpcopyup", "idmap", "ridmap", "rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev",
                        "rnoexec", "rexec", "rnoatime", "ratime", "rrelatime", "rnorelatime",
                        "rstrictatime", "rnostrictatime", "rnodiratime", "rdiratime", "nosymfollow",
                        "rnosymfollow", "copy-symlink", "remount"}

#: the devices every container has (runc's list), besides those its config adds
_DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3), Device("/dev/zero", "c", 1, 5), Device("/dev/full", "c", 1, 7),
    Device("/dev/random", "c", 1, 8), Device("/dev/urandom", "c", 1, 9), Device("/dev/tty", "c", 5, 0),
)
#: The host root is bound here (in the container's mount namespace only) before pivot_root: a
#: directory every Linux host has, covered just for the moment of the pivot.
_HOST_ROOT_BIND = "/tmp"
#: what may be mounted over the container's procfs: the files lxcfs serves (runc allows the same)
_PROC_MOUNTABLE = frozenset({"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
                             "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
                             "/proc/sys/kernel/ns_last_pid"})

_DEV_SYMLINKS = (("pts/ptmx", "/dev/ptmx"), ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                 ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"))
_DEVICE_TYPES = {"c": 0o020000, "u": 0o020000, "b": 0o060000, "p": 0o010000}

#: sysctl prefixes and the namespace that makes them the container's own (runc's rules)
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


@attrs.frozen
class Step:
    """One filesystem operation of the init; fields as in ``wire.h``'s SV_STEP_*."""

    op: Op
    dst: str | None = None
    src: str | None = None
    fstype: str | None = None
    flags: int = 0
    remount_flags: int = 0
    propagation: int = 0
    data: str | None = None
    mode: int = 0
    major: int = 0
    minor: int = 0
    uid: int = 0
    gid: int = 0
    mktype: Mk = Mk.NONE
    #: ``src`` is a cgroup hierarchy's base: the bootstrap appends the container's cgroup path
    cgroup: bool = False


@attrs.frozen
class Plan:
    """Everything the bootstrap will do, as plain data; ``bootstrap.encode`` turns it into bytes."""

    args: tuple[str, ...]
    exec_paths: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str | None = None
    clone_flags: int = 0
    ns_paths: tuple[tuple[int, str], ...] = ()
    oom_score_adj: int | None = None
    rootfs: str | None = None
    #: where to bind the rootfs for pivot_root, when not onto itself (the host root)
    rootfs_bind: str | None = None
    root_propagation: int = 0
    steps: tuple[Step, ...] = ()
    hostname: str | None = None
    domainname: str | None = None
    rlimits: tuple[tuple[int, int, int], ...] = ()
    umask: int | None = None
    no_new_privs: bool = False
    uid: int | None = None
    gid: int | None = None
    setgroups: bool = False
    groups: tuple[int, ...] = ()
    #: bounding, effective, permitted, inheritable, ambient; None leaves them as they are
    caps: tuple[int, int, int, int, int] | None = None
    pdeathsig: int = 0
    become_root: bool = False
    #: the compiled seccomp filter (BPF instructions) and its SECCOMP_FILTER_FLAG_* flags
    seccomp: bytes | None = None
    seccomp_flags: int = 0
    #: a pty as the workload's stdio, its master handed to the supervisor
    terminal: bool = False
    #: (height, width) of the pty before the workload runs
    console_size: tuple[int, int] | None = None
    #: LSM labels for the workload's execve
    apparmor_profile: str | None = None
    selinux_label: str | None = None
    #: the container's cgroup (relative: below the supervisor's own), the controllers it is made
    #: for (its hierarchies), and its limits
    cgroup: str | None = None
    cgroup_controllers: frozenset[str] = frozenset()
    resources: Resources | None = None
    #: the device rules in force in the cgroup (the spec's, then runc's defaults; None: left alone)
    device_policy: devices.Policy | None = None
    #: keep a minimal init as pid 1 (annotation ``supervisor.init = "true"``)
    pid1_init: bool = False
    #: bring "lo" up, as runc does in a new network namespace
    loopback_up: bool = False
    #: supervisor-oci's create: once set up, the init waits before execve until this FIFO (a host
    #: path) is opened for reading
    exec_fifo: str | None = None
    #: fds 3..3+N-1 of the caller go to the workload as they are (supervisor-oci's --preserve-fds)
    preserve_fds: int = 0
    #: the hooks the init runs inside the container: createContainer at the ``Op.HOOKS`` step,
    #: startContainer once started, before execve (argv and env complete)
    create_hooks: tuple[Hook, ...] = ()
    start_hooks: tuple[Hook, ...] = ()
    #: their state JSON, split where the init writes its pid: createContainer's text before the pid,
    #: startContainer's, and the text after it (``with_hook_state``)
    hook_state: tuple[str, str, str] | None = None
    # host-side work, done by the supervisor between the init's pid and its go-ahead
    uid_map: str | None = None
    gid_map: str | None = None
    setgroups_deny: bool = False
    #: newuidmap / newgidmap, when an unprivileged supervisor maps more than its own ids
    uid_map_helper: str | None = None
    gid_map_helper: str | None = None


def for_container(plan: Plan, spec: ContainerSpec, name: str) -> Plan:
    """A spec's plan for container ``name``: only its cgroup differs from one container to the next
    (which is why a supervisor plans a spec once and its replicas and restarts share the rest)."""
    if plan.cgroup is None:
        return plan
    return attrs.evolve(plan, cgroup=spec.cgroups_path or default_path(name))


#: the hook points the init runs, inside the container; the others are the caller's, on the host
INIT_HOOKS = ("createContainer", "startContainer")


def plan(spec: ContainerSpec, name: str = "container", host: Host | None = None,
         runs_hooks: tuple[str, ...] = ()) -> Plan:
    """Resolve a spec into a plan for container ``name`` (which names its cgroup unless the spec's
    ``cgroupsPath`` does), on ``host`` (default: this one, probed now). Raises ``SpecError`` naming
    the field at fault. ``runs_hooks`` names the hook points the caller takes care of, others are
    errors: it runs those on the host itself (prestart, createRuntime, poststart, poststop), and those
    of ``INIT_HOOKS`` are planned for the init, which needs their state (``with_hook_state``)."""
    for kind, _ in spec.hooks:
        if kind not in runs_hooks:
            raise SpecError(f"hooks.{kind}", "not supported here" if runs_hooks else
                            "hooks are run by supervisor-oci and `supervisor run --bundle` only")
    host = Host.current() if host is None else host
    rootless = host.rootless
    if rootless:
        spec = _rootless(spec, host)
    cgroup_path = spec.cgroups_path or default_path(name)
    cgroup: str | None = cgroup_path
    if not spec.own_cgroup:
        if spec.resources is not None and not spec.resources.empty:
            raise SpecError(f"annotations.{CGROUP_ANNOTATION}", "a container without a cgroup cannot have "
                                                                "linux.resources")
        cgroup = None
    elif rootless and not _cgroups_writable(host, cgroup_path, controllers_for(spec.resources, True, False)):
        if spec.resources is not None and not spec.resources.empty:
            raise SpecError("linux.resources", "cgroup limits need root, or a cgroup delegated to you")
        cgroup = None  # the container stays in ours: no limits, no cgroup of its own
    new = {ns.type for ns in spec.namespaces if ns.path is None}
    joined = {ns.type: ns.path for ns in spec.namespaces if ns.path is not None}
    granted = spec.process.capabilities
    if cgroup is None and not rootless and "user" not in new and "user" not in joined and (
            granted is None or "CAP_MKNOD" in granted.bounding):
        # The device rules live in the cgroup: without one, a node made with CAP_MKNOD opens anything.
        raise SpecError(f"annotations.{CGROUP_ANNOTATION}", "a container without a cgroup has no device rules: "
                        "drop CAP_MKNOD from process.capabilities.bounding, or give it a user namespace")
    device_policy = _device_policy(spec, cgroup is not None, rootless)
    controllers = controllers_for(spec.resources, "pid" in new or "pid" in joined, device_policy is not None)
    if "time" in new or "time" in joined:
        raise SpecError("linux.namespaces", 'the "time" namespace is not supported yet')
    clone_flags = 0
    for kind in new:
        clone_flags |= NAMESPACE_TYPES[kind]
    ns_paths = tuple((NAMESPACE_TYPES[kind], path) for kind, path in joined.items())

    in_userns = "user" in new or "user" in joined
    if "user" in new and not (spec.uid_mappings and spec.gid_mappings):
        raise SpecError("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings")
    if (spec.uid_mappings or spec.gid_mappings) and "user" not in new:
        raise SpecError("linux.uidMappings", "id mappings need a new user namespace")
    if spec.hostname is not None and "uts" not in new:
        raise SpecError("hostname", "setting the hostname needs a new uts namespace")
    if spec.domainname is not None and "uts" not in new:
        raise SpecError("domainname", "setting the domainname needs a new uts namespace")

    rootfs = os.path.realpath(spec.root.path)
    if not os.path.isdir(rootfs):
        raise SpecError("root.path", f'"{spec.root.path}" is not a directory')
    user = _resolve_user(spec, rootfs)
    env = _environment(spec.process.env, user.home)
    process = spec.process

    steps: list[Step] = []
    root_propagation = 0
    if "mount" in new:
        root_propagation, steps = _filesystem(spec, rootfs, in_userns, cgroup or "", "network" in new,
                                              controllers if cgroup else frozenset(), host)
    elif "mount" in joined:
        if spec.mounts or spec.masked_paths or spec.readonly_paths:
            raise SpecError("mounts", "a joined mount namespace takes no mounts")
        rootfs = ""
    else:
        for field, value in (("mounts", spec.mounts), ("linux.maskedPaths", spec.masked_paths),
                             ("linux.readonlyPaths", spec.readonly_paths)):
            if value:
                raise SpecError(field, "needs a new mount namespace")
        if rootfs != "/":
            steps = [Step(Op.CHROOT)]
    steps += _sysctl_steps(spec, new, joined)
    if steps and "mount" in new:
        steps += [Step(Op.READONLY, dst=_dest(p, f"linux.readonlyPaths[{i}]"))
                  for i, p in enumerate(spec.readonly_paths)]
        steps += [Step(Op.MASK, dst=_dest(p, f"linux.maskedPaths[{i}]")) for i, p in enumerate(spec.masked_paths)]

    hooks = dict(spec.hooks)
    create_hooks = _init_hooks(hooks.get("createContainer", ()), ())
    start_hooks = _init_hooks(hooks.get("startContainer", ()), env)
    if create_hooks:
        steps = _with_hook_step(steps)

    seccomp, seccomp_flags = compile_seccomp(spec.seccomp) if spec.seccomp is not None else (None, 0)
    _check_lsm(spec, host)
    setgroups_deny, helpers = _map_writers(spec, host)
    if setgroups_deny and user.groups:
        raise SpecError("process.user.additionalGids", "supplementary groups need root, or newgidmap and "
                                                       "ranges in /etc/subgid")
    caps = None
    if process.capabilities is not None:
        c = process.capabilities
        caps = (_mask(c.bounding), _mask(c.effective), _mask(c.permitted), _mask(c.inheritable),
                _mask(c.ambient))

    return Plan(
        args=process.args,
        exec_paths=_exec_paths(process.args[0], env),
        env=env,
        cwd=process.cwd,
        clone_flags=clone_flags,
        ns_paths=ns_paths,
        oom_score_adj=process.oom_score_adj,
        rootfs=rootfs or None,
        rootfs_bind=_HOST_ROOT_BIND if rootfs == "/" and "mount" in new else None,
        root_propagation=root_propagation,
        steps=tuple(steps),
        hostname=spec.hostname,
        domainname=spec.domainname,
        rlimits=tuple((RLIMITS[r.type], r.soft, r.hard) for r in process.rlimits),
        umask=0o022 if process.user.umask is None else process.user.umask,
        no_new_privs=process.no_new_privileges,
        uid=user.uid,
        gid=user.gid,
        setgroups=not setgroups_deny,
        groups=user.groups,
        caps=caps,
        pdeathsig=int(signal.SIGKILL),
        become_root=in_userns,
        pid1_init=spec.init,
        loopback_up="network" in new,
        cgroup=cgroup,
        cgroup_controllers=controllers,
        resources=spec.resources,
        device_policy=device_policy,
        seccomp=seccomp,
        seccomp_flags=seccomp_flags,
        terminal=process.terminal,
        console_size=process.console_size,
        apparmor_profile=process.apparmor_profile,
        selinux_label=process.selinux_label,
        uid_map=_id_map(spec.uid_mappings),
        gid_map=_id_map(spec.gid_mappings),
        setgroups_deny=setgroups_deny,
        uid_map_helper=helpers[0],
        gid_map_helper=helpers[1],
        create_hooks=create_hooks,
        start_hooks=start_hooks,
    )


# -- hooks run by the init -----------------------------------------------------------------------

def _init_hooks(hooks: tuple[Hook, ...], default_env: tuple[str, ...]) -> tuple[Hook, ...]:
    """As the init execs them: argv is ``args``, or the path alone (as Go's exec does for runc); a
    hook without ``env`` gets ``default_env`` (runc gives startContainer hooks the container's)."""
    return tuple(Hook(h.path, h.args or (h.path,), h.env or default_env, h.timeout) for h in hooks)


def _with_hook_step(steps: list[Step]) -> list[Step]:
    """The createContainer point: after the mounts and /dev, before pivot_root or chroot (where there
    is neither, before the rest: sysctls are written from inside)."""
    at = next((i for i, s in enumerate(steps) if s.op in (Op.PIVOT, Op.CHROOT)), 0)
    return [*steps[:at], Step(Op.HOOKS), *steps[at:]]


def with_hook_state(plan: Plan, state: Mapping[str, Any]) -> Plan:
    """The plan with the state JSON its init's hooks read on stdin: the runtime spec's state
    document, whose fields but ``status`` and ``pid`` are ``state`` (ociVersion, id, bundle,
    annotations), with status "creating" for createContainer and "created" for startContainer (as
    runc's), and the pid the init writes in (its own, as the container sees it: the spec's rule for
    hooks run in the container namespace)."""
    if not plan.create_hooks and not plan.start_hooks:
        return plan
    import json

    after = dict(state)
    before = {key: after.pop(key) for key in ("ociVersion", "id") if key in after}

    def head(status: str) -> str:
        return json.dumps({**before, "status": status})[:-1] + ', "pid": '

    tail = ", " + json.dumps(after)[1:] if after else "}"
    return attrs.evolve(plan, hook_state=(head("creating"), head("created"), tail))


# -- rootless ----------------------------------------------------------------------------------

def _rootless(spec: ContainerSpec, host: Host) -> ContainerSpec:
    """An unprivileged supervisor needs a user namespace for everything: when the spec has none,
    give it one that maps root inside to our own ids (like ``unshare --map-root-user``)."""
    if any(ns.type == "user" for ns in spec.namespaces):
        return spec
    return attrs.evolve(spec, namespaces=(Namespace("user"),) + spec.namespaces,
                        uid_mappings=(IdMapping(0, host.euid, 1),), gid_mappings=(IdMapping(0, host.egid, 1),))


def _map_writers(spec: ContainerSpec, host: Host) -> tuple[bool, tuple[str | None, str | None]]:
    """Who writes the id maps. Root writes any. An unprivileged process may write one mapping of its
    own id, after "deny" in setgroups; anything more goes through the setuid helpers newuidmap and
    newgidmap (Debian's uidmap), which check /etc/subuid and /etc/subgid."""
    if not host.rootless or not spec.uid_mappings:
        return False, (None, None)
    own_uid = len(spec.uid_mappings) == 1 and spec.uid_mappings[0].host_id == host.euid and \
        spec.uid_mappings[0].size == 1
    own_gid = len(spec.gid_mappings) == 1 and spec.gid_mappings[0].host_id == host.egid and \
        spec.gid_mappings[0].size == 1
    helpers: list[str | None] = []
    for own, tool, field in ((own_uid, "newuidmap", "linux.uidMappings"), (own_gid, "newgidmap", "linux.gidMappings")):
        if own:
            helpers.append(None)
            continue
        path = host.newuidmap if tool == "newuidmap" else host.newgidmap
        if path is None:
            raise SpecError(field, f"mapping more than your own id needs {tool} (Debian's uidmap) and "
                                   f"ranges in /etc/sub{'uid' if tool == 'newuidmap' else 'gid'}")
        helpers.append(path)
    return own_gid, (helpers[0], helpers[1])


def _device_policy(spec: ContainerSpec, has_cgroup: bool, rootless: bool) -> devices.Policy | None:
    """runc's device rules for a container with a cgroup: the spec's, then the defaults. Left out for
    a rootless container that asks for none: it cannot mknod, and a v2 program needs privileges."""
    rules = spec.resources.devices if spec.resources is not None else ()
    if not has_cgroup or (rootless and not rules):
        return None
    try:
        return devices.fold(devices.effective(rules))
    except ValueError as e:
        raise SpecError("linux.resources.devices", str(e)) from None


def _cgroups_writable(host: Host, cgroup: str, controllers: frozenset[str]) -> bool:
    """Whether we may make ``cgroup`` in the hierarchies it needs (root, or a delegated subtree)."""
    try:
        dirs = cgroup_dirs(cgroup, select(host.hierarchies(), controllers))
    except OSError:
        return False
    for d in dirs.values():
        existing = d
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK):
            return False
    return True


def _check_lsm(spec: ContainerSpec, host: Host) -> None:
    """A label asked for on a host without its LSM is an error: silently unconfined is worse."""
    if spec.process.apparmor_profile is not None and not host.apparmor:
        raise SpecError("process.apparmorProfile", "AppArmor is not enabled on this host")
    if spec.process.selinux_label is not None and not host.selinux:
        raise SpecError("process.selinuxLabel", "SELinux is not enabled on this host")
    if spec.mount_label is not None and not host.selinux:
        raise SpecError("linux.mountLabel", "SELinux is not enabled on this host")


# -- paths inside the rootfs ---------------------------------------------------------------------

def resolve_in_root(root: str, path: str) -> str:
    """The host path that ``path`` names inside ``root``, resolving symlinks as if ``root`` were
    ``/``: an absolute link target starts again at ``root``, and ``..`` stops at it. Missing
    components are kept as they are."""
    parts = deque(p for p in path.split("/") if p)
    done: list[str] = []
    links = 0
    while parts:
        part = parts.popleft()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        try:
            target = os.readlink(os.path.join(root, *done, part))
        except OSError:
            done.append(part)  # not a symlink, or not there
            continue
        links += 1
        if links > 40:
            raise SpecError("", f'too many symlinks resolving "{path}" in {root}')
        if target.startswith("/"):
            done = []
        parts.extendleft(reversed([p for p in target.split("/") if p]))
    return os.path.join(root, *done)


def _dest(path: str, field: str) -> str:
    if not path.startswith("/"):
        raise SpecError(field, f'"{path}" is not an absolute path')
    clean = posixpath.normpath("/" + path.lstrip("/"))
    while clean.startswith("/.."):
        clean = posixpath.normpath(clean[3:] or "/")
    return clean


def _inside(rootfs: str, path: str) -> str:
    """``path`` with the rootfs's symlinks resolved, as a path inside the rootfs."""
    resolved = resolve_in_root(rootfs, path)
    return "/" + os.path.relpath(resolved, rootfs) if resolved != rootfs else "/"


# -- users ---------------------------------------------------------------------------------------

@attrs.frozen
class _User:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _read_db(rootfs: str, name: str) -> list[list[str]]:
    try:
        with open(resolve_in_root(rootfs, f"/etc/{name}"), encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def _resolve_user(spec: ContainerSpec, rootfs: str) -> _User:
    """runc's rules: the ids as given (a name is looked up), HOME from the passwd entry of the uid, and
    supplementary groups from /etc/group only when the user was given by name."""
    u = spec.process.user
    passwd = [e for e in _read_db(rootfs, "passwd") if len(e) >= 7]
    uid, gid, groups = u.uid, u.gid, list(u.additional_gids)
    if u.name is not None:
        entry = next((e for e in passwd if e[0] == u.name), None)
        if entry is None:
            raise SpecError("process.user", f'no user "{u.name}" in {rootfs}/etc/passwd')
        uid, gid = int(entry[2]), int(entry[3])
        for e in _read_db(rootfs, "group"):
            if len(e) >= 4 and u.name in e[3].split(",") and e[2].isdigit() and int(e[2]) not in groups:
                groups.append(int(e[2]))
    home = next((e[5] for e in passwd if e[2] == str(uid)), "/")
    return _User(uid, gid, tuple(groups), home or "/")


def _environment(env: tuple[str, ...], home: str) -> tuple[str, ...]:
    if any(e.startswith("HOME=") for e in env):
        return env
    return env + (f"HOME={home}",)


def _exec_paths(program: str, env: tuple[str, ...]) -> tuple[str, ...]:
    """What execve tries, in order: the program itself when it has a slash, else each PATH entry
    (the container's PATH, or the usual default)."""
    if "/" in program:
        return (program,)
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    dirs = [d for d in path.split(":") if d]
    return tuple(posixpath.join(d, program) for d in dirs) or (program,)


# -- filesystem ----------------------------------------------------------------------------------

def _filesystem(spec: ContainerSpec, rootfs: str, in_userns: bool, cgroup: str,
                own_netns: bool, controllers: frozenset[str], host: Host) -> tuple[int, list[Step]]:
    host_root = rootfs == "/"
    own_cgroupns = any(ns.type == "cgroup" and ns.path is None for ns in spec.namespaces)
    steps: list[Step] = []
    if host_root:
        if not spec.root.readonly:
            raise SpecError("root.readonly", "the host root can only be used read-only")
        steps.append(Step(Op.SETATTR_RO, dst="/"))
    dev_is_bind = False
    mounted: list[str] = []
    mapped_gids = [(m.container_id, m.container_id + m.size) for m in spec.gid_mappings]
    for i, mount in enumerate(spec.mounts):
        field = f"mounts[{i}]"
        if in_userns:
            mount = _for_user_namespace(mount, own_netns, mapped_gids)
        wanted = _dest(mount.destination, f"{field}.destination")
        dst = _inside(rootfs, wanted)
        if mount.type in ("proc", "sysfs") and dst != wanted:
            # Elsewhere, the masked and read-only paths would miss it (CVE-2019-19921, CVE-2023-28642).
            raise SpecError(f"{field}.destination", f'"{mount.destination}" leads elsewhere in the rootfs: '
                            f"{mount.type} must be mounted on a directory, not through a symlink")
        if dst.startswith("/proc/") and dst not in _PROC_MOUNTABLE:
            # Over the container's procfs, a mount would blind the masked paths and /proc/self/fd, which
            # the init mounts through (CVE-2019-19921); runc allows the files lxcfs serves.
            raise SpecError(f"{field}.destination", f'"{mount.destination}" leads to {dst}: nothing may be mounted '
                            "over the container's /proc but " + ", ".join(sorted(_PROC_MOUNTABLE)))
        if dst == "/":
            raise SpecError(f"{field}.destination", "cannot mount over the root")
        # On the read-only host root a mount point must exist already, unless an earlier mount
        # (a tmpfs on /dev, say) holds it: the init creates it there, never on the host.
        if host_root and not os.path.lexists(resolve_in_root(rootfs, dst)) and not any(
                dst.startswith(earlier.rstrip("/") + "/") for earlier in mounted):
            raise SpecError(f"{field}.destination", f'"{dst}" does not exist on the read-only host root')
        mounted.append(dst)
        step = _mount_step(mount, dst, spec.bundle or "/", field, spec.mount_label)
        if dst == "/dev" and step.flags & MS_BIND:
            dev_is_bind = True
        if mount.type == "cgroup" and own_cgroupns:
            steps += _cgroupns_steps(dst, step, host.hierarchies())
        elif mount.type == "cgroup":
            steps += _cgroup_steps(dst, step, cgroup, controllers, host.hierarchies())
        else:
            steps.append(step)
    if not dev_is_bind:
        steps += _device_steps(spec.devices, in_userns)
    steps.append(Step(Op.PIVOT))
    propagation = _PROPAGATION.get(spec.rootfs_propagation or "rslave", MS_SLAVE | MS_REC)
    if propagation & MS_SHARED:
        # pivot_root refuses a shared root: share it once we are in.
        steps.append(Step(Op.PROPAGATE, dst="/", propagation=propagation))
        propagation = MS_SLAVE | MS_REC
    if spec.root.readonly and not host_root:
        steps.append(Step(Op.REMOUNT_RO, dst="/"))
    return propagation, steps


def _for_user_namespace(mount: Mount, own_netns: bool, mapped_gids: list[tuple[int, int]]) -> Mount:
    """What a user namespace changes (runc does the same for rootless containers): sysfs can only be
    mounted with a network namespace of its own, else the host's /sys is bound read-only; devpts
    cannot be given a group that is not mapped."""
    if mount.type == "sysfs" and not own_netns:
        return Mount(mount.destination, "bind", "/sys", ("rbind", "ro", "nosuid", "noexec", "nodev"))
    if mount.type == "devpts":
        def mapped(option: str) -> bool:
            gid = option.removeprefix("gid=")
            return not gid.isdigit() or any(lo <= int(gid) < hi for lo, hi in mapped_gids)

        return attrs.evolve(mount, options=tuple(o for o in mount.options if not o.startswith("gid=") or mapped(o)))
    return mount


def _mount_step(mount: Mount, dst: str, bundle: str, field: str, label: str | None = None) -> Step:
    flags = 0
    propagation = 0
    data: list[str] = []
    for i, option in enumerate(mount.options):
        if option in _UNSUPPORTED_OPTIONS:
            raise SpecError(f"{field}.options[{i}]", f'"{option}" is not supported yet')
        if option in _OPTION_FLAGS:
            sets, flag = _OPTION_FLAGS[option]
            flags = flags | flag if sets else flags & ~flag
        elif option in _PROPAGATION:
            propagation = _PROPAGATION[option]
        else:
            data.append(option)
    if mount.type == "bind":
        flags |= MS_BIND
    if flags & MS_BIND:
        if not mount.source:
            raise SpecError(f"{field}.source", "a bind mount needs a source")
        source = os.path.join(bundle, mount.source)
        if not os.path.exists(source):
            raise SpecError(f"{field}.source", f'"{source}" does not exist')
        extra = flags & ~(MS_BIND | MS_REC)
        return Step(Op.MOUNT, dst=dst, src=source, flags=flags & (MS_BIND | MS_REC),
                    remount_flags=(MS_BIND | MS_REMOUNT | extra) if extra else 0, propagation=propagation,
                    data=",".join(data) or None, mktype=Mk.DIR if os.path.isdir(source) else Mk.FILE)
    if not mount.type:
        raise SpecError(f"{field}.type", "required (or a bind mount)")
    if label is not None and mount.type not in ("proc", "sysfs", "cgroup", "cgroup2", "mqueue"):
        data.append(f'context="{label}"')  # linux.mountLabel
    return Step(Op.MOUNT, dst=dst, src=mount.source or mount.type, fstype=mount.type, flags=flags,
                propagation=propagation, data=",".join(data) or None, mktype=Mk.DIR)


def _cgroupns_steps(dst: str, step: Step, every: list[Hierarchy]) -> list[Step]:
    """runc's cgroup mount with a cgroup namespace of the container's own: the cgroup filesystems
    themselves, whose root is then the container's cgroup (a tmpfs holding one per v1 hierarchy, or
    cgroup2 on a pure v2 host), mounted from inside its namespaces."""
    flags = step.flags
    v1 = [h for h in every if h.version == 1]
    if not v1:
        return [Step(Op.MOUNT, dst=dst, src="cgroup2", fstype="cgroup2", flags=flags, mktype=Mk.DIR)]
    steps = [Step(Op.MOUNT, dst=dst, src="tmpfs", fstype="tmpfs", flags=flags & ~MS_RDONLY,
                  data="mode=755", mktype=Mk.DIR)]
    for h in v1:
        options = sorted(h.controllers)
        if all(o.startswith("name=") for o in options):
            options = ["none", *options]  # a named hierarchy without controllers (name=systemd)
        steps.append(Step(Op.MOUNT, dst=f"{dst}/{os.path.basename(h.mountpoint)}", src="cgroup", fstype="cgroup",
                          flags=flags, data=",".join(options), mktype=Mk.DIR))
    return steps


def _cgroup_steps(dst: str, step: Step, cgroup: str, controllers: frozenset[str],
                  every: list[Hierarchy]) -> list[Step]:
    """runc's cgroup mount without a cgroup namespace: a tmpfs holding a read-only bind of the
    container's cgroup in each v1 hierarchy (the supervisor's own where the container has none), or
    one bind of it on a pure v2 host."""
    flags = step.flags
    own = set(select(every, controllers)) if controllers else set()
    # Where the container has a cgroup, the source is the hierarchy's base and the bootstrap adds the
    # container's cgroup path (SV_ATTR_CGROUP_PATH): the steps stay the same for every container of
    # a spec, and so does most of the message.
    ours = cgroup_dirs("", every)  # the supervisor's own cgroup in each hierarchy
    dirs = {h: h.mountpoint if h in own and cgroup.startswith("/") else ours[h] for h in every}
    ro = MS_BIND | MS_REMOUNT | (flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME))
    v1 = {h: d for h, d in dirs.items() if h.version == 1}
    if not v1:
        return [Step(Op.MOUNT, dst=dst, src=d, flags=MS_BIND | MS_REC, remount_flags=ro, mktype=Mk.DIR,
                     cgroup=h in own) for h, d in list(dirs.items())[:1]]
    steps = [Step(Op.MOUNT, dst=dst, src="tmpfs", fstype="tmpfs", flags=flags & ~MS_RDONLY,
                  data="mode=755", mktype=Mk.DIR)]
    for h, d in v1.items():
        steps.append(Step(Op.MOUNT, dst=f"{dst}/{os.path.basename(h.mountpoint)}", src=d, flags=MS_BIND | MS_REC,
                          remount_flags=ro, mktype=Mk.DIR, cgroup=h in own))
    return steps


def _device_steps(devices: Iterable[Device], in_userns: bool) -> list[Step]:
    by_path = {d.path: d for d in _DEFAULT_DEVICES}
    by_path.update({d.path: d for d in devices})
    steps = []
    for d in by_path.values():
        if in_userns:
            # mknod is not allowed in a user namespace: bind the host's node, as runc does
            steps.append(Step(Op.BIND_DEV, dst=d.path, src=d.path))
        else:
            steps.append(Step(Op.MKNOD, dst=d.path, mode=_DEVICE_TYPES[d.type] | d.file_mode, major=d.major,
                              minor=d.minor, uid=d.uid, gid=d.gid))
    steps += [Step(Op.SYMLINK, dst=link, src=target) for target, link in _DEV_SYMLINKS
              if link not in by_path]
    return steps


def _sysctl_steps(spec: ContainerSpec, new: set[str], joined: dict[str, str]) -> list[Step]:
    """A sysctl is written in the init, inside the container's namespaces, so it must be one the
    container's own namespace scopes (runc's list), and that namespace must not be the host's: new,
    or joined by a path that is not the supervisor's own (a pod's containers join the network
    namespace containerd made for the pod, and the sandbox gets the pod's sysctls)."""
    steps = []
    for key, value in spec.sysctl:
        field = f"linux.sysctl.{key}"
        if not key or any(not (c.isalnum() or c in "._-") for c in key) or ".." in key:
            raise SpecError(field, "not a sysctl name")
        if key.startswith("net."):
            needed = "network"
        elif key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            needed = "ipc"
        elif key in ("kernel.hostname", "kernel.domainname"):
            needed = "uts"
        else:
            raise SpecError(field, "not a namespaced sysctl: it would change the host")
        if needed in joined:
            _not_the_hosts(needed, joined[needed], field)
        elif needed not in new:
            raise SpecError(field, f"needs a {needed} namespace of the container's own")
        steps.append(Step(Op.SYSCTL, dst=key.replace(".", "/"), data=value))
    return steps


def _not_the_hosts(kind: str, path: str, field: str) -> None:
    """Refuse a joined namespace that is the supervisor's own: a sysctl written there would change
    the host. Two namespace files are one namespace when they are one nsfs inode."""
    try:
        joined = os.stat(path)
    except OSError as e:
        raise SpecError(field, f'the {kind} namespace "{path}" cannot be read: {e.strerror}') from None
    ours = os.stat(f"/proc/self/ns/{_NS_FILES[kind]}")
    if (joined.st_dev, joined.st_ino) == (ours.st_dev, ours.st_ino):
        raise SpecError(field, f'the {kind} namespace "{path}" is the host\'s: the sysctl would change the host')


# -- small conversions ---------------------------------------------------------------------------

def _mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[name]
    return mask


def _id_map(mappings: tuple[IdMapping, ...]) -> str | None:
    if not mappings:
        return None
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


# -- exec into a running container ----------------------------------------------------------------

#: the order /proc/PID/ns/* are listed in (the bootstrap joins the user namespace between passes)
_NS_FILES = {"user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid", "mount": "mnt",
             "cgroup": "cgroup"}


def plan_exec(container: Plan, spec: ContainerSpec, init_pid: int, args: tuple[str, ...],
              env: tuple[str, ...] | None = None, cwd: str | None = None, terminal: bool = False,
              console_size: tuple[int, int] | None = None) -> Plan:
    """A process to run inside a running container: every namespace the container has, joined
    through its init's ``/proc/PID/ns/*``; the container's user, groups, capabilities, no_new_privs,
    rlimits and umask; its environment and cwd unless given. Nothing is mounted: joining the mount
    namespace puts the process in the container's root."""
    if not args:
        raise SpecError("args", "required: at least the program to run")
    env = container.env if env is None else env
    for i, entry in enumerate(env):
        if "=" not in entry:
            raise SpecError(f"env[{i}]", f'"{entry}" is not NAME=VALUE')
    ns_paths = tuple((NAMESPACE_TYPES[ns.type], f"/proc/{init_pid}/ns/{_NS_FILES[ns.type]}")
                     for ns in spec.namespaces if ns.type in _NS_FILES)
    # Built fresh, not the container's plan with fields reset: whatever a plan gains later is the
    # container's own (a mount, a hostname, a cgroup to make) unless it is listed here.
    return Plan(
        args=args,
        exec_paths=_exec_paths(args[0], env),
        env=env,
        cwd=cwd or container.cwd,
        ns_paths=ns_paths,
        terminal=terminal,
        console_size=console_size,
        # the container's process identity and confinement
        uid=container.uid,
        gid=container.gid,
        setgroups=container.setgroups,
        groups=container.groups,
        become_root=container.become_root,
        caps=container.caps,
        no_new_privs=container.no_new_privs,
        rlimits=container.rlimits,
        umask=container.umask,
        seccomp=container.seccomp,
        seccomp_flags=container.seccomp_flags,
        apparmor_profile=container.apparmor_profile,
        selinux_label=container.selinux_label,
        pdeathsig=container.pdeathsig,
    )
