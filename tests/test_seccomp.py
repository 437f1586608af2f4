"""Seccomp filters on real containers: the blocked call fails as configured, from inside."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import anyio

import supervisor
from supervisor import ContainerSpec, SpecError
from supervisor.seccomp import DEFAULT_PROFILE, compile_seccomp, parse_seccomp

from .conftest import Bundle, needs_root
from .probe import run_capture

pytestmark = needs_root


def profile(**seccomp: Any) -> Any:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                 **seccomp}
    return edit


ENOSPC_ON_MKDIR = {"syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                 "errnoRet": errno.ENOSPC}]}


@pytest.mark.parametrize("nnp", [True, False])
async def test_blocked_call_fails_with_the_configured_errno(bundle: Bundle, nnp: bool) -> None:
    def edit(c: dict[str, Any]) -> None:
        profile(**ENOSPC_ON_MKDIR)(c)
        c["process"]["noNewPrivileges"] = nnp  # without it, the filter goes in before the caps go
        c["root"]["readonly"] = False

    script = "grep Seccomp: /proc/self/status; mkdir /tmp/x 2>&1; ls /tmp"
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)))
    assert "Seccomp:\t2" in out
    assert "No space left on device" in out


async def test_kill_action_and_argument_conditions(bundle: Bundle) -> None:
    kill_uname = profile(syscalls=[{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}])
    status, _ = await run_capture(ContainerSpec.from_bundle(bundle("/bin/uname", edit=kill_uname)))
    assert status.signal == signal.SIGSYS

    # kill(2) refused only for signal 10 (SIGUSR1): arg 1 == 10
    only_usr1 = profile(syscalls=[{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
                                   "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}])
    script = "kill -USR1 $$ 2>&1 && echo usr1-sent; kill -0 $$ && echo zero-sent"
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=only_usr1)))
    assert "Permission denied" in out and "usr1-sent" not in out and "zero-sent" in out


async def test_exec_gets_the_containers_filter(bundle: Bundle) -> None:
    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "100", edit=profile(**ENOSPC_ON_MKDIR)))
    r, w = os.pipe()
    async with supervisor.open_container(spec, name="filtered") as c:
        try:
            status = await c.exec(["/bin/sh", "-c", "mkdir /tmp/y"], stderr=w)
        finally:
            os.close(w)
        c.kill()
    with os.fdopen(r) as err:
        assert status.code == 1 and "No space left on device" in err.read()


def test_default_profile_compiles_and_is_what_manifests_get(tmp_path: Path) -> None:
    program, flags = compile_seccomp(DEFAULT_PROFILE)
    assert len(program) % 8 == 0 and 8 < len(program) < 65000 and flags == 0
    manifest = tmp_path / "m.toml"
    manifest.write_text('[containers.a]\nargs = ["/bin/sh", "-c", "unshare --user true; grep Seccomp: '
                        '/proc/self/status"]\n[containers.b]\nargs = ["/bin/true"]\nseccomp = "unconfined"\n')
    from supervisor.manifest import load_manifest

    specs = {s.name: s.spec for s in load_manifest(manifest).services}
    assert specs["a"].seccomp == DEFAULT_PROFILE and specs["b"].seccomp is None
    result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--state-dir", str(tmp_path / "s"),
                             str(manifest)], capture_output=True, text=True, timeout=30, check=False)
    assert "a | unshare: unshare failed: Operation not permitted" in result.stdout
    assert "a | Seccomp:\t2" in result.stdout


def test_bad_profiles() -> None:
    for value, message in [
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
         "linux.seccomp.syscalls[0].names: expected a list of syscall names"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]},
         "linux.seccomp.flags[0]: unknown or unsupported flag"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, "linux.seccomp.listenerPath: not supported yet"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                                                           "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]},
         "linux.seccomp.syscalls[0].args[0]: expected {index: 0..5"),
    ]:
        with pytest.raises(SpecError) as info:
            parse_seccomp(value)
        assert message in str(info.value)


@pytest.mark.parametrize("no_new_privs", [False, True])
async def test_the_pid1_init_runs_under_the_workloads_filter(bundle: Bundle, no_new_privs: bool) -> None:
    """The init, root in the workload's namespaces, is confined as the workload is (as Docker's --init
    is): under its filter, whatever noNewPrivileges says."""
    def edit(c: dict[str, Any]) -> None:
        profile(syscalls=[{"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}])(c)
        c["process"]["noNewPrivileges"] = no_new_privs
        c["annotations"] = {"supervisor.init": "true"}

    args = ("/bin/sh", "-c", "grep Seccomp: /proc/1/status /proc/self/status")
    status, out = await run_capture(ContainerSpec.from_bundle(bundle(*args, edit=edit)))
    assert status.code == 0
    assert sorted(out.split()) == ["/proc/1/status:Seccomp:", "/proc/self/status:Seccomp:", "2", "2"]


async def test_a_pid1_init_its_filter_stops_from_reaping_ends(bundle: Bundle) -> None:
    """A profile that refuses wait4 leaves the init unable to do its job: it ends (255), never hangs."""
    def edit(c: dict[str, Any]) -> None:
        profile(syscalls=[{"names": ["wait4"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}])(c)
        c["annotations"] = {"supervisor.init": "true"}

    with anyio.fail_after(10):  # an init that cannot reap would wait for ever
        status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/echo", "hello", edit=edit)))
    assert (status.code, out) == (255, "hello\n")


async def test_a_pid1_init_its_filter_stops_from_waiting_for_signals_ends(bundle: Bundle) -> None:
    """A profile that refuses rt_sigtimedwait would leave the init spinning for ever: it ends (255)."""
    def edit(c: dict[str, Any]) -> None:
        profile(syscalls=[{"names": ["rt_sigtimedwait"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}])(c)
        c["annotations"] = {"supervisor.init": "true"}

    with anyio.fail_after(10):
        status, _ = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sleep", "5", edit=edit)))
    assert status.code == 255
