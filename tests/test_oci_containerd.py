"""supervisor-oci under a real containerd: ``ctr run --runc-binary supervisor-oci``.

Each test module run starts a private containerd (its own config, socket, root and state in a temp
dir), imports a busybox image the test builds (an OCI image layout, no registry), and drives it with
``ctr``. containerd 1.6 still puts shim sockets, FIFOs and the runtime's root under /run/containerd:
they are removed at the end, with the cgroups the containers' ``/default/ID`` paths made.

Skipped where containerd is not installed, except in CI (``CI`` set), where that is a failure.
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import make_rootfs, needs_root, on_a_terminal, planner, without_python

pytestmark = needs_root

IMAGE = "docker.io/library/bbx:latest"
NAMESPACE = "default"
RUN_ROOT = Path("/run/containerd")


def supervisor_oci() -> str:
    beside = Path(sys.executable).parent / "supervisor-oci"
    found = str(beside) if beside.exists() else shutil.which("supervisor-oci")
    assert found, "supervisor-oci is not installed (pip install -e .)"
    return found


# -- an image without a registry -------------------------------------------------------------------

def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_image(rootfs: Path, out: Path, name: str = IMAGE, entrypoint: list[str] | None = None) -> Path:
    """An OCI image layout of ``rootfs`` as one layer, tarred for ``ctr image import``."""
    layout = out / f"layout-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    layer = raw.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   **({"Entrypoint": entrypoint} if entrypoint else {"Cmd": ["/bin/sh"]})},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(layout, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **_blob(layout, gzip.compress(layer, mtime=0))}],
    }).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, manifest),
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    archive = out / f"{layout.name}.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    return archive


# -- a private containerd ------------------------------------------------------------------------

class Containerd:
    def __init__(self, base: Path, extra_config: str = "", namespace: str = NAMESPACE) -> None:
        self.base = base
        self.socket = base / "containerd.sock"
        self.pidfd = -1
        self.extra_config = extra_config
        self.namespace = namespace

    def start(self) -> None:
        (self.base / "config.toml").write_text(
            f'version = 2\nroot = "{self.base}/root"\nstate = "{self.base}/state"\n'
            f'[grpc]\n  address = "{self.socket}"\n' + self.extra_config)
        # Started through a shell that exits at once: containerd is nobody's child here, so the
        # per-test check for leftover children of pytest holds while it runs.
        out = subprocess.run(["sh", "-c", f'containerd --config "{self.base}/config.toml" </dev/null '
                                          f'>"{self.base}/containerd.log" 2>&1 & echo $!'],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        self.pidfd = os.pidfd_open(int(out))
        deadline = time.monotonic() + 20
        while self.ctr("version", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError("containerd did not come up:\n" + (self.base / "containerd.log").read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.pidfd < 0:
            return
        signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
        import select

        if not select.select([self.pidfd], [], [], 10)[0]:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            select.select([self.pidfd], [], [], 10)
        os.close(self.pidfd)
        self.pidfd = -1

    def ctr(self, *args: str, check: bool = True, timeout: float = 60, **kw: object
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args],
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                **kw)  # type: ignore[call-overload]
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result  # type: ignore[no-any-return]

    def task_status(self, container_id: str) -> str:
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container_id:
                return fields[-1]
        return ""


def _cgroup_leftovers(name: str) -> list[str]:
    found = []
    for top in Path("/sys/fs/cgroup").iterdir():
        for candidate in (top / name, top / "unified" / name if top.name == "unified" else top / name):
            if candidate.is_dir():
                found.append(str(candidate))
    return sorted(set(found))


def _remove_cgroup_tree(name: str) -> None:
    for d in _cgroup_leftovers(name):
        for sub in sorted(Path(d).rglob("*"), key=lambda p: -len(p.parts)):
            if sub.is_dir():
                sub.rmdir()
        os.rmdir(d)


def require_tools() -> None:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        # CI installs it (see the README's test command): there a missing containerd is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs Debian's containerd (containerd and ctr)")
    if not Path("/usr/bin/busybox").exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs Debian's busybox-static")


@contextlib.contextmanager
def private_containerd(base: Path, images: dict[str, list[str] | None], extra_config: str = "",
                       namespace: str = NAMESPACE) -> Iterator[Containerd]:
    """A containerd of our own with ``images`` (name -> entrypoint) imported; on the way out it is
    stopped and what it left is removed: mounts below ``base``, /run/containerd, the namespace's
    parent cgroups."""
    run_root_existed = RUN_ROOT.exists()
    cgroup_existed = bool(_cgroup_leftovers(namespace))
    rootfs = make_rootfs(base / "image-rootfs")
    archives = [build_image(rootfs, base, name, entrypoint) for name, entrypoint in images.items()]
    daemon = Containerd(base, extra_config, namespace)
    try:
        daemon.start()
        for archive in archives:
            daemon.ctr("image", "import", str(archive))
        yield daemon
    finally:
        daemon.stop()
        for mount in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            target = mount.split()[4]
            if target.startswith(str(base)):
                subprocess.run(["umount", "-l", target], check=False)
        if not run_root_existed:
            shutil.rmtree(RUN_ROOT, ignore_errors=True)
        if not cgroup_existed:
            _remove_cgroup_tree(namespace)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    require_tools()
    with private_containerd(tmp_path_factory.mktemp("containerd"), {IMAGE: None}) as daemon:
        yield daemon


def _shim_root(container_id: str) -> Path:
    return RUN_ROOT / "runc" / NAMESPACE / container_id


def _assert_gone(container_id: str) -> None:
    assert not _shim_root(container_id).exists(), "supervisor-oci's state was left behind"
    assert not any(Path(d).joinpath(container_id).exists() for d in _cgroup_leftovers(NAMESPACE)), \
        "the container's cgroup was left behind"


# -- the tests ---------------------------------------------------------------------------------------

def test_one_shot_output_and_exit_code(containerd: Containerd) -> None:
    result = containerd.ctr("run", "--rm", "--runc-binary", supervisor_oci(), IMAGE, "one",
                            "/bin/sh", "-c", "echo hello from $(cat /proc/self/cgroup | grep -c /default/one); exit 3",
                            check=False)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip().startswith("hello from "), result.stdout
    assert int(result.stdout.split()[-1]) > 0  # in its cgroup /default/one
    _assert_gone("one")


def native_front_end(directory: Path) -> str:
    """supervisor-oci's native front end (``install-fast``), which answers start, state, kill, delete,
    pause, resume and ps itself and hands every other call to the Python implementation."""
    path = directory / "supervisor-oci-native"
    if not path.exists():
        subprocess.run([supervisor_oci(), "install-fast", str(path)], check=True)
    return str(path)


def test_detached_exec_ps_pause_kill_delete(containerd: Containerd) -> None:
    oci = native_front_end(containerd.base)
    containerd.ctr("run", "-d", "--runc-binary", oci, IMAGE, "det", "/bin/sleep", "1000")
    try:
        assert containerd.task_status("det") == "RUNNING"
        pid = int(_shim_root("det").joinpath("state.json").exists() and
                  json.loads(_shim_root("det").joinpath("state.json").read_text())["pid"])
        # the init belongs to the shim (a subreaper), not to a process of ours
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "containerd-shim" in Path(f"/proc/{ppid}/comm").read_text()

        result = containerd.ctr("task", "exec", "--exec-id", "e1", "det", "/bin/sh", "-c",
                                "echo out; echo err >&2; exit 5", check=False)
        assert (result.returncode, result.stdout, result.stderr.strip()[-3:]) == (5, "out\n", "err")

        ps = containerd.ctr("task", "ps", "det").stdout
        assert str(pid) in ps.split()

        containerd.ctr("task", "pause", "det")
        assert containerd.task_status("det") == "PAUSED"
        state = subprocess.run([oci, "--root", str(RUN_ROOT / "runc" / NAMESPACE), "state", "det"],
                               capture_output=True, text=True, check=True).stdout
        assert json.loads(state)["status"] == "paused"
        containerd.ctr("task", "resume", "det")
        assert containerd.task_status("det") == "RUNNING"

        containerd.ctr("task", "kill", "-s", "KILL", "det")
        deadline = time.monotonic() + 10
        while containerd.task_status("det") != "STOPPED":
            assert time.monotonic() < deadline, "the task did not stop"
            time.sleep(0.05)
        containerd.ctr("task", "delete", "det")
    finally:
        containerd.ctr("task", "delete", "-f", "det", check=False)
        containerd.ctr("container", "delete", "det", check=False)
    _assert_gone("det")


def test_the_shims_calls_through_the_planner(containerd: Containerd) -> None:
    """With a planner serving the shim's root, a front end that cannot exec Python runs a container's
    whole life: create through the planner, the rest answered natively. The init is the shim's, its
    output the shim's, and the exit code reaches ctr."""
    oci = without_python(Path(native_front_end(containerd.base)), containerd.base / "no-python")
    with planner(supervisor_oci(), RUN_ROOT / "runc" / NAMESPACE) as served:
        try:
            result = containerd.ctr("run", "--rm", "--runc-binary", str(oci), IMAGE, "viaplanner", "/bin/sh", "-c",
                                    "echo ppid $PPID; cat /proc/1/cgroup | grep -c /default/viaplanner; exit 5",
                                    check=False)
            assert result.returncode == 5, result.stderr
            assert result.stdout.split()[:2] == ["ppid", "0"] and int(result.stdout.split()[2]) > 0, result.stdout
        finally:
            containerd.ctr("container", "delete", "viaplanner", check=False)
    assert len(served) == 1 and " create " in served[0] and served[0].endswith("viaplanner: exit 0"), served
    _assert_gone("viaplanner")


def test_a_failed_start_is_reported_in_runc_wording(containerd: Containerd) -> None:
    result = containerd.ctr("run", "--rm", "--runc-binary", supervisor_oci(), IMAGE, "bad", "/bin/nope",
                            check=False)
    assert result.returncode != 0
    assert "OCI runtime" in result.stderr and "/bin/nope" in result.stderr, result.stderr
    containerd.ctr("container", "delete", "bad", check=False)
    _assert_gone("bad")


def test_terminal(containerd: Containerd) -> None:
    """ctr run -t: the shim's console socket receives the pty master; the workload's stdio is the pty."""
    code, text = on_a_terminal(["ctr", "--address", str(containerd.socket), "--namespace", NAMESPACE, "run", "--rm",
                                "-t", "--runc-binary", supervisor_oci(), IMAGE, "tty", "/bin/sh", "-c",
                                "tty; test -t 0 && test -t 1 && echo both-ttys; exit 6"])
    assert code == 6, text
    assert "/dev/pts/" in text and "both-ttys" in text, text
    containerd.ctr("container", "delete", "tty", check=False)
    _assert_gone("tty")
