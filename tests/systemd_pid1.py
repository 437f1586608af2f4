"""A real systemd as PID 1 of a private container, for the systemd cgroup driver's tests.

This machine has systemd installed but runs something else as PID 1, so the tests start one:
``unshare`` makes new mount, pid and cgroup namespaces; the host root is bound read-only with
tmpfs on /run, /tmp, /var and a /dev of a few device nodes (its console a log file, so systemd's
output lands there and nothing reaches the machine's console); the cgroup hierarchies are mounted
as the host has them (on this hybrid host: the v1 controllers, name=systemd and the cgroup2 mount),
each rooted at a cgroup made for this systemd, which the cgroup namespace makes its ``/``.
systemd runs ``--system`` with ``container=`` set and only ``quiet.target`` (a target of ours with
no dependencies) to start. It is up once it answers on its private socket.

``run(...)`` runs a command inside (``nsenter`` into its mount, cgroup and pid namespaces and its
root), as containerd's shim would run the runtime on a node. ``stop()`` SIGKILLs systemd (every
process of its pid namespace goes with it, a paused container's too: it thaws them), waits, and
removes the cgroups; the test checks that.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import supervisor

#: where the supervisor package is imported from, and the interpreter's prefix (a venv): the setup binds
#: them back over the tmpfs they may be under
_SOURCES = " ".join(sorted({str(Path(supervisor.__file__).resolve().parent.parent), sys.prefix}))

_SETUP = r"""
set -eu
R="$1"; LOG="$2"; UNITS="$3"; SHARE="$4"; MOUNTS="$5"; shift 5
mount --rbind / "$R"
mount -o remount,bind,ro "$R"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=755 tmpfs "$R/var"
mkdir -p "$R$SHARE" && mount --bind "$SHARE" "$R$SHARE"
# the code under test and its interpreter, where the tmpfs above would hide them (a clone or a venv under /tmp)
for src in "$@"; do
    mkdir -p "$R$src" && mount --bind "$src" "$R$src" && mount -o remount,bind,ro "$R$src"
done
mount -t proc proc "$R/proc"
mount -o remount,bind,ro "$R/sys"
umount -R "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755 tmpfs "$R/sys/fs/cgroup"
while read -r dir fstype options; do
    mkdir -p "$R/sys/fs/cgroup/$dir"
    mount -t "$fstype" -o "$options" cgroup "$R/sys/fs/cgroup/$dir"
done < "$MOUNTS"
mount -o remount,ro "$R/sys/fs/cgroup"
umount -R "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for d in null zero full random urandom tty; do
    touch "$R/dev/$d" && mount --bind "/dev/$d" "$R/dev/$d"
done
touch "$R/dev/console" && mount --bind "$LOG" "$R/dev/console"
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs tmpfs "$R/dev/shm"
cd "$R"
exec chroot "$R" /usr/bin/env -i container=supervisor-test SYSTEMD_UNIT_PATH="$UNITS:" \
    /lib/systemd/systemd --system --unit=quiet.target --log-target=console --log-level=info \
    --show-status=false
"""

SYSTEMD = "/lib/systemd/systemd"


class Unavailable(Exception):
    """systemd cannot be started here (the reason is the message)."""


def _hierarchies() -> list[tuple[str, str, str, str]]:
    """(mountpoint, fstype, options, our cgroup in it) for each cgroup mount under /sys/fs/cgroup."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        own[names] = path
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        mountpoint = left.split()[4]
        fstype, _, options = right.split()[:3]
        if fstype == "cgroup2":
            out.append((mountpoint, fstype, "rw", own.get("", "/")))
        elif fstype == "cgroup":
            names = [o for o in options.split(",") if o not in ("rw", "ro")]
            key = next((k for k in own if k and set(k.split(",")) == set(names)), None)
            if key is not None:
                out.append((mountpoint, fstype, ",".join(names), own[key]))
    return out


class SystemdPid1:
    def __init__(self, where: Path, share: Path | None = None) -> None:
        """``where``: its files (root, units, log); ``share``: a directory of the host's it sees at
        the same path (the test's bundle and state), ``where`` by default."""
        self.where = where
        self.share = share or where
        self.log = where / "systemd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.cgroups: list[str] = []

    def start(self, timeout: float = 20.0) -> None:
        if not os.path.exists(SYSTEMD):
            raise Unavailable(f"no {SYSTEMD}")
        root, units = self.where / "root", self.where / "units"
        root.mkdir()
        units.mkdir()
        (units / "quiet.target").write_text("[Unit]\nDescription=nothing but systemd\n")
        self.log.write_text("")
        name = f"supervisor-systemd-test-{os.getpid()}"
        mounts = []
        for mountpoint, fstype, options, own in _hierarchies():
            d = os.path.join(mountpoint, own.lstrip("/"), name)
            os.mkdir(d)
            self.cgroups.append(d)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # an empty v1 cpuset takes no task
                if os.path.exists(os.path.join(d, knob)):
                    value = Path(os.path.dirname(d), knob).read_text().strip()
                    Path(d, knob).write_text(value)
            inside = "unified" if fstype == "cgroup2" else next(
                (o[len("name="):] for o in options.split(",") if o.startswith("name=")), os.path.basename(mountpoint))
            mounts.append(f"{inside} {fstype} {options}\n")
        if not mounts:
            raise Unavailable("no cgroup hierarchy mounted under /sys/fs/cgroup")
        (self.where / "cgroup-mounts").write_text("".join(mounts))
        join = " && ".join(f"echo $$ > {d}/cgroup.procs" for d in self.cgroups)
        self.proc = subprocess.Popen(
            ["sh", "-c", f'{join} && exec unshare --mount --propagation private --pid --fork --cgroup '
             f'sh -c "$0" systemd-setup {root} {self.log} {units} {self.share} {self.where / "cgroup-mounts"} '
             f'{_SOURCES}', _SETUP],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        # (the setup script is the inner sh's $0: its name in error messages is the script's text)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise Unavailable(f"systemd's container did not start: {error.strip()} {self._log_tail()}")
            if not self.pid:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
                if children and Path(f"/proc/{children[0]}/comm").read_text().strip() == "systemd":
                    self.pid = int(children[0])
            if self.pid and self.run("test", "-S", "/run/systemd/private", check=False).returncode == 0 and \
                    self.run("systemctl", "is-system-running", check=False).stdout.strip() in (
                        "running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"systemd did not come up in {timeout:g} s: {self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return "systemd's log ends: " + " | ".join(self.log.read_text().splitlines()[-8:])
        except OSError:
            return ""

    def run(self, *args: str, check: bool = True, timeout: float = 30.0, output: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside, in systemd's namespaces and root. ``output``: a file for its stdout
        and stderr (a container's init keeps them open: a pipe would never end), read back."""
        command = ["nsenter", "-t", str(self.pid), "-m", "-C", "-p", "-r", "-w", "--", *args]
        if output is None:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        else:
            with open(output, "w") as f:
                code = subprocess.run(command, stdout=f, stderr=f, timeout=timeout).returncode
            result = subprocess.CompletedProcess(command, code, output.read_text(), "")
        if check:
            assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result

    def _thaw(self) -> None:
        for top in self.cgroups:
            for d, _, files in os.walk(top):
                for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                    if name in files:
                        try:
                            Path(d, name).write_text(value)
                        except OSError:
                            pass  # gone meanwhile, or the root's (no such knob to write)

    def stop(self) -> None:
        """SIGKILL systemd (its pid namespace goes with it), wait, remove the cgroups."""
        if self.proc is not None:
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._thaw()  # a frozen (paused) container's processes die only once thawed
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None
        for top in self.cgroups:
            # depth first: what systemd made inside (init.scope, system.slice, ...) is empty now
            deadline = time.monotonic() + 10
            while os.path.isdir(top):
                for d, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
                if os.path.isdir(top):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"cgroup {top} could not be removed")
                    time.sleep(0.02)
        self.cgroups = []
