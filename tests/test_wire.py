"""The bootstrap message: golden bytes from the encoder, the C parser run on the same bytes through
cffi, its strictness, and a fuzz test (garbage in: an error out, never a crash)."""

import random
import struct

import pytest

from supervisor._wire import MSG_BOOTSTRAP, Attr, HookAttr, Mk, Op, ffi, lib
from supervisor.bootstrap import decode, encode
from supervisor.errors import SpecError
from attrs import evolve as attrs_evolve

from supervisor.plan import Plan, Step
from supervisor.spec import Hook

from .fuzz import netlink_inputs

MINIMAL = Plan(args=("/bin/true",), exec_paths=("/bin/true",))

FULL = Plan(
    args=("/bin/sh", "-c", "echo hi"),
    exec_paths=("/bin/sh",),
    env=("PATH=/bin", "HOME=/root"),
    cwd="/",
    clone_flags=0x20000000 | 0x00020000,
    ns_paths=((0x40000000, "/proc/1/ns/net"),),
    oom_score_adj=-17,
    rootfs="/srv/rootfs",
    root_propagation=(1 << 19) | 16384,
    steps=(Step(Op.MOUNT, dst="/proc", src="proc", fstype="proc", flags=2 | 4 | 8, mktype=Mk.DIR),
           Step(Op.MKNOD, dst="/dev/null", mode=0o020666, major=1, minor=3),
           Step(Op.PIVOT)),
    hostname="box",
    rlimits=((7, 1024, 4096),),
    umask=0o022,
    no_new_privs=True,
    uid=1000,
    gid=1000,
    setgroups=True,
    groups=(29, 44),
    caps=(0x20000420, 0x20000420, 0x20000420, 0, 0),
    pdeathsig=9,
)


HOOKS = Plan(
    args=("/bin/true",),
    exec_paths=("/bin/true",),
    rootfs="/r",
    steps=(Step(Op.HOOKS), Step(Op.PIVOT)),
    create_hooks=(Hook("/usr/bin/nvidia-hook", ("nvidia-hook", "create"), ("A=1", "B=2"), 5),),
    start_hooks=(Hook("/sbin/ldconfig", ("/sbin/ldconfig",)), Hook("/bin/x", ("x",), ("C=3",))),
    hook_state=('{"id": "c", "status": "creating", "pid": ', '{"id": "c", "status": "created", "pid": ', "}"),
)


def nla(kind: int, payload: bytes) -> bytes:
    """An independent encoder for the golden vectors: header, payload, pad to 4."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def u32(kind: int, v: int) -> bytes:
    return nla(kind, struct.pack("=I", v))


def string(kind: int, s: str) -> bytes:
    return nla(kind, s.encode() + b"\0")


def message(*attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), MSG_BOOTSTRAP, 1, 0, 0) + body


def test_golden_minimal() -> None:
    assert encode(MINIMAL) == message(u32(Attr.CLONE_FLAGS, 0), string(Attr.ARG, "/bin/true"),
                                      string(Attr.EXEC_PATH, "/bin/true"))


def test_golden_full() -> None:
    step = [
        nla(Attr.STEP, u32(1, Op.MOUNT) + string(2, "proc") + string(3, "/proc") + string(4, "proc") + u32(5, 14)
            + u32(14, Mk.DIR)),
        nla(Attr.STEP, u32(1, Op.MKNOD) + string(3, "/dev/null") + u32(9, 0o020666) + u32(10, 1) + u32(11, 3)),
        nla(Attr.STEP, u32(1, Op.PIVOT)),
    ]
    expected = message(
        u32(Attr.CLONE_FLAGS, 0x20020000),
        nla(Attr.NS_PATH, u32(1, 0x40000000) + string(2, "/proc/1/ns/net")),
        u32(Attr.OOM_SCORE_ADJ, (-17) & 0xFFFFFFFF),
        string(Attr.ROOTFS, "/srv/rootfs"),
        u32(Attr.ROOT_PROPAGATION, (1 << 19) | 16384),
        *step,
        string(Attr.HOSTNAME, "box"),
        nla(Attr.RLIMIT, u32(1, 7) + nla(2, struct.pack("=Q", 1024)) + nla(3, struct.pack("=Q", 4096))),
        u32(Attr.UMASK, 0o022),
        u32(Attr.NO_NEW_PRIVS, 1),
        u32(Attr.UID, 1000),
        u32(Attr.GID, 1000),
        u32(Attr.SETGROUPS, 1),
        u32(Attr.GROUP, 29),
        u32(Attr.GROUP, 44),
        *(nla(a, struct.pack("=Q", v)) for a, v in zip(
            (Attr.CAP_BOUNDING, Attr.CAP_EFFECTIVE, Attr.CAP_PERMITTED, Attr.CAP_INHERITABLE, Attr.CAP_AMBIENT),
            (0x20000420, 0x20000420, 0x20000420, 0, 0), strict=True)),
        u32(Attr.PDEATHSIG, 9),
        string(Attr.CWD, "/"),
        string(Attr.ARG, "/bin/sh"), string(Attr.ARG, "-c"), string(Attr.ARG, "echo hi"),
        string(Attr.ENV, "PATH=/bin"), string(Attr.ENV, "HOME=/root"),
        string(Attr.EXEC_PATH, "/bin/sh"),
    )
    assert encode(FULL) == expected
    assert ("HOSTNAME", "box") in decode(expected)


def test_golden_hooks() -> None:
    assert encode(HOOKS) == message(
        u32(Attr.CLONE_FLAGS, 0),
        string(Attr.ROOTFS, "/r"),
        nla(Attr.STEP, u32(1, Op.HOOKS)),
        nla(Attr.STEP, u32(1, Op.PIVOT)),
        string(Attr.ARG, "/bin/true"),
        string(Attr.EXEC_PATH, "/bin/true"),
        nla(Attr.CREATE_HOOK, string(HookAttr.PATH, "/usr/bin/nvidia-hook") + string(HookAttr.ARG, "nvidia-hook")
            + string(HookAttr.ARG, "create") + string(HookAttr.ENV, "A=1") + string(HookAttr.ENV, "B=2")
            + u32(HookAttr.TIMEOUT, 5)),
        nla(Attr.START_HOOK, string(HookAttr.PATH, "/sbin/ldconfig") + string(HookAttr.ARG, "/sbin/ldconfig")),
        nla(Attr.START_HOOK, string(HookAttr.PATH, "/bin/x") + string(HookAttr.ARG, "x") + string(HookAttr.ENV, "C=3")),
        string(Attr.CREATE_STATE, '{"id": "c", "status": "creating", "pid": '),
        string(Attr.START_STATE, '{"id": "c", "status": "created", "pid": '),
        string(Attr.STATE_TAIL, "}"),
    )


class Parsed:
    """The C parser's view of a message (through cffi)."""

    def __init__(self, data: bytes) -> None:
        self.buf = ffi.new("uint8_t[]", data)
        self.cfg = ffi.new("struct sv_config *")
        self.err = ffi.new("char[256]")
        self.rc = lib.sv_parse(self.buf, len(data), self.cfg, self.err, 256)

    @property
    def error(self) -> str:
        return ffi.string(self.err).decode()

    def strings(self, field: str, count: str) -> list[str]:
        arr = getattr(self.cfg, field)
        return [ffi.string(arr[i]).decode() for i in range(getattr(self.cfg, count))]

    def __del__(self) -> None:
        if self.rc == 0:
            lib.sv_config_free(self.cfg)


def test_c_parser_reads_the_golden_vectors() -> None:
    p = Parsed(encode(FULL))
    assert p.rc == 0, p.error
    c = p.cfg
    assert p.strings("argv", "n_args") == ["/bin/sh", "-c", "echo hi"]
    assert c.argv[3] == ffi.NULL and c.envp[2] == ffi.NULL
    assert p.strings("envp", "n_env") == ["PATH=/bin", "HOME=/root"]
    assert (c.clone_flags, c.oom_score_adj, c.umask) == (0x20020000, -17, 0o22)
    assert (c.uid, c.gid, c.pdeathsig) == (1000, 1000, 9)
    assert (c.no_new_privs, c.setgroups, c.n_groups, c.groups[1]) == (1, 1, 2, 44)
    assert (c.has_caps, c.cap_bounding, c.cap_inheritable) == (1, 0x20000420, 0)
    assert (c.n_ns_paths, c.ns_paths[0].type, ffi.string(c.ns_paths[0].path)) == (1, 0x40000000, b"/proc/1/ns/net")
    assert (c.n_rlimits, c.rlimits[0].resource, c.rlimits[0].soft, c.rlimits[0].hard) == (1, 7, 1024, 4096)
    assert c.n_steps == 3
    s = c.steps[0]
    assert (s.op, ffi.string(s.dst), ffi.string(s.fstype)) == (Op.MOUNT, b"/proc", b"proc")
    assert (s.flags, s.mktype) == (14, Mk.DIR)
    assert (c.steps[1].major, c.steps[1].minor, c.steps[2].op) == (1, 3, Op.PIVOT)
    assert Parsed(encode(MINIMAL)).rc == 0


def test_c_parser_reads_hooks() -> None:
    p = Parsed(encode(HOOKS))
    assert p.rc == 0, p.error
    c = p.cfg
    assert (c.n_create_hooks, c.n_start_hooks) == (1, 2)
    h = c.create_hooks[0]
    assert ffi.string(h.path) == b"/usr/bin/nvidia-hook" and h.timeout == 5
    assert [ffi.string(h.argv[i]) for i in range(h.n_args)] == [b"nvidia-hook", b"create"] and h.argv[2] == ffi.NULL
    assert [ffi.string(h.envp[i]) for i in range(h.n_env)] == [b"A=1", b"B=2"] and h.envp[2] == ffi.NULL
    s = c.start_hooks[1]
    assert (ffi.string(s.argv[0]), s.n_env, ffi.string(s.envp[0]), s.timeout) == (b"x", 1, b"C=3", 0)
    assert c.start_hooks[0].n_env == 0 and c.start_hooks[0].envp[0] == ffi.NULL
    assert ffi.string(c.create_state).endswith(b'"pid": ') and ffi.string(c.state_tail) == b"}"


def _hook_message(*extra: bytes, step: bool = True, state: bool = True,
                  hook: bytes = string(HookAttr.PATH, "/h") + string(HookAttr.ARG, "h")) -> bytes:
    parts = [string(Attr.ROOTFS, "/r"), string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a"), *extra]
    if step:
        parts.append(nla(Attr.STEP, u32(1, Op.HOOKS)))
    parts.append(nla(Attr.CREATE_HOOK, hook))
    if state:
        parts += [string(Attr.CREATE_STATE, "{"), string(Attr.STATE_TAIL, "}")]
    return message(*parts)


@pytest.mark.parametrize("data, error", [
    (_hook_message(step=False), "0 hook steps for 1 createContainer hooks"),
    (_hook_message(nla(Attr.STEP, u32(1, Op.HOOKS))), "2 hook steps"),
    (_hook_message(state=False), "hooks without their state"),
    (_hook_message(hook=string(HookAttr.PATH, "h") + string(HookAttr.ARG, "h")), "needs an absolute path"),
    (_hook_message(hook=string(HookAttr.PATH, "/h")), "createContainer hook 0: no argv"),
    (_hook_message(hook=string(HookAttr.PATH, "/h") + string(HookAttr.PATH, "/h") + string(HookAttr.ARG, "h")),
     "repeated"),
    (_hook_message(hook=string(HookAttr.PATH, "/h") + string(HookAttr.ARG, "h") + u32(9, 1)), "unknown attribute 9"),
    (message(string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a"),
             nla(Attr.START_HOOK, string(HookAttr.PATH, "/h") + string(HookAttr.ARG, "h"))),
     "hooks without their state"),
])
def test_c_parser_checks_hooks(data: bytes, error: str) -> None:
    p = Parsed(data)
    assert p.rc == -1
    assert error in p.error
    assert Parsed(_hook_message()).rc == 0


@pytest.mark.parametrize("data, error", [
    (message(u32(Attr.CLONE_FLAGS, 0)), "no argv"),
    (message(string(Attr.ARG, "a")), "no path to execute"),
    (message(u32(99, 0), string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a")), "unknown attribute 99"),
    (message(u32(Attr.UID, 1), u32(Attr.UID, 2), string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a")), "repeated"),
    (message(nla(Attr.UID, b"\1\0"), string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a")), "want 4 bytes"),
    (message(u32(Attr.NO_NEW_PRIVS, 2), string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a")), "bool is 2"),
    (message(nla(Attr.ARG, b"abc"), string(Attr.EXEC_PATH, "a")), "not one NUL-terminated string"),
    (message(nla(Attr.ARG, b"a\0b\0"), string(Attr.EXEC_PATH, "a")), "not one NUL-terminated string"),
    (message(string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a"))[:-2], "header says"),
    (message(string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a"), struct.pack("=HH", 200, Attr.ARG)),
     "out of bounds"),
    (message(string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a"), nla(Attr.STEP, u32(1, 99))), "unknown operation"),
    (message(string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a"), nla(Attr.STEP, u32(1, Op.MOUNT))),
     "without a destination"),
    (message(string(Attr.ARG, "a"), string(Attr.EXEC_PATH, "a"), nla(Attr.CAP_BOUNDING, bytes(8))), "all five"),
    (b"\0" * 8, "shorter than its header"),
])
def test_c_parser_is_strict(data: bytes, error: str) -> None:
    p = Parsed(data)
    assert p.rc == -1
    assert error in p.error


def test_encoder_refuses_what_cannot_be_carried() -> None:
    with pytest.raises(SpecError, match="NUL"):
        encode(Plan(args=("a\0b",), exec_paths=("a",)))
    with pytest.raises(SpecError, match="longer than"):
        encode(Plan(args=("/bin/true",), exec_paths=("/bin/true",), env=("X=" + "y" * 70000,)))


def test_fuzz_random_and_mutated_messages() -> None:
    rng = random.Random(1234)
    seeds = [encode(FULL), encode(MINIMAL), encode(HOOKS)]
    parsed = 0
    for data in netlink_inputs(rng, seeds, MSG_BOOTSTRAP, 1, 20000, random_body=300, max_edits=8):
        p = Parsed(data)
        assert p.rc in (0, -1)
        if p.rc == 0:
            parsed += 1
            assert p.cfg.n_args >= 1 and p.cfg.argv[p.cfg.n_args] == ffi.NULL
            assert p.cfg.n_exec_paths >= 1
    assert parsed > 100  # the mutations reach past the first checks


def test_every_wire_constant_has_its_enum_member() -> None:
    from supervisor._wire import ENUM_PREFIXES

    for enum, prefix in ENUM_PREFIXES.items():
        in_header = {name[len(prefix):]: getattr(lib, name) for name in dir(lib)
                     if name.startswith(prefix) and not name.endswith("_MAX")}
        assert {m.name: m.value for m in enum} == in_header, enum


def test_the_cgroup_path_is_appended_to_a_shared_message() -> None:
    base = attrs_evolve(FULL, steps=FULL.steps + (Step(Op.MOUNT, dst="/sys/fs/cgroup/pids", src="/sys/fs/cgroup/pids",
                                                         flags=4096, cgroup=True),))
    a = encode(attrs_evolve(base, cgroup="supervisor-1/a"))
    b = encode(attrs_evolve(base, cgroup="supervisor-1/b"))
    shared = encode(base)  # no cgroup: no CGROUP_PATH
    assert a[16:len(shared)] == b[16:len(shared)] == shared[16:]  # everything else is shared
    assert a[len(shared):] == string(Attr.CGROUP_PATH, "supervisor-1/a")
    p = Parsed(a)
    assert p.rc == 0, p.error
    assert ffi.string(p.cfg.cgroup_path) == b"supervisor-1/a" and p.cfg.steps[3].cgroup == 1
    assert "a cgroup bind without a cgroup path" in Parsed(shared).error
