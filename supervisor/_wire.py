"""The wire constants, read from the C header through the cffi module: written once, in ``wire.h``.

Each ``IntEnum`` below is made from the ``SV_<PREFIX>_*`` names the header defines, so adding an
attribute or an operation in C makes it appear here without touching Python.
"""

from enum import IntEnum

from ._native import ffi, lib

__all__ = ["Attr", "NsAttr", "RlimitAttr", "StepAttr", "Op", "Mk", "Sync", "Stage", "PayloadType",
           "MSG_BOOTSTRAP", "MAX_MESSAGE", "ffi", "lib", "scope_of", "payload_type", "repeats"]

MSG_BOOTSTRAP: int = lib.SV_MSG_BOOTSTRAP
MAX_MESSAGE: int = lib.SV_MAX_MESSAGE


def _enum(name: str, prefix: str) -> type[IntEnum]:
    members = {
        key[len(prefix):]: getattr(lib, key)
        for key in dir(lib)
        if key.startswith(prefix) and not key.endswith("_MAX")
    }
    return IntEnum(name, members)  # type: ignore[return-value]


Attr = _enum("Attr", "SV_ATTR_")
NsAttr = _enum("NsAttr", "SV_NS_")
RlimitAttr = _enum("RlimitAttr", "SV_RLIMIT_")
StepAttr = _enum("StepAttr", "SV_STEP_")
Op = _enum("Op", "SV_OP_")
Mk = _enum("Mk", "SV_MK_")
Sync = _enum("Sync", "SV_SYNC_")
Stage = _enum("Stage", "SV_STAGE_")
PayloadType = _enum("PayloadType", "SV_T_")

#: the enum naming the fields of each nested attribute
scope_of: dict[int, type[IntEnum]] = {Attr.NS_PATH: NsAttr, Attr.RLIMIT: RlimitAttr, Attr.STEP: StepAttr}


def payload_type(scope: int, attr: int) -> PayloadType:
    return PayloadType(lib.sv_attr_type(scope, attr))  # type: ignore[call-arg]


def repeats(scope: int, attr: int) -> bool:
    return bool(lib.sv_attr_repeats(scope, attr))


ERROR_RECORD_SIZE: int = ffi.sizeof("struct sv_error_record")
SYNC_HEADER_SIZE: int = ffi.sizeof("struct sv_sync_header")
