"""The wire constants, read from the C headers through the cffi module: their values are written
once, in ``nla.h`` (payload types), ``wire.h`` (the bootstrap message), ``oci_record.h``
(supervisor-oci's state record) and ``oci_planner.h`` (the planner's protocol).

The enums spell the names again so that type checkers and readers see them; their values always
come from the compiled header, and ``tests/test_wire.py`` checks that every ``SV_<PREFIX>_*``
constant has its member here.
"""

from collections.abc import Callable, Iterable
from enum import IntEnum

from ._native import ffi, lib

__all__ = [
    "ENUM_PREFIXES",
    "MAX_MESSAGE",
    "MSG_BOOTSTRAP",
    "MSG_OCI_STATE",
    "OCI_FORMAT",
    "OCI_MAX_CGROUPS",
    "OCI_MAX_RECORD",
    "Attr",
    "HookAttr",
    "Mk",
    "NsAttr",
    "OciAttr",
    "PlanAttr",
    "PlanMsg",
    "Op",
    "PayloadType",
    "RlimitAttr",
    "Stage",
    "StepAttr",
    "Sync",
    "ffi",
    "lib",
    "nla_map",
    "oci_payload_type",
    "plan_payload_type",
    "payload_type",
    "repeats",
    "scope_of",
]

MSG_BOOTSTRAP: int = lib.SV_MSG_BOOTSTRAP
MAX_MESSAGE: int = lib.SV_MAX_MESSAGE
MSG_OCI_STATE: int = lib.SV_OCI_MSG_STATE
OCI_FORMAT: int = lib.SV_OCI_FORMAT
OCI_MAX_RECORD: int = lib.SV_OCI_MAX_RECORD
OCI_MAX_CGROUPS: int = lib.SV_OCI_MAX_CGROUPS


class Attr(IntEnum):
    CLONE_FLAGS = lib.SV_ATTR_CLONE_FLAGS
    NS_PATH = lib.SV_ATTR_NS_PATH
    OOM_SCORE_ADJ = lib.SV_ATTR_OOM_SCORE_ADJ
    ROOTFS = lib.SV_ATTR_ROOTFS
    ROOT_PROPAGATION = lib.SV_ATTR_ROOT_PROPAGATION
    STEP = lib.SV_ATTR_STEP
    HOSTNAME = lib.SV_ATTR_HOSTNAME
    DOMAINNAME = lib.SV_ATTR_DOMAINNAME
    RLIMIT = lib.SV_ATTR_RLIMIT
    UMASK = lib.SV_ATTR_UMASK
    NO_NEW_PRIVS = lib.SV_ATTR_NO_NEW_PRIVS
    UID = lib.SV_ATTR_UID
    GID = lib.SV_ATTR_GID
    SETGROUPS = lib.SV_ATTR_SETGROUPS
    GROUP = lib.SV_ATTR_GROUP
    CAP_BOUNDING = lib.SV_ATTR_CAP_BOUNDING
    CAP_EFFECTIVE = lib.SV_ATTR_CAP_EFFECTIVE
    CAP_PERMITTED = lib.SV_ATTR_CAP_PERMITTED
    CAP_INHERITABLE = lib.SV_ATTR_CAP_INHERITABLE
    CAP_AMBIENT = lib.SV_ATTR_CAP_AMBIENT
    PDEATHSIG = lib.SV_ATTR_PDEATHSIG
    CWD = lib.SV_ATTR_CWD
    ARG = lib.SV_ATTR_ARG
    ENV = lib.SV_ATTR_ENV
    EXEC_PATH = lib.SV_ATTR_EXEC_PATH
    BECOME_ROOT = lib.SV_ATTR_BECOME_ROOT
    ROOTFS_BIND = lib.SV_ATTR_ROOTFS_BIND
    PID1_INIT = lib.SV_ATTR_PID1_INIT
    LOOPBACK_UP = lib.SV_ATTR_LOOPBACK_UP
    SECCOMP = lib.SV_ATTR_SECCOMP
    SECCOMP_FLAGS = lib.SV_ATTR_SECCOMP_FLAGS
    APPARMOR = lib.SV_ATTR_APPARMOR
    SELINUX = lib.SV_ATTR_SELINUX
    TERMINAL = lib.SV_ATTR_TERMINAL
    CGROUP_PATH = lib.SV_ATTR_CGROUP_PATH
    CONSOLE_SIZE = lib.SV_ATTR_CONSOLE_SIZE
    EXEC_FIFO = lib.SV_ATTR_EXEC_FIFO
    PRESERVE_FDS = lib.SV_ATTR_PRESERVE_FDS
    CREATE_HOOK = lib.SV_ATTR_CREATE_HOOK
    START_HOOK = lib.SV_ATTR_START_HOOK
    CREATE_STATE = lib.SV_ATTR_CREATE_STATE
    START_STATE = lib.SV_ATTR_START_STATE
    STATE_TAIL = lib.SV_ATTR_STATE_TAIL


class NsAttr(IntEnum):
    TYPE = lib.SV_NS_TYPE
    PATH = lib.SV_NS_PATH


class RlimitAttr(IntEnum):
    RESOURCE = lib.SV_RLIMIT_RESOURCE
    SOFT = lib.SV_RLIMIT_SOFT
    HARD = lib.SV_RLIMIT_HARD


class StepAttr(IntEnum):
    OP = lib.SV_STEP_OP
    SRC = lib.SV_STEP_SRC
    DST = lib.SV_STEP_DST
    FSTYPE = lib.SV_STEP_FSTYPE
    FLAGS = lib.SV_STEP_FLAGS
    REMOUNT_FLAGS = lib.SV_STEP_REMOUNT_FLAGS
    PROPAGATION = lib.SV_STEP_PROPAGATION
    DATA = lib.SV_STEP_DATA
    MODE = lib.SV_STEP_MODE
    MAJOR = lib.SV_STEP_MAJOR
    MINOR = lib.SV_STEP_MINOR
    UID = lib.SV_STEP_UID
    GID = lib.SV_STEP_GID
    MKTYPE = lib.SV_STEP_MKTYPE
    CGROUP = lib.SV_STEP_CGROUP


class HookAttr(IntEnum):
    PATH = lib.SV_HOOK_PATH
    ARG = lib.SV_HOOK_ARG
    ENV = lib.SV_HOOK_ENV
    TIMEOUT = lib.SV_HOOK_TIMEOUT


class Op(IntEnum):
    MOUNT = lib.SV_OP_MOUNT
    MKDIR = lib.SV_OP_MKDIR
    SYMLINK = lib.SV_OP_SYMLINK
    MKNOD = lib.SV_OP_MKNOD
    BIND_DEV = lib.SV_OP_BIND_DEV
    PIVOT = lib.SV_OP_PIVOT
    CHROOT = lib.SV_OP_CHROOT
    REMOUNT_RO = lib.SV_OP_REMOUNT_RO
    READONLY = lib.SV_OP_READONLY
    MASK = lib.SV_OP_MASK
    SYSCTL = lib.SV_OP_SYSCTL
    SETATTR_RO = lib.SV_OP_SETATTR_RO
    PROPAGATE = lib.SV_OP_PROPAGATE
    HOOKS = lib.SV_OP_HOOKS


class Mk(IntEnum):
    NONE = lib.SV_MK_NONE
    DIR = lib.SV_MK_DIR
    FILE = lib.SV_MK_FILE


class Sync(IntEnum):
    PID = lib.SV_SYNC_PID
    CONTINUE = lib.SV_SYNC_CONTINUE
    ERROR = lib.SV_SYNC_ERROR
    CONSOLE = lib.SV_SYNC_CONSOLE
    EXEC = lib.SV_SYNC_EXEC


class Stage(IntEnum):
    PARSE = lib.SV_STAGE_PARSE
    BOOTSTRAP = lib.SV_STAGE_BOOTSTRAP
    INIT = lib.SV_STAGE_INIT
    EXEC = lib.SV_STAGE_EXEC
    HOOK = lib.SV_STAGE_HOOK


class OciAttr(IntEnum):
    """supervisor-oci's state record (``oci_record.h``): an id space of its own."""

    FORMAT = lib.SV_OCI_ATTR_FORMAT
    PID = lib.SV_OCI_ATTR_PID
    START = lib.SV_OCI_ATTR_START
    HOOKS = lib.SV_OCI_ATTR_HOOKS
    CGROUP = lib.SV_OCI_ATTR_CGROUP
    FREEZER_V1 = lib.SV_OCI_ATTR_FREEZER_V1
    FREEZER_V2 = lib.SV_OCI_ATTR_FREEZER_V2
    STATE = lib.SV_OCI_ATTR_STATE


class PlanAttr(IntEnum):
    """The planner protocol's messages (``oci_planner.h``): an id space of their own."""

    ARG = lib.SV_PLAN_ATTR_ARG
    ENV = lib.SV_PLAN_ATTR_ENV
    UMASK = lib.SV_PLAN_ATTR_UMASK
    FD = lib.SV_PLAN_ATTR_FD
    PID = lib.SV_PLAN_ATTR_PID
    ERRNO = lib.SV_PLAN_ATTR_ERRNO
    EXIT = lib.SV_PLAN_ATTR_EXIT
    PROGRAM = lib.SV_PLAN_ATTR_PROGRAM
    STATUS = lib.SV_PLAN_ATTR_STATUS


class PlanMsg(IntEnum):
    """The planner protocol's message types."""

    CALL = lib.SV_PLAN_MSG_CALL
    DECLINE = lib.SV_PLAN_MSG_DECLINE
    SPAWN = lib.SV_PLAN_MSG_SPAWN
    SPAWNED = lib.SV_PLAN_MSG_SPAWNED
    DONE = lib.SV_PLAN_MSG_DONE
    ACCEPT = lib.SV_PLAN_MSG_ACCEPT
    WAIT = lib.SV_PLAN_MSG_WAIT
    WAITED = lib.SV_PLAN_MSG_WAITED


class PayloadType(IntEnum):
    U32 = lib.SV_T_U32
    U64 = lib.SV_T_U64
    STR = lib.SV_T_STR
    BOOL = lib.SV_T_BOOL
    NEST = lib.SV_T_NEST
    BYTES = lib.SV_T_BYTES


#: each enum and the prefix of its constants in wire.h
ENUM_PREFIXES: dict[type[IntEnum], str] = {
    Attr: "SV_ATTR_",
    NsAttr: "SV_NS_",
    RlimitAttr: "SV_RLIMIT_",
    StepAttr: "SV_STEP_",
    HookAttr: "SV_HOOK_",
    Op: "SV_OP_",
    Mk: "SV_MK_",
    Sync: "SV_SYNC_",
    Stage: "SV_STAGE_",
    PayloadType: "SV_T_",
    OciAttr: "SV_OCI_ATTR_",
    PlanAttr: "SV_PLAN_ATTR_",
    PlanMsg: "SV_PLAN_MSG_",
}

#: the enum naming the fields of each nested attribute
scope_of: dict[int, type[IntEnum]] = {Attr.NS_PATH: NsAttr, Attr.RLIMIT: RlimitAttr, Attr.STEP: StepAttr,
                                      Attr.CREATE_HOOK: HookAttr, Attr.START_HOOK: HookAttr}


def payload_type(scope: int, attr: int) -> PayloadType:
    return PayloadType(lib.sv_attr_type(scope, attr))


def repeats(scope: int, attr: int) -> bool:
    return bool(lib.sv_attr_repeats(scope, attr))


def oci_payload_type(attr: int) -> PayloadType:
    return PayloadType(lib.sv_oci_attr_type(attr))


def plan_payload_type(attr: int) -> PayloadType:
    return PayloadType(lib.sv_plan_attr_type(attr))


#: how pyroute2 encodes each payload type; a nested attribute is carried as the bytes its own class
#: encoded, hence "cdata"
_PYROUTE2_TYPE = {PayloadType.U32: "uint32", PayloadType.BOOL: "uint32", PayloadType.U64: "uint64",
                  PayloadType.STR: "asciiz", PayloadType.BYTES: "cdata", PayloadType.NEST: "cdata"}


def nla_map(members: Iterable[IntEnum], type_of: Callable[[int], PayloadType]) -> tuple[tuple[int, str, str], ...]:
    """A pyroute2 ``nla_map`` for one id space, from the C parser's own table (``type_of``): the encoder
    and the parser cannot disagree about an id or a payload type."""
    return tuple((int(m), m.name, _PYROUTE2_TYPE[type_of(m)]) for m in members)


ERROR_RECORD_SIZE: int = ffi.sizeof("struct sv_error_record")
SYNC_HEADER_SIZE: int = ffi.sizeof("struct sv_sync_header")
HOOK_FAILURE_SIZE: int = ffi.sizeof("struct sv_hook_failure")
