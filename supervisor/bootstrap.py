"""A ``Plan`` as the bootstrap's netlink message, and back.

The message classes are pyroute2's; their attribute maps are generated from the C parser's own
tables (``sv_attr_type`` through cffi), so the encoder and the parser cannot disagree about an id or
a payload type. ``decode`` exists for tests and debugging: the bootstrap never sends one back.
"""

from typing import Any

from ._pyroute2 import NLM_F_REQUEST, nla, nlmsg
from ._wire import MAX_MESSAGE, MSG_BOOTSTRAP, Attr, Mk, PayloadType, payload_type, scope_of
from .errors import SpecError
from .plan import Plan, Step

__all__ = ["encode", "decode", "BootstrapMessage"]

_NLA_TYPE = {PayloadType.U32: "uint32", PayloadType.BOOL: "uint32", PayloadType.U64: "uint64",
             PayloadType.STR: "asciiz"}
_NLA_MAX_LEN = 0xFFFF


def _nla_map(scope: int, members: Any) -> tuple[tuple[int, str, str], ...]:
    out = []
    for member in members:
        kind = payload_type(scope, member)
        out.append((int(member), member.name, f"nest_{member.name.lower()}" if kind == PayloadType.NEST
                    else _NLA_TYPE[kind]))
    return tuple(out)


def _message_class() -> type[nlmsg]:
    body: dict[str, Any] = {"nla_map": _nla_map(0, Attr)}
    for attr, fields in scope_of.items():
        body[f"nest_{Attr(attr).name.lower()}"] = type(f"{fields.__name__}Nla", (nla,),
                                                       {"nla_map": _nla_map(attr, fields)})
    return type("BootstrapMessage", (nlmsg,), body)


BootstrapMessage = _message_class()


def _check_str(value: str, what: str) -> str:
    if "\0" in value:
        raise SpecError(what, "contains a NUL character")
    if len(value.encode()) + 5 > _NLA_MAX_LEN:
        raise SpecError(what, f"is longer than {_NLA_MAX_LEN - 5} bytes")
    return value


def _step_attrs(step: Step) -> list[tuple[str, Any]]:
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
    return attrs


def encode(plan: Plan) -> bytes:
    """The bootstrap message for a plan. Raises ``SpecError`` when a value cannot be carried."""
    a: list[tuple[str, Any]] = [("CLONE_FLAGS", plan.clone_flags)]

    def add(name: str, value: Any) -> None:
        if value is None or value is False:
            return
        if isinstance(value, str):
            value = _check_str(value, name.lower())
        a.append((name, int(value) if isinstance(value, bool) else value))

    for ns_type, path in plan.ns_paths:
        a.append(("NS_PATH", {"attrs": [("TYPE", ns_type), ("PATH", _check_str(path, "namespace path"))]}))
    if plan.oom_score_adj is not None:
        add("OOM_SCORE_ADJ", plan.oom_score_adj & 0xFFFFFFFF)
    add("ROOTFS", plan.rootfs)
    add("ROOTFS_BIND", plan.rootfs_bind)
    add("ROOT_PROPAGATION", plan.root_propagation or None)
    a += [("STEP", {"attrs": _step_attrs(step)}) for step in plan.steps]
    add("HOSTNAME", plan.hostname)
    add("DOMAINNAME", plan.domainname)
    a += [("RLIMIT", {"attrs": [("RESOURCE", r), ("SOFT", soft), ("HARD", hard)]})
          for r, soft, hard in plan.rlimits]
    add("UMASK", plan.umask)
    add("NO_NEW_PRIVS", plan.no_new_privs)
    add("UID", plan.uid)
    add("GID", plan.gid)
    add("SETGROUPS", plan.setgroups)
    a += [("GROUP", g) for g in plan.groups]
    if plan.caps is not None:
        for name, mask in zip(("BOUNDING", "EFFECTIVE", "PERMITTED", "INHERITABLE", "AMBIENT"), plan.caps):
            a.append((f"CAP_{name}", mask))
    add("PDEATHSIG", plan.pdeathsig or None)
    add("CWD", plan.cwd)
    a += [("ARG", _check_str(arg, "process.args")) for arg in plan.args]
    a += [("ENV", _check_str(env, "process.env")) for env in plan.env]
    a += [("EXEC_PATH", _check_str(path, "process.args[0]")) for path in plan.exec_paths]
    add("BECOME_ROOT", plan.become_root)

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

    def plain(attrs: list[Any]) -> list[tuple[str, Any]]:
        out = []
        for name, value in attrs:
            if isinstance(value, nla):
                value = plain(value["attrs"])
            out.append((name, value))
        return out

    return plain(msg["attrs"])
