"""Device rules: the fold of rules into a policy, the v1 lines, the v2 BPF program (golden
instructions, an interpreter, the kernel's verifier), and real containers on cgroup v1 (this host)
and v2 (a private mount namespace that shows only cgroup2)."""

import copy
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor import ContainerSpec, SpecError, devices
from supervisor.devices import DEFAULT_RULES, Insn, Policy, assemble, effective, fold, program, v1_writes
from supervisor.plan import plan
from supervisor.resources import DeviceRule

from .conftest import RUNC_SPEC, needs_root
from .device_scenarios import INLINE, LOOP, play

DENY_ALL = DeviceRule(False, "a")
ALLOW_ALL = DeviceRule(True, "a")


# -- folding rules ---------------------------------------------------------------------------------

def test_runc_spec_rules_are_deny_all_then_the_defaults() -> None:
    policy = fold(effective((DENY_ALL,)))
    assert policy == fold(effective(())) == fold(DEFAULT_RULES)
    assert not policy.default_allow
    assert dict(policy.exceptions) == {
        ("c", None, None): "m", ("b", None, None): "m", ("c", 1, 3): "rwm", ("c", 1, 5): "rwm",
        ("c", 1, 7): "rwm", ("c", 1, 8): "rwm", ("c", 1, 9): "rwm", ("c", 5, 0): "rwm", ("c", 5, 2): "rwm",
        ("c", 136, None): "rwm", ("c", 10, 200): "rwm"}


def test_later_rules_win_and_the_defaults_come_last() -> None:
    # an allow-all spec (a privileged container): the defaults add nothing to it
    assert fold(effective((ALLOW_ALL,))) == Policy(True)
    # a deny exception in allow-all mode, then taken back
    loop = DeviceRule(False, "b", 7, 0, "rw")
    assert fold((ALLOW_ALL, loop)) == Policy(True, ((("b", 7, 0), "rw"),))
    assert fold((ALLOW_ALL, loop, DeviceRule(True, "b", 7, 0, "w"))) == Policy(True, ((("b", 7, 0), "r"),))
    # the spec cannot take /dev/null away: the defaults follow its rules (runc's order)
    null = dict(fold(effective((DeviceRule(False, "c", 1, 3),))).exceptions)
    assert null[("c", 1, 3)] == "rwm"
    # a deny-all after an allow wipes it
    assert fold((DeviceRule(True, "b", 7, 0), DENY_ALL)) == Policy(False)


def test_a_hole_in_a_wildcard_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"cannot take access away from part of the wildcard rule c \*:\* m"):
        fold(effective((DeviceRule(True, "c", None, None, "m"), DeviceRule(False, "c", 1, 3, "m"))))
    # not overlapping accesses are fine
    fold((DeviceRule(True, "c", None, None, "m"), DeviceRule(False, "c", 1, 3, "rw")))


def test_the_planner_checks_the_rules(bundle: Any) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["resources"]["devices"] = [{"allow": True, "type": "c", "access": "rwm"},
                                              {"allow": False, "type": "c", "major": 1, "minor": 3}]

    with pytest.raises(SpecError, match="linux.resources.devices: rule 1"):
        plan(ContainerSpec.from_bundle(bundle(edit=edit)))
    p = plan(ContainerSpec.from_bundle(bundle()))
    assert p.device_policy == fold(DEFAULT_RULES) and "devices" in p.cgroup_controllers


def test_v1_lines_new_cgroup_and_updates() -> None:
    policy = fold(effective(()))
    writes = v1_writes(None, policy)
    assert writes[0] == ("devices.deny", "a")
    assert writes[1:4] == (("devices.allow", "b *:* m"), ("devices.allow", "c *:* m"),
                           ("devices.allow", "c 1:3 rwm"))
    assert len(writes) == 1 + len(policy.exceptions)
    # an update says only the difference: no moment of deny-all for a running container
    wider = fold(effective((DeviceRule(True, "b", 7, 0, "rw"),)))
    assert v1_writes(policy, wider) == (("devices.allow", "b 7:0 rw"),)
    assert v1_writes(wider, policy) == (("devices.deny", "b 7:0 rw"),)
    assert v1_writes(policy, policy) == ()
    # to allow-all and back: a reset each way (an allow-all cgroup cannot be read back)
    assert v1_writes(policy, Policy(True)) == (("devices.allow", "a"),)
    assert v1_writes(Policy(True), policy)[0] == ("devices.deny", "a")


# -- the BPF program ----------------------------------------------------------------------------------

def test_golden_program() -> None:
    policy = Policy(False, ((("b", 7, None), "rw"), (("c", 1, 3), "rwm")))
    assert program(policy) == (
        Insn(0x61, 2, 1, 0), Insn(0x54, 2, imm=0xFFFF),      # r2 = ctx->access_type & 0xffff (type)
        Insn(0x61, 3, 1, 0), Insn(0x74, 3, imm=16),          # r3 = ctx->access_type >> 16 (access)
        Insn(0x61, 4, 1, 4), Insn(0x61, 5, 1, 8),            # r4 = major, r5 = minor
        # b 7:* rw
        Insn(0x56, 2, off=6, imm=1),                          # block?
        Insn(0xBC, 1, 3), Insn(0x54, 1, imm=2 | 4), Insn(0x5E, 1, 3, off=3),  # access within rw?
        Insn(0x56, 4, off=2, imm=7),                          # major 7?
        Insn(0xB4, 0, imm=1), Insn(0x95),                     # allow
        # c 1:3 rwm: no access test
        Insn(0x56, 2, off=4, imm=2), Insn(0x56, 4, off=3, imm=1), Insn(0x56, 5, off=2, imm=3),
        Insn(0xB4, 0, imm=1), Insn(0x95),
        Insn(0xB4, 0, imm=0), Insn(0x95),                     # deny the rest
    )
    code = assemble(program(Policy(True)))
    assert len(code) == 8 * 8
    assert code[:8] == bytes([0x61, 0x12, 0, 0, 0, 0, 0, 0])  # dst r2 in the low nibble (little endian)
    assert code[-16:] == bytes([0xB4, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


def _run(insns: tuple[Insn, ...], ctx: tuple[int, int, int]) -> int:
    """An interpreter for the instructions ``program`` emits, on a bpf_cgroup_dev_ctx."""
    regs = [0] * 11
    pc = 0
    while True:
        i = insns[pc]
        pc += 1
        if i.code == 0x61:
            regs[i.dst] = ctx[i.off // 4]
        elif i.code == 0x54:
            regs[i.dst] &= i.imm & 0xFFFFFFFF
        elif i.code == 0x74:
            regs[i.dst] = (regs[i.dst] & 0xFFFFFFFF) >> i.imm
        elif i.code == 0xB4:
            regs[i.dst] = i.imm & 0xFFFFFFFF
        elif i.code == 0xBC:
            regs[i.dst] = regs[i.src] & 0xFFFFFFFF
        elif i.code == 0x56:
            pc += i.off if regs[i.dst] & 0xFFFFFFFF != i.imm & 0xFFFFFFFF else 0
        elif i.code == 0x5E:
            pc += i.off if regs[i.dst] & 0xFFFFFFFF != regs[i.src] & 0xFFFFFFFF else 0
        elif i.code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {i.code:#x}")


def _allowed(policy: Policy, kind: str, major: int, minor: int, access: str) -> bool:
    """What the policy means (runc's v2 semantics): an exception applies to a request within its access."""
    for (k, ma, mi), acc in policy.exceptions:
        if k == kind and ma in (None, major) and mi in (None, minor) and set(access) <= set(acc):
            return not policy.default_allow
    return policy.default_allow


@pytest.mark.parametrize("rules", [
    effective(()),
    effective((DeviceRule(True, "b", 7, 0, "rw"), DeviceRule(True, "c", 4, None, "r"))),
    (ALLOW_ALL, DeviceRule(False, "b", 7, None, "rw"), DeviceRule(False, "c", 1, 11, "w")),
    (DENY_ALL, DeviceRule(True, "b", 8, 2**31 + 5, "m")),   # a number above the signed immediate's range
])
def test_the_program_does_what_the_policy_says(rules: tuple[DeviceRule, ...]) -> None:
    policy = fold(rules)
    insns = program(policy)
    for kind, (major, minor), access in itertools.product(
            "bc", [(1, 3), (1, 11), (4, 7), (5, 2), (7, 0), (7, 1), (8, 2**31 + 5), (136, 4)], ["r", "w", "m", "rw"]):
        ctx_access = sum({"m": 1, "r": 2, "w": 4}[c] for c in access)
        ctx = ((ctx_access << 16) | {"b": 1, "c": 2}[kind], major, minor)
        assert _run(insns, ctx) == _allowed(policy, kind, major, minor, access), (kind, major, minor, access)


@needs_root
@pytest.mark.parametrize("policy", [fold(effective(())), Policy(True), Policy(False),
                                    fold(tuple(DeviceRule(True, "c", n, n, "rw") for n in range(300)))])
def test_the_kernel_verifier_takes_the_program(policy: Policy) -> None:
    from supervisor import _bpf

    fd = _bpf.load_device_program(assemble(program(policy)), devices.LICENSE)
    os.close(fd)


@needs_root
def test_a_loaded_program_is_found_again_by_id_and_tag() -> None:
    from supervisor import _bpf

    fd = _bpf.load_device_program(assemble(program(fold(DEFAULT_RULES))), devices.LICENSE)
    prog_id, tag = _bpf.program_identity(fd)
    again = _bpf.reopen_device_program(prog_id, tag)
    assert again is not None and _bpf.program_identity(again) == (prog_id, tag)
    os.close(again)
    assert _bpf.reopen_device_program(prog_id, bytes(8)) is None  # another program's tag
    os.close(fd)
    for _ in range(100):  # nothing holds it now: the kernel frees it a moment later
        if _bpf.reopen_device_program(prog_id, tag) is None:
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the program outlived its last fd")


@needs_root
def test_the_verifier_log_is_the_error() -> None:
    from supervisor import _bpf

    with pytest.raises(OSError, match="last insn is not an exit"):
        _bpf.load_device_program(assemble(program(Policy(True))[:-1]), devices.LICENSE)


# -- real containers -----------------------------------------------------------------------------------

def _bundles(rootfs: Path, base: Path) -> dict[str, str]:
    def write(name: str, args: list[str], mknod: bool = True, rules: list[dict[str, Any]] | None = None,
              resources: bool = True) -> str:
        config = copy.deepcopy(RUNC_SPEC)
        config["root"]["path"] = str(rootfs)
        config["process"]["args"] = args
        if mknod:
            for key in ("bounding", "effective", "permitted"):
                config["process"]["capabilities"][key].append("CAP_MKNOD")
        if rules:
            config["linux"]["resources"]["devices"] += rules
        if not resources:
            del config["linux"]["resources"]
        (base / name).mkdir()
        (base / name / "config.json").write_text(json.dumps(config))
        return str(base / name)

    sh = ["/bin/sh", "-c", LOOP]
    return {
        "runc_spec": write("runc_spec", ["/bin/sh", "-c", "head -c1 /dev/urandom | wc -c; echo > /dev/null"],
                           mknod=False),
        "mknod": write("mknod", sh),
        "no_resources": write("no_resources", sh, resources=False),
        "allowed": write("allowed", sh, rules=[{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rw"}]),
        "sleeper": write("sleeper", ["/bin/sleep", "1000"]),
    }


def _check(results: dict[str, Any]) -> None:
    assert results["runc_spec"] == {"code": 0, "out": "1\n"}
    for name in ("mknod", "no_resources", "inline"):
        out = results[name]["out"]
        assert "made" in out and "Operation not permitted" in out and "opened" not in out, (name, out)
        assert "null-ok" in out, (name, out)
    allowed = results["allowed"]["out"]
    assert "made" in allowed and "Operation not permitted" not in allowed and "null-ok" in allowed, allowed
    update = results["update"]
    assert "made" in update["before"] and "Operation not permitted" in update["before"], update
    assert "Operation not permitted" not in update["after"], update
    assert "Operation not permitted" in update["again"] and "opened" not in update["again"], update


@needs_root
async def test_devices_on_cgroup_v1(rootfs: Path, tmp_path: Path) -> None:
    if not os.path.isdir("/sys/fs/cgroup/devices"):
        pytest.skip("no v1 devices controller here")
    (tmp_path / "manifest.toml").write_text(INLINE)
    results = await play(_bundles(rootfs, tmp_path), str(tmp_path / "manifest.toml"))
    _check(results)
    assert results["update"]["programs"] is None


def _v2_mount() -> str | None:
    """Where this host mounts cgroup2 (``/sys/fs/cgroup`` on a pure v2 host)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.split()[0] == "cgroup2" and left.split()[3] == "/":
            return left.split()[4]
    return None


@needs_root
def test_devices_on_cgroup_v2(rootfs: Path, tmp_path: Path) -> None:
    """The supervisor in a mount namespace that shows it a pure v2 host: only cgroup2 at /sys/fs/cgroup.
    Its cgroups are real ones on the host's cgroup2 mount; none is left."""
    host_v2 = _v2_mount()
    if host_v2 is None or shutil.which("unshare") is None:
        pytest.skip("no cgroup2 mount (or no unshare) here")
    (tmp_path / "manifest.toml").write_text(INLINE)
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"bundles": _bundles(rootfs, tmp_path), "manifest": str(tmp_path / "manifest.toml")}))
    view = ("umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && "
            'exec "$0" -m tests.device_scenarios "$1"')
    # unshare and sh exec: the supervisor's pid is the child's, and its cgroups are supervisor-<pid>
    child = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", view, sys.executable,
                              str(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parent.parent)
    mine = Path(host_v2) / f"supervisor-{child.pid}"
    try:
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
        results = json.loads(stdout.splitlines()[-1])
        assert results["pid"] == child.pid
        _check(results)
        assert results["update"]["programs"] == 1  # replaced, not piled up
        assert results["update"]["shared"] is True  # two containers, one program
        assert results["update"]["programs_left"] == []  # and gone with the cgroups
    finally:
        if child.returncode is None:
            child.kill()
            child.wait()
        if mine.exists():
            for d in sorted((p for p in mine.rglob("*") if p.is_dir()), key=lambda p: len(str(p)), reverse=True):
                d.rmdir()
            mine.rmdir()
            pytest.fail(f"left behind on the host: {mine}")


def test_no_device_rules_without_a_cgroup(bundle: Any) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["annotations"] = {"supervisor.cgroup": "false"}
        del c["linux"]["resources"]

    p = plan(ContainerSpec.from_bundle(bundle(edit=edit)))
    assert p.cgroup is None and p.device_policy is None

