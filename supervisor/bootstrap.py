"""A ``Plan`` as the bootstrap's netlink message, and back.

The message classes are pyroute2's; their attribute maps are generated from the C parser's own
tables (``sv_attr_type`` through cffi), so the encoder and the parser cannot disagree about an id or
a payload type. ``decode`` exists for tests and debugging: the bootstrap never sends one back.
"""

import functools
import struct
from typing import Any

from attrs import evolve

from ._pyroute2 import NLM_F_REQUEST, nla, nlmsg
from ._wire import MAX_MESSAGE, MSG_BOOTSTRAP, Attr, Mk, nla_map, payload_type, scope_of
from .errors import SpecError
from .plan import Plan, Step
from .spec import Hook

__all__ = ["BootstrapMessage", "decode", "encode"]

_NLA_MAX_LEN = 0xFFFF


def _nla_map(scope: int, members: Any) -> tuple[tuple[int, str, str], ...]:
    return nla_map(members, functools.partial(payload_type, scope))


#: the message class, and one class per kind of nested attribute (a step, a namespace, an rlimit)
BootstrapMessage: type[nlmsg] = type("BootstrapMessage", (nlmsg,), {"nla_map": _nla_map(0, Attr)})
_NESTED: dict[int, type[nla]] = {attr: type(f"{fields.__name__}Nla", (nla,), {"nla_map": _nla_map(attr, fields)})
                                 for attr, fields in scope_of.items()}


@functools.lru_cache(maxsize=4096)
def _nested(attr: int, fields: tuple[tuple[str, Any], ...]) -> bytes:
    """The payload of one nested attribute. Cached by value: containers share most of their steps
    (the same mounts and devices), and pyroute2's encoder is pure Python, about 60 µs a step."""
    n = _NESTED[attr]()
    n["attrs"] = list(fields)
    n.encode()
    return bytes(n.data[4:n["header"]["length"]])


def _check_str(value: str, what: str) -> str:
    if "\0" in value:
        raise SpecError(what, "contains a NUL character")
    if len(value.encode()) + 5 > _NLA_MAX_LEN:
        raise SpecError(what, f"is longer than {_NLA_MAX_LEN - 5} bytes")
    return value


def _step_attrs(step: Step) -> tuple[tuple[str, Any], ...]:
    attrs: list[tuple[str, Any]] = [("OP", int(step.op))]
    for name in ("src", "dst", "fstype", "data"):
        value = getattr(step, name)
        if value is not None:
            attrs.append((name.upper(), _check_str(value, f"{step.op.name.lower()} {name}")))
    for name in ("flags", "remount_flags", "propagation", "mode", "major", "minor", "uid", "gid"):
        value = getattr(step, name)
        if value:
            attrs.append((name.upper(), value))
    if step.mktype != Mk.NONE:
        attrs.append(("MKTYPE", int(step.mktype)))
    if step.cgroup:
        attrs.append(("CGROUP", 1))
    return tuple(attrs)


def _step(step: Step) -> bytes:
    """One step's nested attribute; a step too big for a netlink attribute (its strings fit one by
    one, not together) is a ``SpecError`` that names it, not pyroute2's ``struct.error``."""
    fields = _step_attrs(step)
    size = sum(4 + (len(v.encode()) + 1 if isinstance(v, str) else 8) for _, v in fields)
    if size + 4 > _NLA_MAX_LEN:
        raise SpecError(f"{step.op.name.lower()} {step.dst}",
                        f"takes {size} bytes, over the {_NLA_MAX_LEN} a step can carry")
    return _nested(Attr.STEP, fields)


def _hook(attr: Attr, hook: Hook, field: str) -> bytes:
    """One hook's nested attribute (argv and env complete, as the planner made them)."""
    fields: list[tuple[str, Any]] = [("PATH", _check_str(hook.path, f"{field}.path"))]
    fields += [("ARG", _check_str(arg, f"{field}.args")) for arg in hook.args]
    fields += [("ENV", _check_str(env, f"{field}.env")) for env in hook.env]
    if hook.timeout:
        fields.append(("TIMEOUT", hook.timeout))
    size = sum(4 + (len(v.encode()) + 1 if isinstance(v, str) else 4) for _, v in fields)
    if size + 4 > _NLA_MAX_LEN:
        raise SpecError(field, f"takes {size} bytes, over the {_NLA_MAX_LEN} a hook can carry")
    return _nested(attr, tuple(fields))


def encode(plan: Plan) -> bytes:
    """The bootstrap message for a plan. Raises ``SpecError`` when a value cannot be carried.

    Everything but the container's cgroup path is the same for every container of a spec (their
    replicas, their restarts): that part is encoded once (memoized by value), and the cgroup path is
    appended as the last attribute."""
    if plan.cgroup is None:
        return _encode(plan)
    shared = _encode(evolve(plan, cgroup=None))
    tail = _attributes([("CGROUP_PATH", _check_str(plan.cgroup.lstrip("/") or ".", "linux.cgroupsPath"))])
    return struct.pack("=I", len(shared) + len(tail)) + shared[4:] + tail


def _attributes(pairs: list[tuple[str, Any]]) -> bytes:
    """Attributes alone, encoded by the message class (a message without its header)."""
    msg = BootstrapMessage()
    msg["header"]["type"] = MSG_BOOTSTRAP
    msg["attrs"] = pairs
    msg.encode()
    return bytes(msg.data[16:])


@functools.lru_cache(maxsize=256)
def _encode(plan: Plan) -> bytes:
    a: list[tuple[str, Any]] = [("CLONE_FLAGS", plan.clone_flags)]

    def add(name: str, value: Any) -> None:
        if value is None or value is False:
            return
        if isinstance(value, str):
            value = _check_str(value, name.lower())
        a.append((name, int(value) if isinstance(value, bool) else value))

    for ns_type, path in plan.ns_paths:
        a.append(("NS_PATH", _nested(Attr.NS_PATH, (("TYPE", ns_type), ("PATH", _check_str(path, "namespace path"))))))
    if plan.oom_score_adj is not None:
        add("OOM_SCORE_ADJ", plan.oom_score_adj & 0xFFFFFFFF)
    add("ROOTFS", plan.rootfs)
    add("ROOTFS_BIND", plan.rootfs_bind)
    add("ROOT_PROPAGATION", plan.root_propagation or None)
    a += [("STEP", _step(step)) for step in plan.steps]
    add("HOSTNAME", plan.hostname)
    add("DOMAINNAME", plan.domainname)
    a += [("RLIMIT", _nested(Attr.RLIMIT, (("RESOURCE", r), ("SOFT", soft), ("HARD", hard))))
          for r, soft, hard in plan.rlimits]
    add("UMASK", plan.umask)
    add("NO_NEW_PRIVS", plan.no_new_privs)
    add("UID", plan.uid)
    add("GID", plan.gid)
    add("SETGROUPS", plan.setgroups)
    a += [("GROUP", g) for g in plan.groups]
    if plan.caps is not None:
        for name, mask in zip(("BOUNDING", "EFFECTIVE", "PERMITTED", "INHERITABLE", "AMBIENT"), plan.caps, strict=True):
            a.append((f"CAP_{name}", mask))
    add("PDEATHSIG", plan.pdeathsig or None)
    add("CWD", plan.cwd)
    a += [("ARG", _check_str(arg, "process.args")) for arg in plan.args]
    a += [("ENV", _check_str(env, "process.env")) for env in plan.env]
    a += [("EXEC_PATH", _check_str(path, "process.args[0]")) for path in plan.exec_paths]
    add("BECOME_ROOT", plan.become_root)
    add("PID1_INIT", plan.pid1_init)
    add("LOOPBACK_UP", plan.loopback_up)
    add("APPARMOR", plan.apparmor_profile)
    add("SELINUX", plan.selinux_label)
    add("TERMINAL", plan.terminal)
    if plan.terminal and plan.console_size is not None:
        add("CONSOLE_SIZE", plan.console_size[0] << 16 | plan.console_size[1])
    add("EXEC_FIFO", plan.exec_fifo)
    add("PRESERVE_FDS", plan.preserve_fds or None)
    a += [("CREATE_HOOK", _hook(Attr.CREATE_HOOK, h, f"hooks.createContainer[{i}]"))
          for i, h in enumerate(plan.create_hooks)]
    a += [("START_HOOK", _hook(Attr.START_HOOK, h, f"hooks.startContainer[{i}]"))
          for i, h in enumerate(plan.start_hooks)]
    if plan.hook_state is not None:
        # the annotations are most of it
        for name, text in zip(("CREATE_STATE", "START_STATE", "STATE_TAIL"), plan.hook_state, strict=True):
            a.append((name, _check_str(text, "annotations (in the hooks' state)")))
    if plan.seccomp is not None:
        if len(plan.seccomp) + 4 > _NLA_MAX_LEN:
            raise SpecError("linux.seccomp", f"the compiled filter takes {len(plan.seccomp)} bytes, too many")
        a.append(("SECCOMP", plan.seccomp))
        add("SECCOMP_FLAGS", plan.seccomp_flags or None)

    msg = BootstrapMessage()
    msg["header"]["type"] = MSG_BOOTSTRAP
    msg["header"]["flags"] = NLM_F_REQUEST
    msg["attrs"] = a
    msg.encode()
    data = bytes(msg.data)
    if len(data) > MAX_MESSAGE:
        raise SpecError("", f"the container's configuration takes {len(data)} bytes, over {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> list[tuple[str, Any]]:
    """The attributes of a message, nested ones as lists of pairs."""
    msg = BootstrapMessage(data)
    msg.decode()
    out: list[tuple[str, Any]] = []
    for name, value in msg["attrs"]:
        attr = Attr[name]
        if attr in _NESTED:
            raw = bytes(value)
            n = _NESTED[attr](struct.pack("=HH", 4 + len(raw), attr) + raw)
            n.decode()
            value = list(n["attrs"])
        out.append((name, value))
    return out
