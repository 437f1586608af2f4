"""Device rules: runc's defaults, what a list of rules means, and the cgroup v2 program that says it.

Pure: rules in, a policy, cgroup v1 lines or BPF instruction bytes out; ``cgroups.py`` writes them.

Theory of operation. A container's device rules are the spec's ``linux.resources.devices`` followed by
runc's defaults (``DEFAULT_RULES``), applied to a cgroup that starts denying everything, exactly as runc
does (``specconv.CreateCgroupConfig`` appends its ``AllowedDevices`` after the spec's rules, and its
devices emulator starts as an allow-list). The defaults come last, so a spec cannot take ``/dev/null``
away, and the ``deny all`` that ``runc spec`` writes first does not wipe them.

Rules are folded the way the v1 devices controller folds them (``fold``): a rule for every device
(type ``a``) resets the cgroup to allow-all or deny-all with no exceptions; any other rule either adds
an exception to the default (an allow on a deny-all cgroup, a deny on an allow-all one) or takes access
away from an existing exception with the same type, major and minor. Taking access away from a device
that a wildcard exception covers cannot be said to the v1 kernel (it ignores it), so it is an error
here, as in runc. The result, a ``Policy`` (default plus exceptions), is the same on both versions:

- cgroup v1: ``v1_writes`` gives the lines to write to ``devices.deny``/``devices.allow`` to take a
  cgroup from what it had (``None``: a new cgroup, which inherited allow-all) to the policy, without a
  moment of deny-all when the default does not change (an update of a running container).
- cgroup v2: ``program`` gives a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program: each exception is a block
  that compares the device's type, access, major and minor and returns the exception's verdict; the
  last block returns the default. ``assemble`` makes the bytes ``bpf(BPF_PROG_LOAD)`` takes.
"""

import functools
import struct
import sys

import attrs

from .resources import DeviceRule

__all__ = ["DEFAULT_RULES", "DEFAULT_POLICY", "Policy", "Insn", "fold", "effective", "v1_writes", "program", "assemble",
           "LICENSE"]

#: runc's ``AllowedDevices`` (libcontainer/specconv): mknod of any device (opening one is another
#: matter), the safe character devices, the ptys, and /dev/net/tun (which runc dropped in 1.2.0-rc1
#: and brought back for the orchestrators that cannot add a rule)
DEFAULT_RULES = (
    DeviceRule(True, "c", None, None, "m"), DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3),    # /dev/null
    DeviceRule(True, "c", 1, 8),    # /dev/random
    DeviceRule(True, "c", 1, 7),    # /dev/full
    DeviceRule(True, "c", 5, 0),    # /dev/tty
    DeviceRule(True, "c", 1, 5),    # /dev/zero
    DeviceRule(True, "c", 1, 9),    # /dev/urandom
    DeviceRule(True, "c", 136, None),  # /dev/pts/*
    DeviceRule(True, "c", 5, 2),    # /dev/ptmx
    DeviceRule(True, "c", 10, 200),  # /dev/net/tun
)

#: the license the program is loaded under (the kernel only asks whether GPL helpers may be called;
#: this program calls none)
LICENSE = b"Apache-2.0\0"

_ACCESS = "rwm"
Key = tuple[str, int | None, int | None]  # type "c" or "b", major, minor (None: any)


@attrs.frozen
class Policy:
    """What a set of rules means: a default, and the devices that are the exception to it (with the
    accesses that are), sorted so that equal policies compare and encode equal."""
    default_allow: bool
    exceptions: tuple[tuple[Key, str], ...] = ()


def _sort_key(item: tuple[Key, str]) -> tuple[int, int, str]:
    (kind, major, minor), _ = item
    return (-1 if major is None else major, -1 if minor is None else minor, kind)


def _access(chars: set[str]) -> str:
    return "".join(c for c in _ACCESS if c in chars)


def effective(spec_rules: tuple[DeviceRule, ...]) -> tuple[DeviceRule, ...]:
    """The rules a container's cgroup gets: the spec's, then runc's defaults."""
    return (*spec_rules, *DEFAULT_RULES)


@functools.lru_cache(maxsize=64)
def fold(rules: tuple[DeviceRule, ...]) -> Policy:
    """Apply ``rules`` in order to a deny-all cgroup, as the v1 controller would. Raises
    ``ValueError`` for a rule that would punch a hole in a wildcard exception (v1 cannot)."""
    default_allow = False
    exceptions: dict[Key, set[str]] = {}
    for i, rule in enumerate(rules):
        if rule.type == "a":
            default_allow, exceptions = rule.allow, {}
            continue
        key = (rule.type, rule.major, rule.minor)
        access = set(rule.access)
        if rule.allow != default_allow:
            exceptions.setdefault(key, set()).update(access)
            continue
        for wider in ((rule.type, None, rule.minor), (rule.type, rule.major, None), (rule.type, None, None)):
            if wider != key and exceptions.get(wider, set()) & access:
                kind, major, minor = wider
                wildcard = DeviceRule(True, kind, major, minor, _access(exceptions[wider])).v1()
                raise ValueError(f"rule {i} ({rule.v1()}) cannot take access away from part of the wildcard "
                                 f"rule {wildcard}")
        left = exceptions.get(key, set()) - access
        if left:
            exceptions[key] = left
        else:
            exceptions.pop(key, None)
    items = sorted(((k, _access(v)) for k, v in exceptions.items()), key=_sort_key)
    return Policy(default_allow, tuple(items))


#: what a container gets when its spec says nothing (or only "deny all", as ``runc spec`` writes)
DEFAULT_POLICY = fold(DEFAULT_RULES)


@functools.lru_cache(maxsize=64)
def v1_writes(current: Policy | None, target: Policy) -> tuple[tuple[str, str], ...]:
    """(file, line) pairs that take a v1 devices cgroup from ``current`` to ``target``. A cgroup that
    allows everything by default cannot be read back (``devices.list`` shows only ``a *:* rwm``), nor
    can a new one (``None``): those are reset first. Otherwise only the difference is written, so a
    running container never meets a moment of deny-all."""
    writes: list[tuple[str, str]] = []
    old: dict[Key, str] = {}
    if current is None or current.default_allow or current.default_allow != target.default_allow:
        writes.append(("devices.allow" if target.default_allow else "devices.deny", "a"))
    else:
        old = dict(current.exceptions)
    # the file that adds an exception, and the one that takes it (or part of it) away
    add, remove = ("devices.deny", "devices.allow") if target.default_allow else ("devices.allow", "devices.deny")
    new = dict(target.exceptions)
    for key, access in sorted(old.items(), key=_sort_key):
        dropped = _access(set(access) - set(new.get(key, "")))
        if dropped:
            writes.append((remove, DeviceRule(True, *key, dropped).v1()))
    for key, access in target.exceptions:
        gained = _access(set(access) - set(old.get(key, "")))
        if gained:
            writes.append((add, DeviceRule(True, *key, gained).v1()))
    return tuple(writes)


# -- the cgroup v2 program --------------------------------------------------------------------------

@attrs.frozen
class Insn:
    """One ``struct bpf_insn``: opcode, destination and source registers, offset, immediate."""
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0


# opcodes (linux/bpf_common.h, linux/bpf.h): class | operation | source
_LDX_MEM_W = 0x61      # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54    # BPF_ALU | BPF_AND | BPF_K: dst &= imm (32 bits, upper half cleared)
_ALU32_RSH_K = 0x74    # BPF_ALU | BPF_RSH | BPF_K
_ALU32_MOV_K = 0xB4    # BPF_ALU | BPF_MOV | BPF_K
_ALU32_MOV_X = 0xBC    # BPF_ALU | BPF_MOV | BPF_X
_JMP32_JNE_K = 0x56    # BPF_JMP32 | BPF_JNE | BPF_K: if (u32)dst != imm, pc += off
_JMP32_JNE_X = 0x5E    # BPF_JMP32 | BPF_JNE | BPF_X
_EXIT = 0x95           # BPF_JMP | BPF_EXIT: return r0

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }: access_type is
# (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*
_DEV_TYPE = {"b": 1, "c": 2}            # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_ACC_BIT = {"m": 1, "r": 2, "w": 4}     # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
R0, R1, R2, R3, R4, R5 = range(6)


def _u32_imm(value: int) -> int:
    """A u32 as the signed 32-bit immediate the instruction holds (JMP32 compares the low 32 bits)."""
    if not 0 <= value < 2**32:
        raise ValueError(f"device number {value} does not fit in 32 bits")
    return value - 2**32 if value >= 2**31 else value


def program(policy: Policy) -> tuple[Insn, ...]:
    """The device program for ``policy``. Registers: r2 = device type, r3 = requested access, r4 =
    major, r5 = minor; r1 (the context) is free once they are loaded. A block matches when the type is
    the exception's, the requested access is within the exception's, and the numbers it names are
    equal; an exception's verdict is the opposite of the default."""
    insns = [
        Insn(_LDX_MEM_W, R2, R1, 0), Insn(_ALU32_AND_K, R2, imm=0xFFFF),
        Insn(_LDX_MEM_W, R3, R1, 0), Insn(_ALU32_RSH_K, R3, imm=16),
        Insn(_LDX_MEM_W, R4, R1, 4),
        Insn(_LDX_MEM_W, R5, R1, 8),
    ]
    verdict = 0 if policy.default_allow else 1
    for (kind, major, minor), access in policy.exceptions:
        # each test is (instruction, is a jump to the next block)
        tests: list[Insn] = [Insn(_JMP32_JNE_K, R2, imm=_DEV_TYPE[kind])]
        if set(access) != set(_ACCESS):
            bits = sum(_ACC_BIT[c] for c in access)
            tests += [Insn(_ALU32_MOV_X, R1, R3), Insn(_ALU32_AND_K, R1, imm=bits), Insn(_JMP32_JNE_X, R1, R3)]
        if major is not None:
            tests.append(Insn(_JMP32_JNE_K, R4, imm=_u32_imm(major)))
        if minor is not None:
            tests.append(Insn(_JMP32_JNE_K, R5, imm=_u32_imm(minor)))
        block = [*tests, Insn(_ALU32_MOV_K, R0, imm=verdict), Insn(_EXIT)]
        # a failed test jumps past the end of its block: off counts from the next instruction
        insns += [attrs.evolve(insn, off=len(block) - i - 1) if insn.code in (_JMP32_JNE_K, _JMP32_JNE_X) else insn
                  for i, insn in enumerate(block)]
    insns += [Insn(_ALU32_MOV_K, R0, imm=int(policy.default_allow)), Insn(_EXIT)]
    return tuple(insns)


_INSN = struct.Struct("=BBhi")


def assemble(insns: tuple[Insn, ...]) -> bytes:
    """``struct bpf_insn[]`` in this machine's layout (the register nibbles follow the bit-field
    order, which follows the byte order)."""
    little = sys.byteorder == "little"
    return b"".join(_INSN.pack(i.code, (i.src << 4 | i.dst) if little else (i.dst << 4 | i.src), i.off, i.imm)
                    for i in insns)
