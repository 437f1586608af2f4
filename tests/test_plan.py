"""The planner: pure decisions from a spec, checked without running anything."""

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from supervisor import ContainerSpec, SpecError
from supervisor._wire import Mk, Op
from supervisor.plan import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT, resolve_in_root
from supervisor.plan import Plan, with_hook_state
from supervisor.plan import plan as plan_on

from .conftest import ROOT_HOST, RUNC_SPEC


def plan(spec: ContainerSpec, name: str = "container") -> Plan:
    """Planned for a root supervisor, whoever runs the tests: these need no root."""
    return plan_on(spec, name, ROOT_HOST)


def spec(root: Path, **edits: Any) -> ContainerSpec:
    config = copy.deepcopy(RUNC_SPEC)
    config["root"]["path"] = str(root)
    for key, value in edits.items():
        target = config
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    return ContainerSpec.from_oci(config, str(root))


def test_resolve_in_root_never_leaves_it(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "abs").symlink_to("/etc")
    (tmp_path / "up").symlink_to("../../../../etc")
    (tmp_path / "loop").symlink_to("loop")
    root = str(tmp_path)
    assert resolve_in_root(root, "/abs/passwd") == f"{root}/etc/passwd"
    assert resolve_in_root(root, "/up/passwd") == f"{root}/etc/passwd"
    assert resolve_in_root(root, "/../../x") == f"{root}/x"
    with pytest.raises(SpecError, match="too many symlinks"):
        resolve_in_root(root, "/loop")


def test_runc_default_steps(tmp_path: Path) -> None:
    p = plan(spec(tmp_path))
    ops = [s.op for s in p.steps]
    assert ops.index(Op.PIVOT) > ops.index(Op.MKNOD) > 0
    assert ops[ops.index(Op.PIVOT) + 1] == Op.REMOUNT_RO  # root.readonly
    assert ops[-10:] == [Op.MASK] * 10 and ops[-15:-10] == [Op.READONLY] * 5
    sysfs = next(s for s in p.steps if s.dst == "/sys")
    assert sysfs.flags == MS_RDONLY | MS_NOSUID | MS_NODEV | 8 and sysfs.fstype == "sysfs"
    devpts = next(s for s in p.steps if s.dst == "/dev/pts")
    assert devpts.data == "newinstance,ptmxmode=0666,mode=0620,gid=5"
    assert p.caps == (0x20000420, 0x20000420, 0x20000420, 0, 0x20000420)
    assert p.clone_flags == 0x20000000 | 0x40000000 | 0x08000000 | 0x04000000 | 0x00020000
    assert p.exec_paths[-1] == "/bin/sh" and "HOME=/" in p.env  # args ["sh"], no passwd


def test_bind_mount_flags_and_kind(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    mounts = [{"destination": "/a", "type": "bind", "source": str(tmp_path), "options": ["rbind", "ro", "nodev"]},
              {"destination": "/b", "source": "file", "options": ["bind", "rprivate"]}]
    a, b = [s for s in plan(spec(tmp_path, mounts=mounts)).steps if s.dst in ("/a", "/b")]
    assert (a.flags, a.mktype) == (MS_BIND | MS_REC, Mk.DIR)
    assert a.remount_flags == MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NODEV
    assert (b.flags, b.remount_flags, b.mktype, b.src) == (MS_BIND, 0, Mk.FILE, f"{tmp_path}/file")
    assert b.propagation == (1 << 18) | MS_REC


@pytest.mark.parametrize("edits, message", [
    ({"mounts": [{"destination": "/x", "type": "bind", "source": "/nonexistent-sv"}]},
     'mounts[0].source: "/nonexistent-sv" does not exist'),
    ({"mounts": [{"destination": "x", "type": "tmpfs"}]}, 'mounts[0].destination: "x" is not an absolute path'),
    ({"mounts": [{"destination": "/x", "type": "tmpfs", "options": ["idmap"]}]},
     'mounts[0].options[0]: "idmap" is not supported yet'),
    ({"linux__sysctl": {"kernel.panic": "1"}}, "linux.sysctl.kernel.panic: not a namespaced sysctl"),
    ({"linux__namespaces": [{"type": "mount"}, {"type": "uts"}], "linux__sysctl": {"net.core.somaxconn": "1"}},
     "linux.sysctl.net.core.somaxconn: needs a network namespace of the container's own"),
    ({"linux__namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "network", "path": "/proc/self/ns/net"}],
      "linux__sysctl": {"net.core.somaxconn": "1"}},
     'linux.sysctl.net.core.somaxconn: the network namespace "/proc/self/ns/net" is the host\'s'),
    ({"linux__namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "ipc", "path": "/nonexistent-sv/ipc"}],
      "linux__sysctl": {"kernel.shmmni": "1"}},
     'linux.sysctl.kernel.shmmni: the ipc namespace "/nonexistent-sv/ipc" cannot be read: No such file'),
    ({"linux__namespaces": [{"type": "pid"}, {"type": "mount"}]}, "hostname: setting the hostname needs a new uts"),
    ({"linux__namespaces": [{"type": "user"}, {"type": "mount"}], "hostname": None},
     "a new user namespace needs uidMappings"),
    ({"linux__namespaces": [{"type": "time"}], "hostname": None}, 'the "time" namespace is not supported yet'),
])
def test_plan_errors(tmp_path: Path, edits: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        plan(spec(tmp_path, **edits))
    assert message in str(info.value)


def test_user_namespace_binds_devices_and_writes_maps(tmp_path: Path) -> None:
    p = plan(spec(tmp_path, linux__namespaces=RUNC_SPEC["linux"]["namespaces"] + [{"type": "user"}],
                  linux__uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1},
                                      {"containerID": 1, "hostID": 100000, "size": 1000}],
                  linux__gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]))
    assert p.uid_map == "0 1000 1\n1 100000 1000\n" and p.gid_map == "0 1000 1\n"
    assert p.become_root
    assert Op.MKNOD not in {s.op for s in p.steps}
    null = next(s for s in p.steps if s.dst == "/dev/null")
    assert (null.op, null.src) == (Op.BIND_DEV, "/dev/null")


def test_host_root_is_read_only_and_needs_existing_mount_points() -> None:
    config = copy.deepcopy(RUNC_SPEC)
    config["root"] = {"path": "/", "readonly": True}
    config["mounts"] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
    config["linux"].update(maskedPaths=[], readonlyPaths=[])
    p = plan(ContainerSpec.from_oci(config, "/"))
    assert p.steps[0].op == Op.SETATTR_RO and p.rootfs_bind == "/tmp"
    # a mount point inside an earlier mount is made there, not on the host: allowed
    config["mounts"] += [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                         {"destination": "/dev/nonexistent-sv/mqueue", "type": "mqueue", "source": "mqueue"}]
    plan(ContainerSpec.from_oci(config, "/"))
    config["mounts"].append({"destination": "/nonexistent-sv", "type": "tmpfs", "source": "tmpfs"})
    with pytest.raises(SpecError, match="does not exist on the read-only host root"):
        plan(ContainerSpec.from_oci(config, "/"))
    config["root"]["readonly"] = False
    with pytest.raises(SpecError, match="root.readonly"):
        plan(ContainerSpec.from_oci(config, "/"))


def test_exec_paths_follow_path(tmp_path: Path) -> None:
    p = plan(spec(tmp_path, process__args=["sh"], process__env=["PATH=/usr/bin::/bin"]))
    assert p.exec_paths == ("/usr/bin/sh", "/bin/sh")
    assert plan(spec(tmp_path, process__args=["./run"])).exec_paths == ("./run",)
    assert os.sep == "/"


def test_an_exec_plan_takes_only_the_processs_identity_from_the_container(tmp_path: Path) -> None:
    import attrs

    from supervisor.plan import Plan, plan_exec

    box = spec(tmp_path, hostname="box")
    container = attrs.evolve(plan(box), pid1_init=True, loopback_up=True, oom_score_adj=5, uid_map="0 1000 1")
    p = plan_exec(container, box, 42, ("/bin/ps",))
    inherited = {"cwd", "env", "uid", "gid", "setgroups", "groups", "become_root", "caps", "no_new_privs", "rlimits",
                 "umask", "seccomp", "seccomp_flags", "apparmor_profile", "selinux_label", "pdeathsig"}
    for field in attrs.fields(Plan):
        if field.name in inherited:
            assert getattr(p, field.name) == getattr(container, field.name), field.name
        elif field.name not in ("args", "exec_paths", "ns_paths"):
            assert getattr(p, field.name) == field.default, field.name
    assert (p.args, p.exec_paths) == (("/bin/ps",), ("/bin/ps",))
    assert all(path.startswith("/proc/42/ns/") for _, path in p.ns_paths) and p.ns_paths


def test_hooks_the_init_runs(tmp_path: Path) -> None:
    """createContainer at a step of its own just before pivot_root, argv completed, no env given ->
    none; startContainer without env gets the workload's (runc's); the state text splits at the pid."""
    import json

    from supervisor.spec import Hook

    hooks = {"createContainer": [{"path": "/usr/bin/x", "timeout": 3}],
             "startContainer": [{"path": "/sbin/ldconfig", "args": ["ldconfig", "-v"]}, {"path": "/y", "env": ["A=1"]}],
             "poststop": [{"path": "/z"}]}
    s = spec(tmp_path, hooks=hooks)
    with pytest.raises(SpecError, match="hooks.createContainer: hooks are run by supervisor-oci"):
        plan(s)
    with pytest.raises(SpecError, match="hooks.poststop: not supported here"):
        plan_on(s, "c", ROOT_HOST, runs_hooks=("createContainer", "startContainer"))
    p = plan_on(s, "c", ROOT_HOST, runs_hooks=("createContainer", "startContainer", "poststop"))
    ops = [step.op for step in p.steps]
    assert ops.count(Op.HOOKS) == 1 and ops[ops.index(Op.HOOKS) + 1] == Op.PIVOT
    assert ops.index(Op.HOOKS) > ops.index(Op.MKNOD)  # after the mounts and /dev
    assert p.create_hooks == (Hook("/usr/bin/x", ("/usr/bin/x",), (), 3),)
    assert p.start_hooks == (Hook("/sbin/ldconfig", ("ldconfig", "-v"), p.env), Hook("/y", ("/y",), ("A=1",)))
    assert p.hook_state is None
    p = with_hook_state(p, {"ociVersion": "1.2.0", "id": "c", "bundle": "/b", "annotations": {"k": "v\"}"}})
    assert p.hook_state is not None
    create, start, tail = p.hook_state
    assert json.loads(create + "1" + tail) == {"ociVersion": "1.2.0", "id": "c", "status": "creating", "pid": 1,
                                               "bundle": "/b", "annotations": {"k": "v\"}"}}
    assert json.loads(start + "42" + tail)["status"] == "created"
    assert with_hook_state(plan(spec(tmp_path)), {"id": "c"}).hook_state is None  # no hooks, no state

    # without pivot_root (no mount namespace), before the chroot
    ns = [n for n in RUNC_SPEC["linux"]["namespaces"] if n["type"] != "mount"]
    p = plan_on(spec(tmp_path, hooks=hooks, mounts=[], linux__namespaces=ns, linux__maskedPaths=[],
                     linux__readonlyPaths=[]), "c", ROOT_HOST, runs_hooks=("createContainer", "startContainer",
                                                                           "poststop"))
    assert [step.op for step in p.steps] == [Op.HOOKS, Op.CHROOT]
