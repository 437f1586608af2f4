"""The OCI ``linux.seccomp`` block: checked, then compiled to a BPF program by libseccomp.

The program is compiled here, in the supervisor, and installed by the bootstrap as its last step
before execve (before the capabilities are dropped when no_new_privs is off, since installing a
filter then needs CAP_SYS_ADMIN). libseccomp is the well-kept compiler every runtime uses; it is
loaded at run time (cffi's ABI mode, ``libseccomp.so.2``), so building the package needs no seccomp
headers, and a host without the library fails only the containers that ask for a filter.

Syscall names this architecture does not know are skipped, as runc and crun do: profiles list the
calls of every architecture, and a call that does not exist here cannot be made.

``DEFAULT_PROFILE`` is what a manifest container gets unless it says otherwise: Docker's intent — refuse
(EPERM) the calls that reach past a container (kernel modules, kexec, reboot, clock setting, swap,
mount and namespaces, keyrings, ptrace and cross-process memory, bpf, perf, userfaultfd, …), refuse
``clone`` with namespace flags and make ``clone3`` fail with ENOSYS so libc falls back to ``clone``.
"""

import errno
import os
from typing import Any

import attrs

from .errors import SpecError

__all__ = ["Seccomp", "SyscallRule", "ArgRule", "parse_seccomp", "compile_seccomp", "DEFAULT_PROFILE"]

# libseccomp's actions (seccomp.h) and the kernel's filter flags (linux/seccomp.h)
_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000, "SCMP_ACT_KILL_PROCESS": 0x80000000,
            "SCMP_ACT_TRAP": 0x00030000, "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_LOG": 0x7FFC0000,
            "SCMP_ACT_ALLOW": 0x7FFF0000}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
_SCMP_FLTATR_CTL_NNP = 3  # libseccomp would set no_new_privs itself on load: we only export


@attrs.frozen
class ArgRule:
    index: int
    value: int
    value_two: int = 0
    op: str = "SCMP_CMP_EQ"


@attrs.frozen
class SyscallRule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[ArgRule, ...] = ()


@attrs.frozen
class Seccomp:
    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[SyscallRule, ...] = ()


def _action(value: Any, path: str) -> str:
    if value is None:
        raise SpecError(path, "required")
    if value not in _ACTIONS:
        raise SpecError(path, f"unknown or unsupported action {value!r} (one of {', '.join(_ACTIONS)})")
    return str(value)


def _errno(value: Any, path: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 4096):
        raise SpecError(path, f"expected an errno (0..4095), got {value!r}")
    return value


def parse_seccomp(value: Any, path: str = "linux.seccomp") -> Seccomp:
    if not isinstance(value, dict):
        raise SpecError(path, "expected an object")
    for key in value:
        if key not in ("defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls"):
            raise SpecError(f"{path}.{key}", "not supported yet" if key in ("listenerPath", "listenerMetadata")
                            else "unknown field")
    arches = value.get("architectures") or []
    for i, a in enumerate(arches):
        if not isinstance(a, str) or not a.startswith("SCMP_ARCH_"):
            raise SpecError(f"{path}.architectures[{i}]", f"expected SCMP_ARCH_..., got {a!r}")
    flags = value.get("flags") or []
    for i, f in enumerate(flags):
        if f not in _FLAGS:
            raise SpecError(f"{path}.flags[{i}]", f"unknown or unsupported flag {f!r}")
    rules = []
    for i, rule in enumerate(value.get("syscalls") or []):
        where = f"{path}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise SpecError(where, "expected an object")
        for key in rule:
            if key not in ("names", "action", "errnoRet", "args"):
                raise SpecError(f"{where}.{key}", "unknown field")
        names = rule.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SpecError(f"{where}.names", "expected a list of syscall names")
        args = []
        for j, arg in enumerate(rule.get("args") or []):
            at = f"{where}.args[{j}]"
            if not isinstance(arg, dict) or not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
                raise SpecError(at, "expected {index: 0..5, value, valueTwo, op}")
            if arg.get("op") not in _OPS:
                raise SpecError(f"{at}.op", f"unknown op {arg.get('op')!r}")
            for key in ("value", "valueTwo"):
                if not isinstance(arg.get(key, 0), int) or not 0 <= arg.get(key, 0) < 2**64:
                    raise SpecError(f"{at}.{key}", "expected an unsigned 64-bit number")
            args.append(ArgRule(arg["index"], arg.get("value", 0), arg.get("valueTwo", 0), arg["op"]))
        rules.append(SyscallRule(tuple(names), _action(rule.get("action"), f"{where}.action"),
                                 _errno(rule.get("errnoRet"), f"{where}.errnoRet"), tuple(args)))
    return Seccomp(_action(value.get("defaultAction"), f"{path}.defaultAction"),
                   _errno(value.get("defaultErrnoRet"), f"{path}.defaultErrnoRet"), tuple(arches), tuple(flags),
                   tuple(rules))


_LIB: Any = None
_FFI: Any = None


def _libseccomp() -> tuple[Any, Any]:
    global _LIB, _FFI
    if _LIB is None:
        from cffi import FFI

        ffi = FFI()
        ffi.cdef("""
            typedef void *scmp_filter_ctx;
            struct scmp_arg_cmp { unsigned int arg; int op; uint64_t datum_a; uint64_t datum_b; };
            scmp_filter_ctx seccomp_init(uint32_t def_action);
            void seccomp_release(scmp_filter_ctx ctx);
            int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
            uint32_t seccomp_arch_resolve_name(const char *arch_name);
            uint32_t seccomp_arch_native(void);
            int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
            int seccomp_syscall_resolve_name(const char *name);
            int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg_cnt,
                                       const struct scmp_arg_cmp *arg_array);
            int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd);
        """)
        try:
            _LIB = ffi.dlopen("libseccomp.so.2")
        except OSError as e:
            raise SpecError("linux.seccomp", f"libseccomp is not installed here ({e})") from None
        _FFI = ffi
    return _LIB, _FFI


def _action_value(action: str, errno_ret: int | None) -> int:
    value = _ACTIONS[action]
    if action == "SCMP_ACT_ERRNO":
        value |= (errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF
    return value


def compile_seccomp(profile: Seccomp, path: str = "linux.seccomp") -> tuple[bytes, int]:
    """The BPF program and the filter flags for ``profile``."""
    lib, ffi = _libseccomp()
    ctx = lib.seccomp_init(_action_value(profile.default_action, profile.default_errno_ret))
    if ctx == ffi.NULL:
        raise SpecError(f"{path}.defaultAction", "libseccomp refused it")
    try:
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0)
        native = lib.seccomp_arch_native()
        for i, arch in enumerate(profile.architectures):
            token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
            if token == 0:
                raise SpecError(f"{path}.architectures[{i}]", f"unknown to libseccomp: {arch}")
            if token != native:
                rc = lib.seccomp_arch_add(ctx, token)
                if rc < 0 and rc != -errno.EEXIST:
                    raise SpecError(f"{path}.architectures[{i}]", f"cannot add {arch}: {os.strerror(-rc)}")
        for i, rule in enumerate(profile.syscalls):
            action = _action_value(rule.action, rule.errno_ret)
            if action == _action_value(profile.default_action, profile.default_errno_ret):
                continue  # libseccomp refuses a rule that repeats the default
            cmps = ffi.new("struct scmp_arg_cmp[]", len(rule.args) or 1)
            for j, arg in enumerate(rule.args):
                cmps[j].arg, cmps[j].op = arg.index, _OPS[arg.op]
                cmps[j].datum_a, cmps[j].datum_b = arg.value, arg.value_two
            for name in rule.names:
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number < 0:
                    continue  # not a syscall of this architecture: it cannot be called here
                rc = lib.seccomp_rule_add_array(ctx, action, number, len(rule.args), cmps)
                if rc < 0:
                    raise SpecError(f"{path}.syscalls[{i}]", f"libseccomp refused the rule for {name}: "
                                    f"{os.strerror(-rc)}")
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SpecError(path, f"libseccomp could not export the filter: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    flags = 0
    for f in profile.flags:
        flags |= _FLAGS[f]
    return program, flags


def _names(*names: str) -> tuple[str, ...]:
    return names


_CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

#: Docker's intent in a short denylist: what a containerised workload never needs and could use to
#: reach past its container. (Docker writes it as a long allowlist; the blocked calls are the same.)
DEFAULT_PROFILE = Seccomp(
    default_action="SCMP_ACT_ALLOW",
    syscalls=(
        SyscallRule(_names(
            "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
            "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
            "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "mount_setattr",
            "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
            "fsopen", "fsconfig", "fsmount", "fspick", "perf_event_open", "pivot_root", "process_vm_readv",
            "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot", "request_key",
            "set_mempolicy", "setns", "settimeofday", "stime", "swapon", "swapoff", "sysfs", "_sysctl", "umount",
            "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old"), "SCMP_ACT_ERRNO", errno.EPERM),
        SyscallRule(("clone3",), "SCMP_ACT_ERRNO", errno.ENOSYS),
        *(SyscallRule(("clone",), "SCMP_ACT_ERRNO", errno.EPERM, (ArgRule(0, flag, flag, "SCMP_CMP_MASKED_EQ"),))
          for flag in _CLONE_NAMESPACES),
    ),
)

