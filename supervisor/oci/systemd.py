"""The systemd cgroup driver (``--systemd-cgroup``): each container's cgroup is a transient scope unit.

Theory of operation. With the systemd cgroup driver (containerd's ``SystemdCgroup = true``, the
kubelet's ``cgroupDriver: systemd``) systemd owns the cgroup tree, and a runtime asks it for a
cgroup instead of making one: ``linux.cgroupsPath`` is ``SLICE:PREFIX:NAME`` (CRI writes
``kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>``), and the container lives in the scope
unit ``PREFIX-NAME.scope`` in that slice. The unit is named by what systemd calls it; where its
cgroup is follows from systemd's naming: a slice ``a-b.slice`` is ``/a.slice/a-b.slice``, so the
scope's cgroup is ``/a.slice/a-b.slice/PREFIX-NAME.scope`` in every hierarchy (v2, and on a v1 or
hybrid host each v1 hierarchy systemd manages).

``create`` spawns the bootstrap as always; while it waits for its message, ``start_scope`` asks
systemd (``StartTransientUnit``) for the scope with the bootstrap's pid in it, ``Delegate=yes`` (the
subtree is ours to write) and the limits systemd has properties for, and waits until systemd's job
for it is done. The directories the scope got are then the container's cgroup: the existing cgroup
code writes every limit into them (what systemd has no property for too, and the controllers a v1
systemd does not manage, freezer and cpuset, are made below the same path), and the bootstrap is
joined to them all before it reads its message, so the init is born in the scope. ``delete`` stops
the unit (``StopUnit``, waited for) and clears a failed state, so nothing stays loaded.

systemd is spoken to over D-Bus on its private socket, ``/run/systemd/private``: a direct
connection to the manager that root may use with EXTERNAL authentication, with no bus daemon in
between (kubeadm nodes run one, minimal ones may not). ``jeepney`` marshals the messages; it is
imported here only, and this module only by the calls that have ``--systemd-cgroup``.
"""

import errno
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import attrs

from .log import CommandError

if TYPE_CHECKING:
    from ..resources import Resources

__all__ = ["PRIVATE_SOCKET", "Unit", "Systemd", "SystemdError", "Refused", "expand_slice", "limit_properties",
           "properties"]

#: systemd's private D-Bus socket (root only): the manager's own, no bus daemon needed
PRIVATE_SOCKET = "/run/systemd/private"
#: the unit prefix when the config has no cgroupsPath (runc's is "runc")
DEFAULT_PREFIX = "supervisor-oci"
DEFAULT_SLICE = "system.slice"
#: how long a start or stop job may take (runc waits as long)
JOB_TIMEOUT = 30.0

_FIELD = "linux.cgroupsPath"


def expand_slice(slice_name: str) -> str:
    """The cgroup path of a slice unit, as systemd lays slices out: each dash a level
    (``a-b-c.slice`` is ``/a.slice/a-b.slice/a-b-c.slice``; ``-.slice`` is the root)."""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise CommandError(f"{_FIELD}: invalid slice name {slice_name!r}: a systemd slice unit (NAME.slice), "
                           "no '/'")
    stem = slice_name[:-len(".slice")]
    if stem == "-":
        return "/"
    parts = stem.split("-")
    if not stem or any(not p for p in parts):
        raise CommandError(f"{_FIELD}: invalid slice name {slice_name!r}: no empty part between dashes")
    path = ""
    for i in range(len(parts)):
        path += "/" + cgroup_name("-".join(parts[:i + 1]) + ".slice")
    return path


#: the controllers systemd (252) knows by name: a unit named after one gets an escaped cgroup
_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "io", "blkio", "memory", "devices", "pids", "bpf-firewall",
                          "bpf-devices", "bpf-foreign", "bpf-socket-bind", "bpf-restrict-network-interfaces"})


def cgroup_name(unit_name: str) -> str:
    """The name of a unit's cgroup directory: the unit's, with a ``_`` before it where it could be
    taken for a file of the cgroup filesystem or a name systemd keeps for itself (a leading ``_`` or
    ``.``, ``cgroup.``, or a controller's name before the suffix: ``cpu.scope`` is ``_cpu.scope``),
    as systemd escapes them."""
    stem = unit_name.rpartition(".")[0]
    if unit_name[:1] in ("_", ".") or unit_name.startswith("cgroup.") or stem in _CONTROLLERS:
        return "_" + unit_name
    return unit_name


@attrs.frozen
class Unit:
    """The container's scope: its unit name and the slice it goes into."""

    slice: str
    name: str

    @classmethod
    def from_cgroups_path(cls, cgroups_path: str | None, container_id: str) -> "Unit":
        """``SLICE:PREFIX:NAME`` (runc's form; empty parts take runc's defaults: the system slice,
        and the container's id as the name); no cgroupsPath: ``system.slice`` and
        ``supervisor-oci-ID.scope``."""
        if not cgroups_path:
            unit = cls(DEFAULT_SLICE, f"{DEFAULT_PREFIX}-{container_id}.scope")
            _check_unit_name(unit.name, f"the container id {container_id!r}")
            return unit
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise CommandError(f'{_FIELD}: expected "slice:prefix:name" for systemd cgroups, got '
                               f'{cgroups_path!r} instead')
        slice_name, prefix, name = parts
        slice_name = slice_name or DEFAULT_SLICE
        name = name or container_id
        if name.endswith(".slice"):
            raise CommandError(f"{_FIELD}: {cgroups_path!r}: a container in a slice unit of its own is not "
                               "supported (a scope is: give NAME without .slice)")
        if "/" in prefix or "/" in name:
            raise CommandError(f"{_FIELD}: {cgroups_path!r}: no '/' in the prefix or the name")
        expand_slice(slice_name)  # checked now, before anything is spawned
        unit = cls(slice_name, f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
        for what in (unit.slice, unit.name):
            _check_unit_name(what, f"{_FIELD} {cgroups_path!r}" if parts[2] or what == unit.slice else
                             f"the container id {container_id!r}")
        return unit

    @property
    def cgroup_path(self) -> str:
        """The scope's cgroup, from each hierarchy's root."""
        return os.path.join(expand_slice(self.slice), cgroup_name(self.name))


#: the characters of a unit name (systemd's rule; '@' only in a template's, and a scope has none)
_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\")
_UNIT_NAME_MAX = 255


def _check_unit_name(name: str, source: str) -> None:
    """A name systemd refuses (``Invalid unit name``) is an error before anything is spawned, one
    that says where the name came from: an id may hold '+' and any letter, systemd takes ASCII only."""
    if len(name) > _UNIT_NAME_MAX or not set(name) <= _UNIT_CHARS:
        raise CommandError(f"systemd cannot name a unit {name!r} (from {source}): ASCII letters, digits and "
                           f"':-_.\\' only, at most {_UNIT_NAME_MAX} characters")


#: what systemd reads as "no limit" in a limit property (``infinity``)
INFINITY = 2**64 - 1

Property = tuple[str, tuple[str, Any]]


def properties(resources: "Resources | None", v2: bool) -> list[Property]:
    """The unit properties at create: accounting, and the limits systemd knows (``limit_properties``).
    ``v2``: whether the memory controller is cgroup v2's (the names differ)."""
    # accounting on: systemd then gives the scope a cgroup in these controllers (on v1 too)
    props: list[Property] = [
        (name, ("b", True)) for name in ("MemoryAccounting", "CPUAccounting", "TasksAccounting",
                                         "IOAccounting" if v2 else "BlockIOAccounting")]
    if resources is not None:
        props += limit_properties(resources, v2)
    return props


def limit_properties(resources: "Resources", v2: bool) -> list[Property]:
    """The limits of ``resources`` that systemd has a property for, and only those that are set: so that
    systemd, when it applies the unit's settings again (a ``daemon-reload``), writes the container's
    values and not its defaults or older ones. create sends them with the scope, update each time it
    changes one. A limit of -1 (OCI's "unlimited") is systemd's ``infinity``. A CPU quota needs its
    period (systemd takes the quota per second, in whole percent): the caller fills in the one an
    update leaves out."""
    props: list[Property] = []
    m = resources.memory
    if m is not None and m.limit is not None and m.limit != 0:
        props.append(("MemoryMax" if v2 else "MemoryLimit", ("t", INFINITY if m.limit < 0 else m.limit)))
    c = resources.cpu
    if c is not None:
        if c.shares is not None and c.shares > 0:
            if v2:
                props.append(("CPUWeight", ("t", 1 + ((c.shares - 2) * 9999) // 262142)))
            else:
                props.append(("CPUShares", ("t", c.shares)))
        if c.quota is not None and c.quota != 0:
            # systemd keeps a transient unit's quota as a whole percent (its CPUQuota=, which a
            # daemon-reload reads back): rounded up to one, so a reload never lowers the quota
            period = c.period or 100000
            per_second = INFINITY if c.quota < 0 else -(-c.quota * 100 // period) * 10_000
            props.append(("CPUQuotaPerSecUSec", ("t", per_second)))
        if c.period:
            # on v1 too (systemd 242 on): without it systemd writes its own period, 100 ms
            props.append(("CPUQuotaPeriodUSec", ("t", c.period)))
    if resources.pids_limit is not None:
        props.append(("TasksMax", ("t", INFINITY if resources.pids_limit <= 0 else resources.pids_limit)))
    return props


class SystemdError(CommandError):
    """systemd refused, or its job failed."""


class Refused(SystemdError):
    """systemd answered a call with an error: it did nothing (``name``: the D-Bus error's name)."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


def _connect(address: str, timeout: float) -> tuple[socket.socket, bytes]:
    """A connection authenticated as our uid (EXTERNAL), and what came after the server's OK.

    The whole authentication is sent in one write, BEGIN included, before the OK is read, as
    systemd's own clients do. Sending BEGIN only after the OK (jeepney's ``prep_socket``) let it
    reach systemd 252 in one read with the first method call now and then, and systemd then never
    answered that call (1 start in 10 hung for the whole timeout)."""
    from jeepney.auth import BEGIN, make_auth_external

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(b"\0" + make_auth_external() + BEGIN)
        reply = b""
        while b"\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                raise ValueError("the connection was closed during authentication")
            reply += data
        line, rest = reply.split(b"\r\n", 1)
        if not line.startswith(b"OK "):
            raise ValueError(f"authentication refused: {line.decode(errors='replace')}")
        return sock, rest
    except BaseException:
        sock.close()
        raise


class Systemd:
    """One connection to systemd's manager, on its private socket. Blocking, for a one-shot call."""

    def __init__(self, address: str = PRIVATE_SOCKET, timeout: float = JOB_TIMEOUT) -> None:
        from jeepney import Parser

        self.timeout = timeout
        try:
            sock, rest = _connect(address, timeout)
        except (OSError, ValueError) as e:
            raise SystemdError(f"--systemd-cgroup: connecting to systemd at {address}: {e} (systemd must be "
                               "the init here, and this must run as root)") from None
        # A direct connection to the manager: no bus, so no Hello and no match rules; once
        # subscribed, the manager sends its signals straight to us. jeepney's sans-io layer
        # (serialise, Parser) on a blocking socket: its connection classes assume a bus.
        self._sock = sock
        self._parser = Parser()
        self._parser.add_data(rest)
        self._serial = 0
        #: messages that came while waiting for something else (a signal before a method's reply)
        self._pending: list[Any] = []
        #: the unit a StartTransientUnit was sent for, unless systemd refused it: from then on it may
        #: be loaded (a job that fails once we gave up on it leaves it loaded, failed), so a create
        #: that fails must stop it; a unit of that name that someone else runs is not ours to stop
        self.started: str | None = None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Systemd":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the calls -----------------------------------------------------------------------------

    def start_scope(self, unit: Unit, pid: int, description: str,
                    extra: list[Property]) -> None:
        """Start the scope with ``pid`` in it; return once systemd's job for it is done."""
        props = [("Description", ("s", description)), ("Slice", ("s", unit.slice)),
                 ("Delegate", ("b", True)), ("PIDs", ("au", [pid])),
                 # like any container runtime's: the container is not the host's boot transaction
                 ("DefaultDependencies", ("b", False)), *extra]
        self._call("Subscribe", "", ())
        try:
            job = self._start_transient(unit.name, props)
        except Refused as e:
            if not e.name.endswith(".UnitExists"):
                raise
            # a scope of that name that failed stays loaded until its failure is cleared
            self._call("ResetFailedUnit", "s", (unit.name,), ignore=("NoSuchUnit",))
            job = self._start_transient(unit.name, props)
        result = self._wait_job(job)
        if result != "done":
            raise SystemdError(f"systemd could not start unit {unit.name}: its job says {result!r}")

    def _start_transient(self, name: str, props: list[Property]) -> str:
        """StartTransientUnit; its job's path. ``started`` says whether the unit may exist now."""
        self.started = name
        try:
            return str(self._call("StartTransientUnit", "ssa(sv)a(sa(sv))", (name, "fail", props, []))[0])
        except Refused:
            self.started = None
            raise

    def set_properties(self, name: str, props: list[Property]) -> None:
        """Change the unit's properties for as long as it runs (``runtime``: nothing is written to
        /etc); systemd writes the cgroup files of those it applies itself, at once."""
        self._call("SetUnitProperties", "sba(sv)", (name, True, props))

    def stop(self, name: str) -> None:
        """Stop the unit and wait for it; clear a failed state, so nothing stays loaded. A unit that
        is gone already (a scope goes once its last process has) is fine."""
        self._call("Subscribe", "", ())
        reply = self._call("StopUnit", "ss", (name, "replace"), ignore=("NoSuchUnit",))
        if reply:
            result = self._wait_job(reply[0])
            if result not in ("done", "canceled"):
                raise SystemdError(f"systemd could not stop unit {name}: its job says {result!r}")
        self._call("ResetFailedUnit", "s", (name,), ignore=("NoSuchUnit",))

    # -- the wire ------------------------------------------------------------------------------

    def _call(self, method: str, signature: str, body: tuple[Any, ...],
              ignore: tuple[str, ...] = ()) -> tuple[Any, ...]:
        """Call a method of the manager and return its reply's body (empty for an error of a name
        ending in one of ``ignore``). Signals that arrive meanwhile are kept for ``_wait_job``."""
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.low_level import HeaderFields

        manager = DBusAddress("/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1",
                              interface="org.freedesktop.systemd1.Manager")
        message = new_method_call(manager, method, signature or None, body)
        self._serial += 1
        serial = self._serial
        self._sock.settimeout(self.timeout)
        try:
            self._sock.sendall(message.serialise(serial=serial))
        except OSError as e:
            raise SystemdError(f"systemd: {method}: {e}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline, f"the reply to {method}")
            if reply.header.fields.get(HeaderFields.reply_serial) != serial:
                self._pending.append(reply)
                continue
            if reply.header.message_type == MessageType.error:
                name = str(reply.header.fields.get(HeaderFields.error_name, "error"))
                if any(name.endswith("." + i) for i in ignore):
                    return ()
                text = reply.body[0] if reply.body else ""
                raise Refused(f"systemd: {method}: {name}: {text}", name)
            return tuple(reply.body)

    def _receive(self, deadline: float, what: str) -> Any:
        while (message := self._parser.get_next_message()) is None:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                self._sock.settimeout(left)
                data = self._sock.recv(65536)
            except TimeoutError:
                raise SystemdError(f"systemd: no answer in {self.timeout:g} s waiting for {what}") from None
            except OSError as e:
                raise SystemdError(f"systemd: {what}: {os.strerror(e.errno or errno.EIO)}") from None
            if not data:
                raise SystemdError(f"systemd: {what}: the connection was closed")
            self._parser.add_data(data)
        return message

    def _wait_job(self, job: str) -> str:
        """The result of the job at object path ``job``, from the manager's ``JobRemoved`` signal."""
        from jeepney import MessageType
        from jeepney.low_level import HeaderFields

        deadline = time.monotonic() + self.timeout
        while True:
            message = self._pending.pop(0) if self._pending else self._receive(deadline, f"job {job}")
            if (message.header.message_type == MessageType.signal
                    and message.header.fields.get(HeaderFields.member) == "JobRemoved"
                    and message.body[1] == job):
                return str(message.body[3])
