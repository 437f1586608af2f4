"""``spec`` (a starting config.json, as ``runc spec`` writes it) and ``features`` (what we implement,
as the runtime spec's features document)."""

import json
import os
from typing import Any

from .log import CommandError

__all__ = ["default_spec", "features", "install_fast", "write_spec"]

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
           "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_spec(rootless: bool = False) -> dict[str, Any]:
    """The config ``runc spec`` starts people with: ``sh`` on a read-only ``rootfs``, few capabilities,
    new pid, network, ipc, uts and mount namespaces. ``rootless``: a user namespace mapping root to
    the caller, no network namespace, and ``/sys`` bound from the host."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime",
                                                                                "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    linux: dict[str, Any] = {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": namespaces,
        "maskedPaths": _MASKED,
        "readonlyPaths": _READONLY,
    }
    if rootless:
        mounts = [m for m in mounts if m["type"] not in ("sysfs", "cgroup")]
        mounts[2]["options"] = [o for o in mounts[2]["options"] if o != "gid=5"]
        mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        namespaces[:] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        del linux["resources"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(_CAPS) for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc" if not rootless else "supervisor",
        "mounts": mounts,
        "linux": linux,
    }


def write_spec(bundle: str, rootless: bool) -> None:
    path = os.path.join(bundle, "config.json")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise CommandError(f"File {path} exists. Remove it first") from None
    with os.fdopen(fd, "w") as f:
        json.dump(default_spec(rootless), f, indent="\t")
        f.write("\n")


def features() -> str:
    """The runtime spec's features document (``features.md``): what a caller may ask of us."""
    from .. import plan as planner
    from .. import seccomp
    from ..host import Host
    from ..spec import CAPABILITIES, NAMESPACE_TYPES
    from .hooks import RUNS

    options = sorted(set(planner._OPTION_FLAGS) | set(planner._PROPAGATION))
    host = Host.probe()
    doc = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": list(RUNS),
        "mountOptions": options,
        "linux": {
            "namespaces": sorted(t for t in NAMESPACE_TYPES if t != "time"),
            "capabilities": sorted(CAPABILITIES, key=CAPABILITIES.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": sorted(seccomp._ACTIONS)},
            "apparmor": {"enabled": host.apparmor},
            "selinux": {"enabled": host.selinux},
        },
        "annotations": {"org.opencontainers.runtime-spec.features.runtime": "supervisor-oci"},
    }
    return json.dumps(doc, indent=2)


_MARKER = b"SUPERVISOR-OCI-PYTHON:"


def install_fast(dest: str) -> None:
    """Copy the native front end (``native/oci_fast.c``) to ``dest``, with this interpreter written in
    as the one it hands every other call to (``PYTHON -P -c "from supervisor.oci.main import entry; entry()"``)."""
    import sys

    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_oci_fast")
    try:
        with open(source, "rb") as f:
            binary = bytearray(f.read())
    except OSError as e:
        raise CommandError(f"the native front end was not built: {e}") from None
    python = os.path.abspath(sys.executable).encode()
    at = binary.find(_MARKER)
    if at < 0 or binary.find(_MARKER, at + 1) >= 0 or len(python) >= 4096 - len(_MARKER):
        raise CommandError(f"{source}: no single place for the interpreter's path")
    start = at + len(_MARKER)
    binary[start:start + len(python) + 1] = python + b"\0"
    tmp = f"{dest}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755)
    with os.fdopen(fd, "wb") as f:
        f.write(binary)
    os.rename(tmp, dest)
