"""Real containers on the busybox rootfs: what the workload sees, compared with fixed values.

The expected values are what Debian's runc 1.1.5 shows the same probe for the same bundle on this
kind of machine (checked side by side when they were written). The cgroup binds differ on purpose:
runc gives each container a cgroup, we don't yet, so only their mount points and options are compared.
"""

import errno
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import anyio

import supervisor
from supervisor import BootstrapError, ContainerSpec, SpecError

from .conftest import ROOT_HOST, Bundle, children_of, needs_root
from .probe import one, parse, probe, run_capture

pytestmark = needs_root

RUNC_DEFAULT_CAPS = "0000000020000420"  # CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE

#: mount point, per-mount options, fs type: what the runc spec default gives (cgroup binds after /sys)
RUNC_DEFAULT_MOUNTS = """\
/proc rw,relatime proc
/dev rw,nosuid tmpfs
/dev/pts rw,nosuid,noexec,relatime devpts
/dev/shm rw,nosuid,nodev,noexec,relatime tmpfs
/dev/mqueue rw,nosuid,nodev,noexec,relatime mqueue
/sys ro,nosuid,nodev,noexec,relatime sysfs
/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime tmpfs
/proc/bus ro,relatime proc
/proc/fs ro,relatime proc
/proc/irq ro,relatime proc
/proc/sys ro,relatime proc
/proc/acpi ro,relatime tmpfs
/proc/keys rw,nosuid tmpfs
/proc/timer_list rw,nosuid tmpfs
/sys/firmware ro,relatime tmpfs""".splitlines()

RUNC_DEFAULT_DEV = """\
/dev/fd -> /proc/self/fd
/dev/full character special file 1,7 666 0:0
/dev/mqueue directory 0,0 1777 0:0
/dev/null character special file 1,3 666 0:0
/dev/ptmx -> pts/ptmx
/dev/pts directory 0,0 755 0:0
/dev/random character special file 1,8 666 0:0
/dev/shm directory 0,0 1777 0:0
/dev/stderr -> /proc/self/fd/2
/dev/stdin -> /proc/self/fd/0
/dev/stdout -> /proc/self/fd/1
/dev/tty character special file 5,0 666 0:0
/dev/urandom character special file 1,9 666 0:0
/dev/zero character special file 1,5 666 0:0
/dev/pts/ptmx character special file 5,2 666 0:0""".splitlines()


def _mounts(report: dict[str, list[str]]) -> list[str]:
    lines = [" ".join(m.split()[:3]) for m in report["mount"]]
    return [m for m in lines if not m.startswith("/sys/fs/cgroup/")]


async def test_runc_spec_default(bundle: Bundle) -> None:
    report = await probe(bundle("/bin/probe"))
    assert one(report, "fds") == "0 1 2 3"  # 3 is ls reading the directory
    assert (one(report, "uid"), one(report, "gid"), one(report, "Groups")) == ("0", "0", "")
    for cap in ("CapPrm", "CapEff", "CapBnd"):
        assert one(report, cap) == RUNC_DEFAULT_CAPS
    assert (one(report, "CapInh"), one(report, "CapAmb")) == ("0" * 16, "0" * 16)
    assert one(report, "NoNewPrivs") == "1"
    assert one(report, "Seccomp") == "0"
    assert (one(report, "hostname"), one(report, "domainname")) == ("runc", "(none)")
    assert (one(report, "cwd"), one(report, "umask"), one(report, "pid")) == ("/", "0022", "1")
    assert report["env"] == ["HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "PWD=/", "SHLVL=1", "TERM=xterm"]
    assert "open files 1024 1024 files" in report["limit"]
    root = report["mount"][0].split()
    assert root[0] == "/" and root[1].startswith("ro,")
    assert _mounts(report)[1:] == RUNC_DEFAULT_MOUNTS
    cgroups = [m.split()[:3] for m in report["mount"] if m.startswith("/sys/fs/cgroup/")]
    assert cgroups and all(opts == "ro,nosuid,nodev,noexec,relatime" and fs == "cgroup" for _, opts, fs in cgroups)
    assert report["dev"] == RUNC_DEFAULT_DEV
    assert one(report, "root") == "ro"
    assert one(report, "lo") == "0x9"  # up, as runc leaves it


async def test_non_root_user_with_groups(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [29, 44], "umask": 0o027}
        c["process"]["cwd"] = "/home/alice"

    report = await probe(bundle("/bin/probe", edit=edit))
    assert (one(report, "uid"), one(report, "gid"), one(report, "Groups")) == ("1000", "1000", "29 44")
    assert (one(report, "CapPrm"), one(report, "CapEff")) == ("0" * 16, "0" * 16)
    assert one(report, "CapBnd") == RUNC_DEFAULT_CAPS
    assert (one(report, "cwd"), one(report, "umask")) == ("/home/alice", "0027")
    assert "HOME=/home/alice" in report["env"]


async def test_dropped_capabilities_and_ambient(bundle: Bundle) -> None:
    caps = ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]

    def edit(c: dict[str, Any]) -> None:
        c["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted", "inheritable",
                                                          "ambient")}
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    report = await probe(bundle("/bin/probe", edit=edit))
    # a non-root user keeps exactly the ambient set across exec
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert one(report, cap) == "0000000000000401", cap


async def test_custom_rlimits_and_oom_score(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
                                   {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
                                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]
        c["process"]["oomScoreAdj"] = 123

    report = await probe(bundle("/bin/probe", edit=edit))
    assert "open files 256 512 files" in report["limit"]
    assert "processes 100 200 processes" in report["limit"]
    assert "core file size 0 0 bytes" in report["limit"]
    assert one(report, "oom_score_adj") == "123"


async def test_writable_root_bind_mounts_hostname(bundle: Bundle, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "file").write_text("hello from the host\n")
    (tmp_path / "single").write_text("one file\n")

    def edit(c: dict[str, Any]) -> None:
        c["root"]["readonly"] = False
        c["hostname"] = "box"
        c["domainname"] = "example.test"
        c["mounts"] += [{"destination": "/mnt/host", "type": "bind", "source": str(host), "options": ["rbind", "ro"]},
                        {"destination": "/etc/single", "type": "bind", "source": "single", "options": ["bind"]}]

    b = bundle("/bin/sh", "-c", "/bin/probe; cat /mnt/host/file /etc/single; echo x > /mnt/host/new || echo ro-ok",
               edit=edit)
    status, out = await run_capture(ContainerSpec.from_bundle(b))
    report = parse(out)
    assert status.code == 0, out
    assert one(report, "root") == "rw"
    assert (one(report, "hostname"), one(report, "domainname")) == ("box", "example.test")
    assert any(m.startswith("/mnt/host ro,") for m in report["mount"])
    assert any(m.startswith("/etc/single rw,") for m in report["mount"])
    assert "hello from the host\none file\n" in out and "ro-ok" in out
    assert not (host / "new").exists()


async def test_sysctl_masked_and_readonly_paths(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}

    script = ("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni; wc -c < /proc/timer_list; "
              "ls /proc/acpi | wc -l; echo 1 > /proc/sys/kernel/shmmni || echo sys-ro")
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)))
    assert status.code == 0, out
    assert out.split()[:4] == ["1", "1234", "0", "0"] and out.split()[-1] == "sys-ro", out
    assert Path("/proc/sys/kernel/shmmni").read_text().strip() != "1234"


async def test_extra_device(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600,
                                  "uid": 1000, "gid": 44}]

    report = await probe(bundle("/bin/probe", edit=edit))
    assert "/dev/mynull character special file 1,3 600 1000:44" in report["dev"]


async def test_exit_codes_and_signals(bundle: Bundle) -> None:
    status = await supervisor.run(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "exit 7")), name="seven")
    assert (status.code, status.signal) == (7, None)

    r, w = os.pipe()
    trap = "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done"
    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", trap))
    with os.fdopen(r) as out:
        try:
            async with supervisor.open_container(spec, name="trap", stdout=w) as c:
                os.close(w)
                w = -1
                assert await anyio.to_thread.run_sync(out.readline) == "ready\n"  # the trap is set
                c.send_signal(signal.SIGTERM)
                assert (await c.wait()).code == 3
        finally:
            if w >= 0:
                os.close(w)

    async with supervisor.open_container(ContainerSpec.from_bundle(bundle("/bin/sleep", "100")), name="k") as c:
        c.send_signal(signal.SIGTERM)  # pid 1 without a handler ignores it
        with anyio.move_on_after(0.3):
            await c.wait()
        assert c.status is None
        c.kill()
        assert (await c.wait()).signal == signal.SIGKILL


async def test_leaving_the_block_kills_the_container(bundle: Bundle) -> None:
    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "100"))
    with anyio.move_on_after(0.3):
        await supervisor.run(spec, name="cancelled")
    async with supervisor.open_container(spec, name="left") as c:
        pid = c.pid
    assert c.status is not None and c.status.signal == signal.SIGKILL
    assert not os.path.exists(f"/proc/{pid}")


async def test_join_namespaces_by_path(bundle: Bundle, tmp_path: Path) -> None:
    first = ContainerSpec.from_bundle(bundle("/bin/sleep", "100", edit=lambda c: c.update(hostname="first")))
    async with supervisor.open_container(first, name="first") as a:
        def join(c: dict[str, Any]) -> None:
            del c["hostname"]
            c["linux"]["namespaces"] = [
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                {"type": "uts", "path": f"/proc/{a.pid}/ns/uts"},
                {"type": "network", "path": f"/proc/{a.pid}/ns/net"}]

        second = tmp_path / "second"
        second.mkdir()
        (second / "config.json").write_text((bundle("/bin/sh", "-c", "hostname; readlink /proc/self/ns/net",
                                                     edit=join) / "config.json").read_text())
        status, out = await run_capture(ContainerSpec.from_bundle(second), "second")
        assert status.code == 0, out
        assert out.split() == ["first", os.readlink(f"/proc/{a.pid}/ns/net")]


async def test_sysctls_of_joined_namespaces(bundle: Bundle, tmp_path: Path) -> None:
    """A container that joins another's network and ipc namespaces by path (as a pod's sandbox joins
    the network namespace containerd made) may set their sysctls: they are its own, not the host's."""
    first = ContainerSpec.from_bundle(bundle("/bin/sleep", "100"))
    async with supervisor.open_container(first, name="owner") as a:
        def join(c: dict[str, Any]) -> None:
            c["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                        {"type": "ipc", "path": f"/proc/{a.pid}/ns/ipc"},
                                        {"type": "network", "path": f"/proc/{a.pid}/ns/net"}]
            c["linux"]["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shmmni": "1234",
                                    "net.ipv4.ping_group_range": "0 2147483647"}

        second = tmp_path / "second"
        second.mkdir()
        script = ("cd /proc/sys; cat net/ipv4/ip_unprivileged_port_start kernel/shmmni net/ipv4/ping_group_range; "
                  "readlink /proc/self/ns/net")
        (second / "config.json").write_text((bundle("/bin/sh", "-c", script, edit=join) / "config.json").read_text())
        status, out = await run_capture(ContainerSpec.from_bundle(second), "joiner")
        assert status.code == 0, out
        assert out.split() == ["0", "1234", "0", "2147483647", os.readlink(f"/proc/{a.pid}/ns/net")], out
    host = [Path("/proc/sys", name).read_text().split() for name in
            ("net/ipv4/ip_unprivileged_port_start", "kernel/shmmni", "net/ipv4/ping_group_range")]
    assert host != [["0"], ["1234"], ["0", "2147483647"]] and host[1] != ["1234"]


async def test_user_namespace(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "cat /proc/self/uid_map; id -u; sleep 0.3", edit=edit))
    r, w = os.pipe()
    with os.fdopen(r) as out:
        try:
            async with supervisor.open_container(spec, name="userns", stdout=w) as c:
                host_uid = [line.split()[1] for line in Path(f"/proc/{c.pid}/status").read_text().splitlines()
                            if line.startswith("Uid:")]
                assert (await c.wait()).code == 0
        finally:
            os.close(w)
        assert out.read().split() == ["0", "100000", "65536", "0"]
    assert host_uid == ["100000"]  # root inside is an unprivileged uid outside


async def test_host_root_read_only(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["root"] = {"path": "/", "readonly": True}
        c["mounts"] = [m for m in c["mounts"] if m["destination"] in ("/proc", "/dev", "/dev/pts", "/dev/shm")]
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]})
        c["linux"]["maskedPaths"] = []
        c["linux"]["readonlyPaths"] = []

    script = ("touch /usr/sv-test 2>/dev/null && echo usr-rw || echo usr-ro; "
              "for m in $(awk '$5 != \"/\" && $5 !~ \"^/(proc|dev|tmp)\" {print $5}' /proc/self/mountinfo); do "
              "  grep -q \" $m ro,\" /proc/self/mountinfo || echo \"rw-submount $m\"; done; "
              "touch /tmp/x && echo tmp-rw; echo pid $$")
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit)))
    assert status.code == 0, out
    assert out.split("\n")[:-1] == ["usr-ro", "tmp-rw", "pid 1"], out
    assert not os.path.exists("/usr/sv-test")


async def test_symlinked_mount_destination_stays_inside(bundle: Bundle, rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    link = rootfs / "data" / "escape"
    link.symlink_to(str(outside))  # absolute: on the host it would lead out of the rootfs
    try:
        def edit(c: dict[str, Any]) -> None:
            c["root"]["readonly"] = False
            c["mounts"].append({"destination": "/data/escape/sub", "type": "tmpfs", "source": "tmpfs"})

        status, out = await run_capture(ContainerSpec.from_bundle(
            bundle("/bin/sh", "-c", "grep -c ' /data/escape/sub \\| ' /proc/self/mountinfo; true", edit=edit)))
        assert status.code == 0, out
        assert list(outside.iterdir()) == []  # nothing was created or mounted outside
        inside = rootfs / outside.relative_to("/") / "sub"
        assert inside.is_dir()
    finally:
        link.unlink()
        shutil.rmtree(rootfs / outside.relative_to("/").parts[0] / outside.relative_to("/").parts[1])


# -- failures ------------------------------------------------------------------------------------

async def test_missing_binary(bundle: Bundle) -> None:
    with pytest.raises(BootstrapError) as info:
        await supervisor.run(ContainerSpec.from_bundle(bundle("/bin/nope")), name="web")
    e = info.value
    assert (e.errno, e.stage, e.operation, e.object, e.container) == (errno.ENOENT, "exec", "exec", "/bin/nope", "web")
    assert str(e) == 'web: exec "/bin/nope": No such file or directory'
    assert e.exit_code == 127


async def test_program_searched_in_path(bundle: Bundle) -> None:
    with pytest.raises(BootstrapError) as info:
        await supervisor.run(ContainerSpec.from_bundle(bundle("nope")), name="p")
    assert info.value.message == 'exec "nope": No such file or directory'
    status, out = await run_capture(ContainerSpec.from_bundle(bundle("echo", "found")))
    assert (status.code, out) == (0, "found\n")


async def test_not_executable(bundle: Bundle) -> None:
    with pytest.raises(BootstrapError) as info:
        await supervisor.run(ContainerSpec.from_bundle(bundle("/data/not-executable")), name="x")
    assert (info.value.errno, info.value.exit_code) == (errno.EACCES, 126)


async def test_failed_mount_names_it(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": "/mnt/bad", "type": "nosuchfs", "source": "x"})

    with pytest.raises(BootstrapError) as info:
        await supervisor.run(ContainerSpec.from_bundle(bundle(edit=edit)), name="m")
    e = info.value
    assert (e.stage, e.operation, e.object, e.errno) == ("init", "mount", "/mnt/bad", errno.ENODEV)


async def test_unknown_user_name(rootfs: Path) -> None:
    spec = ContainerSpec(root=supervisor.spec.Root(str(rootfs)),
                         process=supervisor.spec.Process(args=("/bin/true",), user=supervisor.spec.User(name="ghost")))
    with pytest.raises(SpecError, match='process.user: no user "ghost"'):
        await supervisor.run(spec, name="u")


async def test_user_name_resolved_in_rootfs(rootfs: Path) -> None:
    spec = ContainerSpec(root=supervisor.spec.Root(str(rootfs)),
                         process=supervisor.spec.Process(args=("/bin/sh", "-c", "id -u; id -G"),
                                                         user=supervisor.spec.User(name="alice")))
    status, out = await run_capture(spec)
    assert status.code == 0, out
    assert out.split("\n")[:2] == ["1000", "1000 29 44"]


def test_malformed_and_unsupported_configs(bundle: Bundle) -> None:
    b = bundle()
    config = json.loads((b / "config.json").read_text())
    cases = [
        (lambda c: c["process"].update(consoleSize={"height": 70000, "width": 1}),
         "process.consoleSize.height: 70000 is out of range (0..65535)"),
        (lambda c: c["process"].update(consoleSize={"rows": 1}), "process.consoleSize.rows: unknown field"),
        (lambda c: c["process"].update(commandLine="x"), "process.commandLine: not supported yet"),
        (lambda c: c["linux"].update(intelRdt={}), "linux.intelRdt: not supported yet"),
        (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_NOTIFY"}),
         "linux.seccomp.defaultAction: unknown or unsupported action 'SCMP_ACT_NOTIFY' (one of SCMP_ACT_KILL, "
         "SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_ERRNO, SCMP_ACT_LOG, SCMP_ACT_ALLOW)"),
        (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
                                                {"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]),
         'process.rlimits[1].type: unknown rlimit "RLIMIT_FOO"'),
        (lambda c: c["process"].update(env=["A=1", "JUNK"]), 'process.env[1]: "JUNK" is not NAME=VALUE'),
        (lambda c: c["process"].update(bogus=1), "process.bogus: unknown field"),
        (lambda c: c["process"]["capabilities"].update(bounding=["CAP_FOO"]),
         'process.capabilities.bounding[0]: unknown capability "CAP_FOO"'),
    ]
    for edit, message in cases:
        c = json.loads(json.dumps(config))
        edit(c)
        (b / "config.json").write_text(json.dumps(c))
        with pytest.raises(SpecError) as info:
            ContainerSpec.from_bundle(b)
        assert str(info.value) == f"{b}/config.json: {message}"
    (b / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="config.json: not valid JSON"):
        ContainerSpec.from_bundle(b)


async def test_pid1_init_reaps_orphans_and_forwards_signals(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["annotations"] = {"supervisor.init": "true"}

    script = ("(sleep 0.05 &); echo pid $$; sleep 0.3; "
              "echo zombies $(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l); "
              "trap 'exit 5' TERM; echo ready; while :; do sleep 0.05; done")
    r, w = os.pipe()
    with os.fdopen(r) as out:
        try:
            spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, edit=edit))
            async with supervisor.open_container(spec, name="init", stdout=w) as c:
                os.close(w)
                w = -1
                lines = []
                while not lines or lines[-1] != "ready":
                    lines.append(await anyio.to_thread.run_sync(out.readline))
                    lines[-1] = lines[-1].strip()
                c.send_signal(signal.SIGTERM)  # pid 1 is our init: it passes the signal on
                assert (await c.wait()).code == 5
        finally:
            if w >= 0:
                os.close(w)
    assert lines == ["pid 2", "zombies 0", "ready"]

    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "100", edit=edit))
    async with supervisor.open_container(spec, name="init2") as c:
        await anyio.sleep(0.1)
        c.send_signal(signal.SIGTERM)
        assert (await c.wait()).code == 128 + signal.SIGTERM

    with pytest.raises(BootstrapError, match='exec "/bin/nope"'):
        await supervisor.run(ContainerSpec.from_bundle(bundle("/bin/nope", edit=edit)), name="init3")


async def test_exec_sees_the_container(bundle: Bundle) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [29]}
        c["process"]["env"].append("FROM_CONFIG=yes")
        c["process"]["cwd"] = "/home/alice"

    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "100", edit=edit))
    async with supervisor.open_container(spec, name="target") as c:
        r, w = os.pipe()
        try:
            status = await c.exec(["/bin/sh", "-c", "hostname; echo $$; id -u; id -G; pwd; echo $FROM_CONFIG; "
                                   "grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'; exit 4"],
                                  stdout=w)
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            lines = f.read().split("\n")
        assert status.code == 4
        # the container's hostname and pid namespace (its sleep is pid 1), user, groups, cwd, env, caps
        assert lines[:6] == ["runc", "2", "1000", "1000 29", "/home/alice", "yes"]
        assert lines[6].split() == ["CapEff:", "0000000000000000"]
        assert lines[7] == "4"  # sleep, sh, ls and grep: nothing of the host

        null = os.open(os.devnull, os.O_WRONLY)
        try:
            status = await c.exec(["pwd"], cwd="/tmp", env=["PATH=/bin"], stdout=null)
        finally:
            os.close(null)
        assert status.code == 0
        with pytest.raises(BootstrapError, match='exec "nope"'):
            await c.exec(["nope"])
        c.kill()
        await c.wait()
        with pytest.raises(BootstrapError) as info:
            await c.exec(["/bin/true"])
        assert info.value.errno == errno.ESRCH


async def test_exec_cannot_be_used_to_overwrite_the_bootstrap(bundle: Bundle) -> None:
    """CVE-2019-5736 from the container's side: a root process with every capability watches for
    processes entering the container and writes to their /proc/PID/exe. The bootstrap that enters
    runs from a sealed in-memory copy, so the host's binary stays as it was."""
    from supervisor._launch import BOOTSTRAP

    before = Path(BOOTSTRAP).read_bytes()
    watcher = ("while :; do for e in /proc/[0-9]*/exe; do x=$(readlink $e); "
               "case $x in *bootstrap*) echo \"seen $x\"; (echo pwned > $e) 2>/dev/null && echo WROTE;; esac; "
               "done; done")

    ours = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("CapEff:")), 16)
    every = [name for name, bit in supervisor.spec.CAPABILITIES.items() if ours >> bit & 1]

    def edit(c: dict[str, Any]) -> None:
        c["process"]["capabilities"] = {k: every for k in ("bounding", "effective", "permitted")}
        c["process"]["noNewPrivileges"] = False

    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", watcher, edit=edit))
    r, w = os.pipe()
    with os.fdopen(r) as out:
        try:
            async with supervisor.open_container(spec, name="attacker", stdout=w) as c:
                os.close(w)
                w = -1
                for _ in range(200):
                    assert (await c.exec(["/bin/true"])).code == 0
                c.kill()
        finally:
            if w >= 0:
                os.close(w)
        report = out.read()
    assert "WROTE" not in report
    assert Path(BOOTSTRAP).read_bytes() == before
    # whenever the container caught a bootstrap inside, it was the sealed copy, never the host's file
    assert all(line.startswith("seen /memfd:supervisor-bootstrap") for line in report.splitlines()), report


def test_lsm_labels_are_refused_where_the_lsm_is_off(bundle: Bundle) -> None:
    from supervisor.plan import plan

    for edit, message in [
        (lambda c: c["process"].update(apparmorProfile="docker-default"),
         "process.apparmorProfile: AppArmor is not enabled on this host"),
        (lambda c: c["process"].update(selinuxLabel="system_u:system_r:container_t:s0"),
         "process.selinuxLabel: SELinux is not enabled on this host"),
        (lambda c: c["linux"].update(mountLabel="system_u:object_r:container_file_t:s0"),
         "linux.mountLabel: SELinux is not enabled on this host"),
    ]:
        with pytest.raises(SpecError, match=message):
            plan(ContainerSpec.from_bundle(bundle(edit=edit)), host=ROOT_HOST)  # a host without LSMs


async def test_cancelled_starts_leave_nothing_behind(bundle: Bundle) -> None:
    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "100"))
    for i in range(40):  # cancellations land at every point of the start, one run or another
        with anyio.move_on_after(i * 0.0003):
            async with supervisor.open_container(spec, name=f"c{i}"):
                await anyio.sleep(10)
    # the autouse fixture checks: no child process (no zombie init), no fd, no cgroup left


async def test_a_cancelled_waiter_hands_over(bundle: Bundle) -> None:
    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "0.3"))
    async with supervisor.open_container(spec, name="w") as c:
        results: list[object] = []
        first = anyio.CancelScope()

        async def waiter(scope: anyio.CancelScope) -> None:
            with scope:
                results.append(await c.wait())

        async with anyio.create_task_group() as group:
            group.start_soon(waiter, first)  # takes the pidfd...
            await anyio.wait_all_tasks_blocked()
            group.start_soon(waiter, anyio.CancelScope())  # ...this one queues behind it...
            await anyio.wait_all_tasks_blocked()
            assert c._reaping.statistics().tasks_waiting == 1
            first.cancel()  # ...and takes over when the first gives up, before the init exits
        assert results == [supervisor.ExitStatus(code=0)]
        assert first.cancelled_caught


async def test_a_cancel_as_the_cgroup_cleanup_begins_keeps_the_status(bundle: Bundle,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The init is reaped, then its cgroup removed: a cancel arriving between the two must not lose
    the status (a second wait would find no child, and the cgroup would stay)."""
    from supervisor.cgroups import Cgroup

    spec = ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "exit 3"))
    scope = anyio.CancelScope()
    remove = Cgroup.remove

    def cancel_then_remove(self: Cgroup, attempts: int = 50) -> bool:
        if attempts == 1:  # the first, quick attempt: as if the last processes still went away
            scope.cancel()
            return False
        return remove(self, attempts)

    monkeypatch.setattr(Cgroup, "remove", cancel_then_remove)
    async with supervisor.open_container(spec, name="w") as c:
        assert c.cgroup is not None
        with scope:
            await c.wait()
        assert await c.wait() == supervisor.ExitStatus(code=3)
    # the autouse fixture checks the cgroup is gone


async def test_a_cancel_as_an_exec_ends_leaves_no_zombie(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel landing right after the exec'd process's pidfd turned readable: it is reaped all the
    same (no zombie, no signal to a closed pidfd)."""
    spec = ContainerSpec.from_bundle(bundle("/bin/sleep", "100"))
    scope = anyio.CancelScope()
    wait_readable = anyio.wait_readable

    def comm_behind(fd: int) -> str | None:
        try:
            pid = next(line.split()[1] for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                       if line.startswith("Pid:"))
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, StopIteration):
            return None

    async def readable_then_cancel(obj: Any) -> None:
        await wait_readable(obj)
        if isinstance(obj, int) and comm_behind(obj) == "true":  # the exec'd /bin/true has ended
            scope.cancel()

    with anyio.fail_after(10):
        async with supervisor.open_container(spec, name="x") as c:
            monkeypatch.setattr(anyio, "wait_readable", readable_then_cancel)
            with scope:
                await c.exec(["/bin/true"])
            monkeypatch.undo()
            assert scope.cancel_called
            assert [name for _, name, _ in children_of(os.getpid())] == ["sleep"]  # the exec'd one is reaped
