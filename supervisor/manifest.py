"""Manifests: many containers in one TOML file, loaded into ``Service``s.

``load_manifest(path)`` reads the file and returns a ``Manifest``: its ``path`` and its
``services``, in file order, replicas expanded. Nothing runs and nothing is planned; the only I/O
is reading the manifest, the ``config.json`` of bundles it names, and, for a numeric ``user``
without a group, the rootfs's ``/etc/passwd``.

The format
----------

::

    [defaults]                  # optional: any container key, applied to every container
    restart = "on-failure"
    env = { TZ = "UTC" }

    [containers.web]            # a container: NAME is [a-zA-Z0-9][a-zA-Z0-9_.-]*
    args = ["/bin/sh", "-c", "exec my-server"]
    user = "www-data"
    replicas = 2
    depends_on = ["db"]

    [containers.db]
    bundle = "bundles/db"       # an OCI bundle directory, relative to the manifest

A container is either an OCI **bundle** (``bundle = "DIR"``: ``DIR/config.json`` says everything;
only the supervision keys below may stand beside it) or **inline**:

``args``        the program and its arguments (required).
``root``        the root filesystem: ``"/"`` (the default) is the host's own root, read-only; any
                other path (relative to the manifest's directory) is a rootfs directory.
``readonly``    mount the root read-only: default true for the host root (which must be read-only),
                false for a rootfs directory.
``env``         a table ``{NAME = "value"}`` or a list ``["NAME=value"]``; ``PATH`` defaults to
                ``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``.
``env_file``    a file (relative to the manifest's directory) or a list of them, in compose's
                format (``parse_env_file``), read at load; ``env`` wins over them, a later file over
                an earlier one.
``cwd``         the working directory (default ``"/"``).
``user``        a user name (looked up in the rootfs's ``/etc/passwd`` and ``/etc/group`` by the
                planner), ``"UID"`` or ``"UID:GID"`` (without a GID: the uid's group in the
                rootfs's ``/etc/passwd``, else 0), a number, or an OCI user table
                ``{uid, gid, umask, additionalGids}``. Default: root.
``hostname``    the container's hostname (needs the ``uts`` namespace, which is a default).
``namespaces``  a list of OCI namespace types (``["pid", "mount"]``) or ``{type, path}`` tables.
``mounts``      a list of OCI mount tables ``{destination, type, source, options}``; relative bind
                sources are relative to the manifest's directory.
``capabilities`` an OCI capabilities table ``{bounding, effective, permitted, inheritable,
                ambient}``, or a list: the same names in bounding, effective and permitted.

and any other OCI field under its OCI name: ``rlimits``, ``noNewPrivileges``, ``oomScoreAdj``,
``terminal`` (process fields); ``maskedPaths``, ``readonlyPaths``, ``sysctl``, ``devices``,
``uidMappings``, ``gidMappings``, ``resources``, ``rootfsPropagation``, ``cgroupsPath`` (linux
fields); ``domainname``, ``annotations``. The loader builds an OCI ``config.json`` document from
these and hands it to ``ContainerSpec.from_oci``, so an inline container is checked exactly as a
bundle is (and OCI fields not implemented yet, like ``timeOffsets``, are refused by name). An inline
container gets ``seccomp.DEFAULT_PROFILE`` (Docker's intent) unless it gives its own OCI ``seccomp``
table, or ``seccomp = "unconfined"``.

Supervision keys, for both kinds (``Policy`` and ``LogConfig`` in ``service.py``):

``restart``       ``"no"`` (default), ``"on-failure"`` or ``"always"``.
``max_restarts``  an integer >= 0 (default: no limit).
``stop_signal``   ``"SIGTERM"``, ``"TERM"`` or a number (default SIGTERM).
``stop_timeout``  seconds >= 0 between the stop signal and SIGKILL (default 10).
``backoff_initial``, ``backoff_max``, ``stable_after``  the restart delay's start (default 0.1 s)
                  and cap (30 s), and how long a run must last to reset it (10 s): seconds or
                  compose durations (``"1m30s"``).
``depends_on``    container names (this manifest's tables) that must run before this one starts, or a
                  table ``{db = "healthy", migrate = "completed", cache = "started"}``: ``started``
                  waits for its workload to run (or, a one-shot, to have ended with code 0),
                  ``healthy`` for its health check to pass (or its ``READY=1``), ``completed`` for
                  it to have ended with code 0 and be restarted no more (compose's
                  ``service_started``, ``service_healthy``, ``service_completed_successfully``, and
                  its long form ``{condition = "service_healthy"}``, are accepted too). A dependency
                  that ends otherwise fails the dependent. A dependency's restart does nothing to
                  its dependents (compose's default, without ``restart: true``): they keep running,
                  and a dependent that starts again later waits for its conditions again.
``healthcheck``   ``{test = [...], interval = 30, timeout = 30, retries = 3, start_period = 0}``, compose's
                  keys and meanings: ``test`` runs inside the container (exec'd as the workload's
                  user, in its namespaces and cgroup) and passes by exiting 0. ``test`` is
                  ``["CMD", PROG, ARGS...]``, ``["CMD-SHELL", "LINE"]`` (``/bin/sh -c LINE``; a plain
                  string means the same), ``["NONE"]`` (no check: turns off one from ``[defaults]``),
                  or a list starting with the program (``["/bin/sh", "-c", "..."]``). Times are
                  seconds, or compose durations (``"1m30s"``, ``"500ms"``).
``notify``        true: the container gets ``NOTIFY_SOCKET=/run/notify.sock``, a datagram socket of
                  the supervisor's bound in; ``READY=1`` sent there makes it healthy (systemd's
                  ``Type=notify``; ``systemd-notify --ready`` or ``sd_notify`` do it).
``init``          true: marks the spec with the annotation ``supervisor.init = "true"``.
``replicas``      N >= 1: N services ``NAME-0`` ... ``NAME-{N-1}``, each with
                  ``SUPERVISOR_REPLICA=i`` in its environment (even N = 1 is ``NAME-0``; without
                  ``replicas`` the one service is ``NAME``, without the variable). Depending on
                  ``NAME`` means depending on every replica.
``log_file``      a file (relative to the manifest's directory) that gets the container's output;
                  ``{name}`` in it becomes the service's name (``"logs/{name}.log"``).
``log_max_bytes`` rotate the log file when it would grow past this (>= 1, default 10 MiB).
``log_backups``   how many rotated files to keep (>= 0, default 3).

Decisions
---------

- **Inline defaults** are those of a supervisord program in a container, not runc's: namespaces
  ``pid``, ``ipc``, ``uts`` and ``mount`` but **no network namespace** (services share the host's
  network); mounts ``/proc``, ``/dev`` (tmpfs), ``/dev/pts``, ``/dev/shm``, ``/dev/mqueue``,
  ``/sys`` (sysfs, read-only), and fresh tmpfs on ``/tmp`` and ``/run``; Docker's default
  capability set (``DEFAULT_CAPABILITIES``) in bounding, effective and permitted; runc's masked and
  read-only paths; no rlimits; ``noNewPrivileges`` false; no hostname (the host's, in its own uts
  namespace). A key that is given replaces its default whole, except ``mounts``: a mount on a
  destination that a default mount (or ``[defaults]``) already uses replaces that mount where it
  is, in the order of mounts; any other is added after them.
- **/sys only with a network namespace.** The default ``/sys`` (sysfs) is mounted only when the
  container has a network namespace of its own: in the host's, the kernel refuses the mount
  (EBUSY), and a bind of the host's ``/sys`` would carry its submounts (the cgroup trees...)
  writable. Without one, a container on the host root sees the host's ``/sys``, read-only with all
  its submounts (the host root is made read-only recursively), and one on a rootfs directory sees
  that directory's own ``/sys``. Add ``"network"`` to ``namespaces`` to get a sysfs of its own.
- **[defaults] merge**: a container's own key wins over the same key in ``[defaults]``; when both
  values are tables (``env``, ``sysctl``, ``annotations``, ``resources``, ``capabilities``...)
  they merge key by key, recursively (``env`` given as a list counts as a table); ``mounts`` merge
  by destination as above; every other value (lists included) is replaced whole. ``[defaults]``
  may not name a ``bundle``; its container keys (all but the supervision keys) are not applied to
  bundle containers, whose ``config.json`` is complete. A container's name in
  ``[defaults].depends_on`` is skipped for that container, so ``depends_on = ["db"]`` in
  ``[defaults]`` makes every container but ``db`` wait for ``db``.
- **Strict**: an unknown key, a value of the wrong type, an unknown container in ``depends_on``,
  a dependency cycle, two services with the same name (``web-0`` and replica 0 of ``web``) or two
  services writing the same log file are all errors. ``sysctl`` tables may be nested
  (``sysctl.net.ipv4.ip_forward = "1"``): they are flattened to dotted names.
- **Errors** are ``ManifestError``, a ``SpecError`` whose ``file`` is the manifest (as given),
  ``field`` the manifest key (``containers.web.rlimits[0].type``) and ``line`` the line that set
  it (None when unknown): ``manifest.toml: line 12: containers.web.rlimits[0].type: unknown rlimit
  "RLIMIT_FOO"``. tomllib gives no positions, so a small scanner of the TOML text (``_Locator``)
  records the line of every key, table header and array element; an error from the OCI loader is
  mapped back from the OCI field to the manifest key (and the layer, ``defaults`` or the
  container, whose value was used). ``Manifest.locate`` does the same for later errors, e.g. the
  planner's. A TOML syntax error gives tomllib's message, its line and column.
"""

import copy
import json
import math
import os
import posixpath
import re
import signal
import tomllib
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any, cast

import attrs

from .errors import SpecError
from .plan import DEFAULT_PATH, resolve_in_root
from .seccomp import DEFAULT_PROFILE
from .service import (CONDITIONS, RESTART_POLICIES, Condition, HealthCheck, LogConfig, NetworkConfig, Policy,
                      Service, health_test, parse_duration, parse_network)
from .spec import INIT_ANNOTATION, ContainerSpec, User

__all__ = ["Manifest", "ManifestError", "load_manifest", "parse_env_file", "DEFAULT_CAPABILITIES", "REPLICA_ENV",
           "INIT_ANNOTATION"]

#: the environment variable that tells a replica its number
REPLICA_ENV = "SUPERVISOR_REPLICA"

#: Docker's default capabilities: the bounding, effective and permitted sets of an inline container
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
_DEFAULT_NAMESPACES = ("pid", "ipc", "uts", "mount")
_DEFAULT_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
    {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]},
)
#: runc's (``runc spec``)
_DEFAULT_MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                         "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                         "/proc/scsi")
_DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# -- the keys ----------------------------------------------------------------------------------------

_SUPERVISION_KEYS = ("restart", "max_restarts", "stop_signal", "stop_timeout", "depends_on", "init", "replicas",
                     "log_file", "log_max_bytes", "log_backups", "network", "healthcheck", "notify",
                     "backoff_initial", "backoff_max", "stable_after")
_HEALTHCHECK_KEYS = ("test", "interval", "timeout", "retries", "start_period")
#: OCI ``process`` fields taken under their own names (the unimplemented ones too: the OCI loader
#: then says "not supported yet" rather than us "unknown key")
_PROCESS_KEYS = ("capabilities", "rlimits", "noNewPrivileges", "oomScoreAdj", "terminal", "consoleSize",
                 "commandLine", "apparmorProfile", "selinuxLabel", "ioPriority", "scheduler", "execCPUAffinity")
_LINUX_KEYS = ("maskedPaths", "readonlyPaths", "sysctl", "devices", "uidMappings", "gidMappings", "resources",
               "seccomp", "rootfsPropagation", "cgroupsPath", "timeOffsets", "unified", "mountLabel", "intelRdt",
               "personality", "memoryPolicy", "netDevices")
_TOP_KEYS = ("hostname", "domainname", "annotations", "hooks")
_SPEC_KEYS = ("args", "root", "readonly", "env", "env_file", "cwd", "user", "namespaces", "mounts") + _PROCESS_KEYS \
    + _LINUX_KEYS + _TOP_KEYS
_CONTAINER_KEYS = frozenset(("bundle",) + _SUPERVISION_KEYS + _SPEC_KEYS)

#: OCI field -> the manifest key that sets it (for errors)
_OCI_FIELDS: dict[str, str] = {
    "root": "root", "root.path": "root", "root.readonly": "readonly", "process.args": "args",
    "process.env": "env", "process.cwd": "cwd", "process.user": "user", "mounts": "mounts",
    "linux.namespaces": "namespaces",
    **{f"process.{k}": k for k in _PROCESS_KEYS},
    **{f"linux.{k}": k for k in _LINUX_KEYS},
    **{k: k for k in _TOP_KEYS},
}

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NUMERIC_USER = re.compile(r"(\d+)(?::(\d+))?")
_USER_NAME = re.compile(r"[^\s:/]+")

Path = tuple[str | int, ...]

#: compose's names of the dependency conditions
_COMPOSE_CONDITIONS = {"service_started": "started", "service_healthy": "healthy",
                       "service_completed_successfully": "completed"}


# -- errors ------------------------------------------------------------------------------------------

class ManifestError(SpecError):
    """A ``SpecError`` in a manifest: ``field`` is the manifest key (``containers.web.restart``),
    ``line`` the line of the manifest that set it, or None when unknown. ``str()`` gives
    ``FILE: line N: FIELD: REASON``."""

    def __init__(self, field: str, reason: str, file: str | None = None, line: int | None = None) -> None:
        self.line = line
        super().__init__(field, reason, file)

    def with_file(self, file: str) -> "ManifestError":
        return ManifestError(self.field, self.reason, file, self.line)

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        if self.field:
            where += f"{self.field}: "
        return f"{self.file}: {where}{self.reason}" if self.file else f"{where}{self.reason}"


# -- the result --------------------------------------------------------------------------------------

@attrs.frozen
class Manifest:
    """A loaded manifest: its path (absolute) and its services, in file order, replicas expanded."""

    path: str
    services: tuple[Service, ...]
    _origins: Mapping[str, "_Origin"] = attrs.field(factory=dict, eq=False, repr=False)

    def service(self, name: str) -> Service:
        """The service called ``name`` (``KeyError`` if there is none)."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def locate(self, name: str, error: SpecError) -> SpecError:
        """Say where in the manifest ``error`` comes from, a ``SpecError`` about the spec of
        service ``name`` raised after loading (``plan()``'s ``process.user: no user "bob" ...``):
        a ``ManifestError`` naming the manifest key and its line (for a bundle container: its
        ``bundle`` key, with the ``config.json`` field in the reason). Errors already about a file
        are returned as they are."""
        origin = self._origins.get(name)
        if error.file is not None:
            return error
        if origin is None:
            return error.with_file(self.path)
        return origin.explain(error)


@attrs.frozen
class _Origin:
    """Where one service's spec came from: enough to map an OCI field back to a manifest line."""

    file: str
    lines: "_Locator"
    base: Path
    #: OCI field prefix -> the manifest path that set it, or what built-in default it is
    sources: Mapping[str, Path | str] = attrs.field(factory=dict)
    #: the config.json (bundle containers)
    config: str | None = None

    def explain(self, error: SpecError) -> ManifestError:
        if self.config is not None:
            path = self.base + ("bundle",)
            return ManifestError(_field(path), str(error.with_file(self.config)), self.file, self.lines.line(path))
        path, prefix = _map_field(self.sources, self.base, error.field)
        reason = error.reason.replace("expected an object", "expected a table").replace("got an object", "got a table")
        return ManifestError(_field(path), prefix + reason, self.file, self.lines.line(path))


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load a TOML manifest. Raises ``ManifestError`` (a ``SpecError``) naming the line and key."""
    return _Loader(os.fspath(path)).load()


# -- loading -----------------------------------------------------------------------------------------

@attrs.define
class _Container:
    name: str
    table: dict[str, Any]
    bundle: bool
    replicas: int | None = None
    depends_on: list[tuple[str, Path]] = attrs.field(factory=list)
    depends_on_path: Path = ()
    conditions: dict[str, tuple[str, Path]] = attrs.field(factory=dict)
    init: bool = False
    policy: dict[str, Any] = attrs.field(factory=dict)
    log: dict[str, Any] = attrs.field(factory=dict)
    log_file_path: Path = ()
    network: NetworkConfig | None = None
    spec: ContainerSpec | None = None
    origin: _Origin | None = None


class _Loader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.abspath = os.path.abspath(file)
        self.dir = os.path.dirname(self.abspath)
        self.lines = _Locator("")
        self.defaults: dict[str, Any] = {}

    def error(self, path: Path, reason: str) -> ManifestError:
        return ManifestError(_field(path), reason, self.file, self.lines.line(path))

    def load(self) -> Manifest:
        doc = self.read()
        for key in doc:
            if key not in ("defaults", "containers"):
                raise self.error((key,), "unknown key (a manifest has [defaults] and [containers.NAME] tables)")
        defaults = doc.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self.error(("defaults",), f"expected a table, got {_show(defaults)}")
        for key in defaults:
            if key == "bundle":
                raise self.error(("defaults", key), "not allowed in [defaults]")
            if key not in _CONTAINER_KEYS:
                raise self.error(("defaults", key), "unknown key")
        self.defaults = defaults
        tables = doc.get("containers", {})
        if not isinstance(tables, dict):
            raise self.error(("containers",), f"expected a table of containers, got {_show(tables)}")
        if not tables:
            raise self.error(("containers",), "no containers: add a [containers.NAME] table")
        containers = [self.container(name, table) for name, table in tables.items()]
        self.check_dependencies(containers)
        return self.expand(containers)

    def read(self) -> dict[str, Any]:
        try:
            with open(self.file, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ManifestError("", "no such file", self.file) from None
        except OSError as e:
            raise ManifestError("", e.strerror or str(e), self.file) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ManifestError("", f"not UTF-8 text (byte {e.start})", self.file) from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            message = str(e)
            m = re.search(r" \(at line (\d+), column (\d+)\)$", message)
            if m is None:
                raise ManifestError("", f"invalid TOML: {message}", self.file) from None
            reason = f"invalid TOML: {message[:m.start()]} (column {m.group(2)})"
            raise ManifestError("", reason, self.file, int(m.group(1))) from None
        self.lines = _Locator(text)
        return doc

    # -- one container -----------------------------------------------------------------------------

    def container(self, name: str, table: Any) -> _Container:
        base: Path = ("containers", name)
        if not _NAME.fullmatch(name):
            raise self.error(base, 'not a valid container name: letters, digits, "_", "." and "-", '
                                   'starting with a letter or a digit')
        if not isinstance(table, dict):
            raise self.error(base, f"expected a table, got {_show(table)}")
        for key in table:
            if key not in _CONTAINER_KEYS:
                raise self.error(base + (key,), "unknown key")
        c = _Container(name, table, "bundle" in table)
        self.supervision(c)
        if c.bundle:
            self.bundle_spec(c)
        else:
            self.inline_spec(c)
        return c

    def get(self, c: _Container, key: str) -> tuple[Any, Path] | None:
        """The value of ``key`` for this container and where it was set: its own table, else
        ``[defaults]`` (for a bundle container, only supervision keys come from there)."""
        if key in c.table:
            return c.table[key], ("containers", c.name, key)
        if key in self.defaults and (not c.bundle or key in _SUPERVISION_KEYS):
            return self.defaults[key], ("defaults", key)
        return None

    def layers(self, c: _Container, key: str) -> list[tuple[Any, Path]]:
        """Every value of ``key``, ``[defaults]`` first."""
        out: list[tuple[Any, Path]] = []
        if key in self.defaults and not c.bundle:
            out.append((self.defaults[key], ("defaults", key)))
        if key in c.table:
            out.append((c.table[key], ("containers", c.name, key)))
        return out

    def supervision(self, c: _Container) -> None:
        if (got := self.get(c, "restart")) is not None:
            value, path = got
            if not isinstance(value, str) or value not in RESTART_POLICIES:
                choices = ", ".join(f'"{p}"' for p in RESTART_POLICIES)
                raise self.error(path, f"expected one of {choices}, got {_show(value)}")
            c.policy["restart"] = value
        if (got := self.get(c, "max_restarts")) is not None:
            c.policy["max_restarts"] = self.integer(*got, 0)
        if (got := self.get(c, "stop_signal")) is not None:
            c.policy["stop_signal"] = self.signal(*got)
        if (got := self.get(c, "stop_timeout")) is not None:
            value, path = got
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value < 0:
                raise self.error(path, f"expected a number of seconds >= 0, got {_show(value)}")
            c.policy["stop_timeout"] = float(value)
        if (got := self.get(c, "depends_on")) is not None:
            value, path = got
            if isinstance(value, dict):
                items: list[tuple[Any, Any, Path]] = [(dep, cond, path + (dep,)) for dep, cond in value.items()]
            elif isinstance(value, list):
                items = [(dep, "started", path + (i,)) for i, dep in enumerate(value)]
            else:
                raise self.error(path, "expected a list of container names or a table {NAME = \"CONDITION\"}, "
                                       f"got {_show(value)}")
            c.depends_on_path = path
            for dep, cond, item_path in items:
                if not isinstance(dep, str):
                    raise self.error(item_path, f"expected a container name, got {_show(dep)}")
                if isinstance(cond, dict) and set(cond) <= {"condition", "required", "restart"} and \
                        cond.get("required", True) is True and cond.get("restart", False) is False:
                    cond = cond.get("condition", "service_started")  # compose's long form
                cond = _COMPOSE_CONDITIONS.get(cond, cond) if isinstance(cond, str) else cond
                if cond not in CONDITIONS:
                    choices = ", ".join(f'"{x}"' for x in CONDITIONS)
                    raise self.error(item_path, f"expected one of {choices}, got {_show(cond)}")
                if path[0] == "defaults" and dep == c.name:
                    continue  # [defaults].depends_on = ["db"] does not make db wait for itself
                if dep not in [d for d, _ in c.depends_on]:
                    c.depends_on.append((dep, item_path))
                if cond != "started":
                    c.conditions[dep] = (cond, item_path)
        if (got := self.get(c, "healthcheck")) is not None:
            c.policy["healthcheck"] = self.healthcheck(*got)
        if (got := self.get(c, "notify")) is not None:
            value, path = got
            if not isinstance(value, bool):
                raise self.error(path, f"expected true or false, got {_show(value)}")
            c.policy["notify"] = value
        for key in ("backoff_initial", "backoff_max", "stable_after"):
            if (got := self.get(c, key)) is not None:
                try:
                    c.policy[key] = parse_duration(got[0])
                except ValueError as e:
                    raise self.error(got[1], str(e)) from None
        if c.policy.get("backoff_max", 30.0) < c.policy.get("backoff_initial", 0.1):
            got = self.get(c, "backoff_max") or self.get(c, "backoff_initial")
            assert got is not None
            raise self.error(got[1], "backoff_max is less than backoff_initial")
        if (got := self.get(c, "init")) is not None:
            value, path = got
            if not isinstance(value, bool):
                raise self.error(path, f"expected true or false, got {_show(value)}")
            c.init = value
        if (got := self.get(c, "replicas")) is not None:
            c.replicas = self.integer(*got, 1)
        if (got := self.get(c, "log_file")) is not None:
            value, path = got
            if not isinstance(value, str) or not value:
                raise self.error(path, f"expected a file name, got {_show(value)}")
            c.log["file"] = value
            c.log_file_path = path
        if (got := self.get(c, "log_max_bytes")) is not None:
            c.log["max_bytes"] = self.integer(*got, 1)
        if (got := self.get(c, "log_backups")) is not None:
            c.log["backups"] = self.integer(*got, 0)
        if (got := self.get(c, "network")) is not None:
            value, path = got
            try:
                c.network = parse_network(value, _field(path))
            except SpecError as e:
                raise self.error(path, f"{e.field}: {e.reason}" if e.field != _field(path) else e.reason) from None
            if c.network.container is not None and c.network.container not in [d for d, _ in c.depends_on]:
                c.depends_on.append((c.network.container, path))

    def healthcheck(self, value: Any, path: Path) -> HealthCheck | None:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a table {{test = [...], interval = 30, ...}}, got {_show(value)}")
        for key in value:
            if key not in _HEALTHCHECK_KEYS:
                raise self.error(path + (key,), f"unknown key (a health check has {', '.join(_HEALTHCHECK_KEYS)})")
        if "test" not in value:
            raise self.error(path + ("test",), 'required: ["CMD", PROGRAM, ARGS...], ["CMD-SHELL", "LINE"] '
                                               'or ["NONE"]')
        try:
            test = health_test(value["test"])
        except (ValueError, TypeError) as e:
            raise self.error(path + ("test",), f"{e}, got {_show(value['test'])}") from None
        if test is None:
            return None
        times = {}
        for key in ("interval", "timeout", "start_period"):
            if key in value:
                try:
                    times[key] = parse_duration(value[key])
                except ValueError as e:
                    raise self.error(path + (key,), str(e)) from None
                if key != "start_period" and times[key] == 0:
                    raise self.error(path + (key,), "must be more than 0")
        retries = self.integer(value["retries"], path + ("retries",), 1) if "retries" in value else 3
        return HealthCheck(test, retries=retries, **times)

    def integer(self, value: Any, path: Path, lo: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise self.error(path, f"expected an integer >= {lo}, got {_show(value)}")
        return value

    def signal(self, value: Any, path: Path) -> int:
        if isinstance(value, str):
            name = value.upper()
            if not name.startswith("SIG"):
                name = "SIG" + name
            try:
                return int(signal.Signals[name])
            except KeyError:
                raise self.error(path, f"unknown signal {_show(value)}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in signal.valid_signals():
                raise self.error(path, f"{value} is not a signal number")
            return value
        raise self.error(path, f'expected a signal name ("SIGTERM", "TERM") or number, got {_show(value)}')

    def bundle_spec(self, c: _Container) -> None:
        base: Path = ("containers", c.name)
        for key in c.table:
            if key in _SPEC_KEYS:
                raise self.error(base + (key,), 'not allowed with "bundle" (its config.json describes the container)')
        value, path = c.table["bundle"], base + ("bundle",)
        if not isinstance(value, str) or not value:
            raise self.error(path, f"expected a directory, got {_show(value)}")
        bundle = os.path.normpath(os.path.join(self.dir, value))
        c.origin = _Origin(self.file, self.lines, base, config=os.path.join(bundle, "config.json"))
        try:
            c.spec = ContainerSpec.from_bundle(bundle)
        except SpecError as e:
            raise c.origin.explain(e) from None

    def inline_spec(self, c: _Container) -> None:
        base: Path = ("containers", c.name)
        sources: dict[str, Path | str] = {}
        origin = _Origin(self.file, self.lines, base, sources)
        c.origin = origin

        def source(key: str) -> Path:
            """Where the value of ``key`` was set (the container's table when nowhere)."""
            layers = self.layers(c, key)
            return layers[-1][1] if layers else base + (key,)

        for oci, key in _OCI_FIELDS.items():
            sources[oci] = source(key)

        args = self.get(c, "args")
        if args is None:
            raise self.error(base + ("args",), 'required: the program and its arguments (or "bundle")')
        config: dict[str, Any] = {"ociVersion": "1.0.2"}

        # root
        root, root_path = self.get(c, "root") or ("/", base + ("root",))
        if not isinstance(root, str) or not root:
            raise self.error(root_path, f"expected a directory, got {_show(root)}")
        rootfs = os.path.normpath(os.path.join(self.dir, root))
        readonly, readonly_path = self.get(c, "readonly") or (rootfs == "/", base + ("readonly",))
        if rootfs == "/" and readonly is False:
            raise self.error(readonly_path, 'the host root ("/") can only be used read-only')
        config["root"] = {"path": rootfs, "readonly": readonly}

        # process
        process: dict[str, Any] = {"args": copy.deepcopy(args[0])}
        env: dict[str, tuple[str, Path]] = {}
        for value, path in self.layers(c, "env_file"):  # first: env wins over env_file, as in compose
            for name, val, item_path in self.env_file_items(value, path):
                env[name] = (val, item_path)
        for value, path in self.layers(c, "env"):
            for name, val, item_path in self.env_items(value, path):
                env[name] = (val, item_path)
        if "PATH" not in env:
            env = {"PATH": (DEFAULT_PATH, base + ("env",)), **env}
        process["env"] = [f"{k}={v}" for k, (v, _) in env.items()]
        for i, (_, item_path) in enumerate(env.values()):
            sources[f"process.env[{i}]"] = item_path
        if (got := self.get(c, "cwd")) is not None:
            process["cwd"] = got[0]
        user_name = None
        if (got := self.get(c, "user")) is not None:
            user, user_name = self.user(got[0], got[1], rootfs)
            if user is not None:
                process["user"] = user
            if not isinstance(got[0], dict):  # "1000:x" has no uid/gid of its own: point at the key
                sources["process.user.uid"] = sources["process.user.gid"] = got[1]
        caps = self.merged(c, "capabilities", sources, "process.capabilities")
        if caps is None:
            caps = list(DEFAULT_CAPABILITIES)
        if isinstance(caps, list):
            path = source("capabilities")
            for kind in ("bounding", "effective", "permitted"):
                for i in range(len(caps)):
                    sources[f"process.capabilities.{kind}[{i}]"] = path + (i,)
            caps = {"bounding": caps, "effective": caps, "permitted": caps}
        process["capabilities"] = caps
        for key in _PROCESS_KEYS:
            if key != "capabilities" and (value := self.merged(c, key, sources, f"process.{key}")) is not None:
                process[key] = value
        config["process"] = process

        # top level
        for key in _TOP_KEYS:
            if (value := self.merged(c, key, sources, key)) is not None:
                config[key] = value
        namespaces = self.namespaces(c, sources)
        if c.network is not None and c.network.bridge is not None and isinstance(namespaces, list) and not any(
                isinstance(ns, dict) and ns.get("type") == "network" for ns in namespaces):
            # A veth on a bridge lives in a network namespace of the container's own: decided here,
            # once, where /sys (below) and the sysctls depend on it, not added later at start.
            namespaces.append({"type": "network"})
        own_network = isinstance(namespaces, list) and any(
            isinstance(ns, dict) and ns.get("type") == "network" and not ns.get("path") for ns in namespaces)
        config["mounts"] = self.mounts(c, sources, sysfs=own_network)

        # linux
        linux: dict[str, Any] = {"namespaces": namespaces,
                                 "maskedPaths": list(_DEFAULT_MASKED_PATHS),
                                 "readonlyPaths": list(_DEFAULT_READONLY_PATHS)}
        for key in _LINUX_KEYS:
            value = self.sysctl(c, sources) if key == "sysctl" else self.merged(c, key, sources, f"linux.{key}")
            if value is not None:
                linux[key] = value
        # seccomp: the default profile unless the container brings its own, or says "unconfined"
        unconfined = linux.get("seccomp") == "unconfined"
        if unconfined:
            del linux["seccomp"]
        config["linux"] = linux

        try:
            spec = ContainerSpec.from_oci(config, self.dir)
        except SpecError as e:
            raise origin.explain(e) from None
        if spec.seccomp is None and not unconfined:
            spec = attrs.evolve(spec, seccomp=DEFAULT_PROFILE)
        if user_name is not None:
            spec = attrs.evolve(spec, process=attrs.evolve(spec.process, user=User(name=user_name)))
        c.spec = spec

    def merged(self, c: _Container, key: str, sources: dict[str, Path | str], oci: str) -> Any:
        """``key``'s value, tables merged through the layers; records where each key of a table
        came from under ``oci``."""
        value: Any = None
        for layer, path in self.layers(c, key):
            value = _merge(value, layer)
            if isinstance(layer, dict):
                for sub in layer:
                    sources[f"{oci}.{sub}"] = path + (sub,)
        return copy.deepcopy(value)

    def env_file_items(self, value: Any, path: Path) -> list[tuple[str, str, Path]]:
        files = [(value, path)] if isinstance(value, str) else list(
            (f, path + (i,)) for i, f in enumerate(value)) if isinstance(value, list) else None
        if not files:
            raise self.error(path, f"expected a file name or a list of them, got {_show(value)}")
        out = []
        for name, file_path in files:
            if not isinstance(name, str) or not name:
                raise self.error(file_path, f"expected a file name, got {_show(name)}")
            file = os.path.join(self.dir, name)
            try:
                with open(file, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise self.error(file_path, f"{file}: {reason}") from None
            try:
                out += [(k, v, file_path) for k, v in parse_env_file(text)]
            except ValueError as e:
                raise self.error(file_path, f"{file}: {e}") from None
        return out

    def env_items(self, value: Any, path: Path) -> list[tuple[str, str, Path]]:
        out = []
        if isinstance(value, dict):
            for name, val in value.items():
                if not name or "=" in name:
                    raise self.error(path + (name,), "not a variable name")
                if not isinstance(val, str):
                    raise self.error(path + (name,), f"expected a string, got {_show(val)}")
                out.append((name, val, path + (name,)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise self.error(path + (i,), f"expected a string, got {_show(item)}")
                name, eq, val = item.partition("=")
                if not eq or not name:
                    raise self.error(path + (i,), f'"{item}" is not NAME=VALUE')
                out.append((name, val, path + (i,)))
        else:
            raise self.error(path, f'expected a table {{NAME = "value"}} or a list ["NAME=value"], got {_show(value)}')
        return out

    def user(self, value: Any, path: Path, rootfs: str) -> tuple[dict[str, Any] | None, str | None]:
        """(the OCI user, or None) and (the user name, or None)."""
        if isinstance(value, dict):
            return value, None
        if isinstance(value, int) and not isinstance(value, bool):
            return {"uid": value, "gid": _passwd_gid(rootfs, value)}, None
        if isinstance(value, str):
            if m := _NUMERIC_USER.fullmatch(value):
                uid = int(m.group(1))
                gid = int(m.group(2)) if m.group(2) is not None else _passwd_gid(rootfs, uid)
                return {"uid": uid, "gid": gid}, None
            if _USER_NAME.fullmatch(value):
                return None, value
        raise self.error(path, f'expected a user name, "UID", "UID:GID" or a table {{uid, gid}}, got {_show(value)}')

    def namespaces(self, c: _Container, sources: dict[str, Path | str]) -> Any:
        got = self.get(c, "namespaces")
        if got is None:
            return [{"type": kind} for kind in _DEFAULT_NAMESPACES]
        value, path = got
        if not isinstance(value, list):
            return value  # the OCI loader says what it expected
        out = []
        for i, item in enumerate(value):
            sources[f"linux.namespaces[{i}]"] = path + (i,)
            if isinstance(item, str):
                sources[f"linux.namespaces[{i}].type"] = path + (i,)
                out.append({"type": item})
            elif isinstance(item, dict):
                out.append(copy.deepcopy(item))
            else:
                raise self.error(path + (i,), f"expected a namespace type or a table {{type, path}}, got {_show(item)}")
        return out

    def mounts(self, c: _Container, sources: dict[str, Path | str], sysfs: bool) -> list[Any]:
        """The default mounts (``/sys`` only with a network namespace of the container's own, see
        the module's docstring), then ``[defaults]``' and the container's: one on a destination
        that a layer below mounts replaces that mount where it is."""
        mounts: list[Any] = [copy.deepcopy(m) for m in _DEFAULT_MOUNTS if sysfs or m["destination"] != "/sys"]
        for k, mount in enumerate(mounts):
            sources[f"mounts[{k}]"] = f'the default mount on {mount["destination"]}'
        for value, path in self.layers(c, "mounts"):
            if not isinstance(value, list):
                raise self.error(path, f"expected a list of mount tables, got {_show(value)}")
            # replaced: the mounts of the layers below, not those of this same list
            below = {key: k for k, m in enumerate(mounts) if (key := _mount_key(m)) is not None}
            for i, mount in enumerate(value):
                k = below.pop(_mount_key(mount) or "", len(mounts))
                if k == len(mounts):
                    mounts.append(None)
                mounts[k] = copy.deepcopy(mount)
                sources[f"mounts[{k}]"] = path + (i,)
        return mounts

    def sysctl(self, c: _Container, sources: dict[str, Path | str]) -> dict[str, Any] | None:
        """The layers' sysctls merged, nested tables (``sysctl.net.ipv4.ip_forward = "1"``)
        flattened to dotted names."""
        layers = self.layers(c, "sysctl")
        if not layers:
            return None
        out: dict[str, Any] = {}

        def walk(prefix: str, table: dict[str, Any], path: Path) -> None:
            for key, value in table.items():
                name = f"{prefix}.{key}" if prefix else key
                if isinstance(value, dict):
                    walk(name, value, path + (key,))
                else:
                    out[name] = value
                    sources[f"linux.sysctl.{name}"] = path + (key,)

        for value, path in layers:
            if not isinstance(value, dict):
                raise self.error(path, f'expected a table {{"name" = "value"}}, got {_show(value)}')
            walk("", value, path)
        return out

    # -- the whole manifest ------------------------------------------------------------------------

    def check_dependencies(self, containers: list[_Container]) -> None:
        by_name = {c.name: c for c in containers}
        for c in containers:
            for dep, path in c.depends_on:
                if dep not in by_name:
                    raise self.error(path, f'unknown container "{dep}"')
            for dep, (cond, path) in c.conditions.items():
                other = by_name[dep].policy
                if cond == "healthy" and other.get("healthcheck") is None and not other.get("notify"):
                    raise self.error(path, f'"{dep}" has no health check (a healthcheck, or notify = true): '
                                           "it would never be healthy")
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(c: _Container, stack: list[str]) -> None:
            state[c.name] = 1
            stack.append(c.name)
            for dep, _ in c.depends_on:
                if state.get(dep) == 1:
                    cycle = stack[stack.index(dep):]
                    first = min(cycle, key=list(by_name).index)
                    k = cycle.index(first)
                    cycle = cycle[k:] + cycle[:k]
                    raise self.error(by_name[first].depends_on_path,
                                     "dependency cycle: " + " -> ".join(cycle + [first]))
                if dep not in state:
                    visit(by_name[dep], stack)
            stack.pop()
            state[c.name] = 2

        for c in containers:
            if c.name not in state:
                visit(c, [])

    def expand(self, containers: list[_Container]) -> Manifest:
        names = {c.name: [c.name] if c.replicas is None else [f"{c.name}-{i}" for i in range(c.replicas)]
                 for c in containers}
        owner: dict[str, str] = {}  # service name -> what it is, for errors
        log_owner: dict[str, str] = {}
        services = []
        origins = {}
        for c in containers:
            assert c.spec is not None and c.origin is not None
            spec = c.spec
            if c.init:
                spec = attrs.evolve(spec, annotations={**spec.annotations, INIT_ANNOTATION: "true"})
            depends_on = tuple(name for dep, _ in c.depends_on for name in names[dep])
            conditions = {name: cast(Condition, cond) for dep, (cond, _) in c.conditions.items()
                          for name in names[dep]}
            policy = Policy(depends_on=depends_on, conditions=conditions, **c.policy)
            for i, name in enumerate(names[c.name]):
                what = f"containers.{c.name}" if c.replicas is None else f"replica {i} of containers.{c.name}"
                if name in owner:
                    if c.replicas is None:
                        raise self.error(("containers", c.name), f'the name "{name}" is already used by {owner[name]}')
                    got = self.get(c, "replicas")
                    assert got is not None
                    raise self.error(got[1], f'replica {i} would be named "{name}", which {owner[name]} already uses')
                owner[name] = what
                replica = spec
                if c.replicas is not None:
                    env = tuple(e for e in spec.process.env if not e.startswith(f"{REPLICA_ENV}="))
                    replica = attrs.evolve(spec, process=attrs.evolve(spec.process, env=env + (f"{REPLICA_ENV}={i}",)))
                log = LogConfig(**c.log)
                if log.file is not None:
                    file = os.path.join(self.dir, log.file.replace("{name}", name))
                    if file in log_owner:
                        raise self.error(c.log_file_path, f'"{file}" is also the log file of {log_owner[file]}: '
                                                          'give each its own, e.g. "{name}.log"')
                    log_owner[file] = name
                    log = attrs.evolve(log, file=file)
                services.append(Service(name, replica, policy, log, c.network))
                origins[name] = c.origin
        return Manifest(self.abspath, tuple(services), origins)


# -- small helpers -----------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def parse_env_file(text: str) -> list[tuple[str, str]]:
    """compose's ``env_file`` format: ``NAME=VALUE`` lines (``export`` in front is allowed); blank
    lines and lines starting with ``#`` skipped; a value in single quotes is taken as it is, in
    double quotes with ``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes (and may span lines); an
    unquoted one is trimmed and loses a `` #`` comment. Values are literal: no ``${VAR}``
    interpolation, and a bare ``NAME`` (compose: from the caller's environment) is an error, since
    the supervisor's environment is not the container's. Raises ``ValueError`` naming the line."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq:
            raise ValueError(f"line {number}: expected NAME=VALUE, got {line!r} (values are not taken from "
                             "the supervisor's environment)")
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"line {number}: {name!r} is not a variable name")
        value = value.strip()
        if value[:1] == "'":
            end = value.find("'", 1)
            if end < 0:
                raise ValueError(f"line {number}: the single quote is not closed")
            value = value[1:end]
        elif value[:1] == '"':
            chars: list[str] = []
            rest, j = value, 1
            while True:
                if j >= len(rest):
                    if i >= len(lines):
                        raise ValueError(f"line {number}: the double quote is not closed")
                    chars.append("\n")
                    rest, j = lines[i], 0
                    i += 1
                    continue
                ch = rest[j]
                if ch == "\\" and j + 1 < len(rest):
                    chars.append(_ESCAPES.get(rest[j + 1], "\\" + rest[j + 1]))
                    j += 2
                elif ch == '"':
                    break
                else:
                    chars.append(ch)
                    j += 1
            value = "".join(chars)
        else:
            comment = value.find(" #")
            if comment >= 0:
                value = value[:comment].rstrip()
        out.append((name, value))
    return out

def _merge(old: Any, new: Any) -> Any:
    """``new`` over ``old``: tables merge key by key, recursively; anything else is replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for key, value in new.items():
            out[key] = _merge(old.get(key), value)
        return out
    return new


def _mount_key(mount: Any) -> str | None:
    dest = mount.get("destination") if isinstance(mount, dict) else None
    return posixpath.normpath(dest) if isinstance(dest, str) and dest else None


def _passwd_gid(rootfs: str, uid: int) -> int:
    """The group of ``uid`` in the rootfs's /etc/passwd, or 0."""
    try:
        with open(resolve_in_root(rootfs, "/etc/passwd"), encoding="utf-8", errors="replace") as f:
            for line in f:
                entry = line.rstrip("\n").split(":")
                if len(entry) >= 4 and entry[2] == str(uid) and entry[3].isdigit():
                    return int(entry[3])
    except (OSError, SpecError):
        pass
    return 0


def _map_field(sources: Mapping[str, Path | str], base: Path, field: str) -> tuple[Path, str]:
    """The manifest path for an OCI field (``process.rlimits[0].type`` -> ``containers.web.rlimits[0].type``),
    and a prefix for the reason when no manifest key set it (a built-in default, or an OCI field the
    manifest has no key for): then the path is the container's."""
    best = ""
    for prefix in sources:
        if len(prefix) > len(best) and (field == prefix or field.startswith((prefix + ".", prefix + "["))):
            best = prefix
    if not best:
        return base, f"{field}: " if field else ""
    target = sources[best]
    if isinstance(target, str):
        return base, f"{field} ({target}): "
    rest: list[str | int] = []
    for m in re.finditer(r"\.([^.\[\]]+)|\[(\d+)\]", field[len(best):]):
        rest.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
    return target + tuple(rest), ""


def _field(path: Path) -> str:
    """A manifest path as TOML spells it: ``containers."my app".mounts[0].options``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{key}" if out else key
    return out


def _show(value: Any) -> str:
    """A value for an error message: strings quoted, scalars as TOML writes them, others by kind."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


# -- where keys are: a scanner of TOML text ----------------------------------------------------------

class _Locator:
    """The line of every key, table header and array element of a TOML document, by path
    (``("containers", "web", "mounts", 0, "destination")``).

    tomllib keeps no positions, so this scans the text again: headers (``[a."b"]``, ``[[a.b]]``),
    dotted keys, inline tables and arrays, strings of all four kinds and comments. It runs on text
    tomllib accepted and is best effort: what it cannot follow is simply not located.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.found: dict[Path, tuple[int, bool]] = {}  # path -> (line, defined explicitly)
        self._newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        try:
            self._document()
        except (IndexError, ValueError, KeyError, RecursionError, tomllib.TOMLDecodeError):
            pass

    def line(self, path: Path) -> int | None:
        """The line of ``path``, else of the nearest enclosing key that is in the text, else None."""
        for n in range(len(path), 0, -1):
            hit = self.found.get(path[:n])
            if hit is not None:
                return hit[0]
        return None

    def _note(self, path: Path, pos: int) -> None:
        line = bisect_left(self._newlines, pos) + 1
        for n in range(1, len(path)):
            self.found.setdefault(path[:n], (line, False))
        if path not in self.found or not self.found[path][1]:
            self.found[path] = (line, True)

    def _skip(self, i: int, newlines: bool = False) -> int:
        t = self.text
        while i < len(t):
            ch = t[i]
            if ch in " \t":
                i += 1
            elif newlines and ch in "\r\n":
                i += 1
            elif newlines and ch == "#":
                while i < len(t) and t[i] != "\n":
                    i += 1
            else:
                break
        return i

    def _document(self) -> None:
        t = self.text
        table: Path = ()
        arrays: dict[Path, int] = {}  # array of tables -> index of its last element
        i = self._skip(0, True)
        while i < len(t):
            start = i
            if t.startswith("[[", i):
                keys, i = self._key(i + 2)
                if not t.startswith("]]", i):
                    raise ValueError(i)
                i += 2
                path = self._resolve(keys, arrays)
                arrays[path] = arrays.get(path, -1) + 1
                table = path + (arrays[path],)
                self._note(table, start)
            elif t[i] == "[":
                keys, i = self._key(i + 1)
                if t[i] != "]":
                    raise ValueError(i)
                i += 1
                table = self._resolve(keys, arrays)
                self._note(table, start)
            else:
                i = self._keyval(i, table)
            i = self._skip(i, True)

    @staticmethod
    def _resolve(keys: list[str], arrays: dict[Path, int]) -> Path:
        """A header's path, through the last element of each array of tables on the way."""
        path: Path = ()
        for n, key in enumerate(keys):
            path += (key,)
            if n < len(keys) - 1 and path in arrays:
                path += (arrays[path],)
        return path

    def _key(self, i: int) -> tuple[list[str], int]:
        t = self.text
        parts = []
        while True:
            i = self._skip(i)
            if t[i] == '"':
                end = self._basic_end(i)
                parts.append(tomllib.loads("k = " + t[i:end])["k"])
                i = end
            elif t[i] == "'":
                end = t.index("'", i + 1)
                parts.append(t[i + 1:end])
                i = end + 1
            else:
                m = _BARE_KEY.match(t, i)
                if m is None:
                    raise ValueError(i)
                parts.append(m.group())
                i = m.end()
            i = self._skip(i)
            if i < len(t) and t[i] == ".":
                i += 1
                continue
            return parts, i

    def _keyval(self, i: int, table: Path) -> int:
        start = i
        keys, i = self._key(i)
        path = table + tuple(keys)
        self._note(path, start)
        if self.text[i] != "=":
            raise ValueError(i)
        return self._value(self._skip(i + 1), path)

    def _basic_end(self, i: int) -> int:
        """Past the end of the one-line basic string at ``i``."""
        t = self.text
        j = i + 1
        while t[j] != '"':
            j += 2 if t[j] == "\\" else 1
        return j + 1

    def _value(self, i: int, path: Path) -> int:
        t = self.text
        for quotes in ('"""', "'''"):
            if t.startswith(quotes, i):
                j = i + 3
                while not t.startswith(quotes, j):
                    j += 2 if quotes == '"""' and t[j] == "\\" else 1
                end = j + 3
                while end < len(t) and t[end] == quotes[0] and end < j + 5:  # up to two quotes of content
                    end += 1
                return end
        ch = t[i]
        if ch == '"':
            return self._basic_end(i)
        if ch == "'":
            return t.index("'", i + 1) + 1
        if ch == "[":
            i = self._skip(i + 1, True)
            n = 0
            while t[i] != "]":
                self._note(path + (n,), i)
                i = self._skip(self._value(i, path + (n,)), True)
                n += 1
                if t[i] == ",":
                    i = self._skip(i + 1, True)
            return i + 1
        if ch == "{":
            i = self._skip(i + 1, True)
            while t[i] != "}":
                i = self._skip(self._keyval(i, path), True)
                if t[i] == ",":
                    i = self._skip(i + 1, True)
            return i + 1
        j = i
        while j < len(t) and t[j] not in ",]}#\r\n":
            j += 1
        if j == i:
            raise ValueError(i)
        return j
