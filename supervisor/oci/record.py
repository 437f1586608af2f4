"""supervisor-oci's state record, ``ROOT/ID/fast``: what the native front end (``native/oci_fast.c``)
reads instead of ``state.json``, so that no C parses text.

It is one netlink message in the bootstrap message's encoding, with a message type and attribute ids
of its own (``native/oci_record.h``). The message class's attribute map is built from the C parser's
table through cffi, as the bootstrap message's is, so the writer and the reader cannot disagree about
an id or a payload type; ``FORMAT`` lets a reader refuse a record it does not know (it hands the call
to the Python side, which reads ``state.json``). ``create`` writes it once; only ``create`` imports
this module (it needs cffi and pyroute2's message classes, which the other calls do without).
"""

from typing import Any

import attrs

from .._pyroute2 import nlmsg
from .._wire import MSG_OCI_STATE, OCI_FORMAT, OciAttr, nla_map, oci_payload_type

__all__ = ["Record", "RecordError"]

#: the largest payload an attribute carries (nla_len is 16 bits and counts its 4-byte header)
_NLA_MAX_PAYLOAD = 0xFFFF - 4

RecordMessage: type[nlmsg] = type("RecordMessage", (nlmsg,), {"nla_map": nla_map(OciAttr, oci_payload_type)})


class RecordError(ValueError):
    """A record that cannot be written (a value too long for an attribute) or read (not ours)."""


@attrs.frozen
class Record:
    """What the native front end needs of a container, and nothing it would have to interpret."""

    pid: int
    #: the init's start time (clock ticks since boot, /proc/PID/stat field 22): a later process with
    #: the same pid is not the init
    start: int
    #: any hooks: every call is then the Python side's
    hooks: bool = False
    #: the container's cgroup directories, in state.json's order
    cgroups: tuple[str, ...] = ()
    #: (1 or 2, directory): where pause and resume write, and status reads (``Container.freezer``)
    freezer: tuple[int, str] | None = None
    #: the state document's fields but pid and status, as JSON text after the opening brace; None, or
    #: too long for one attribute: ``state`` is the Python side's
    state: bytes | None = None

    def encode(self) -> bytes:
        """The record's bytes. Raises ``RecordError`` for a path that no attribute can carry."""
        pairs: list[tuple[str, Any]] = [("FORMAT", OCI_FORMAT), ("PID", self.pid), ("START", self.start)]
        if self.hooks:
            pairs.append(("HOOKS", 1))
        pairs += [("CGROUP", _path(d)) for d in self.cgroups]
        if self.freezer is not None:
            version, directory = self.freezer
            pairs.append((f"FREEZER_V{version}", _path(directory)))
        if self.state is not None and len(self.state) <= _NLA_MAX_PAYLOAD:
            pairs.append(("STATE", self.state))
        msg = RecordMessage()
        msg["header"]["type"] = MSG_OCI_STATE
        msg["attrs"] = pairs
        msg.encode()
        return bytes(msg.data)

    @classmethod
    def decode(cls, data: bytes) -> "Record":
        """A record from its bytes (for tests and for looking at one; the front end's reader is C)."""
        msg = RecordMessage(data)
        msg.decode()
        if msg["header"]["type"] != MSG_OCI_STATE:
            raise RecordError(f"message type {msg['header']['type']}, not {MSG_OCI_STATE}")
        values: dict[str, Any] = {}
        cgroups: list[str] = []
        for name, value in msg["attrs"]:
            if name == "CGROUP":
                cgroups.append(value)
            else:
                values[name] = value
        if values.get("FORMAT") != OCI_FORMAT:
            raise RecordError(f"format {values.get('FORMAT')}, not {OCI_FORMAT}")
        freezer = next(((v, values[f"FREEZER_V{v}"]) for v in (1, 2) if f"FREEZER_V{v}" in values), None)
        state = values.get("STATE")
        return cls(pid=values["PID"], start=values["START"], hooks=bool(values.get("HOOKS")),
                   cgroups=tuple(cgroups), freezer=freezer, state=None if state is None else bytes(state))


def _path(path: str) -> str:
    if "\0" in path or len(path.encode()) + 1 > _NLA_MAX_PAYLOAD:
        raise RecordError(f"{path[:80]!r}: not a path a record can carry")
    return path
