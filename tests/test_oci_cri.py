"""A Kubernetes pod's life through supervisor-oci: containerd's CRI plugin driven over gRPC, as the
kubelet drives it, with a runtime handler whose BinaryName is ours.

No kubelet here (Debian has none): the test is the kubelet, through ``cri_api``'s generated stubs.
The pod uses the host's network (no CNI); the images are the test's own, the pause image one that
sleeps. Skipped like the ctr tests where containerd is missing (a failure in CI).
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import needs_root
from .test_oci_containerd import IMAGE, Containerd, _cgroup_leftovers, native_front_end, private_containerd, \
    require_tools

pytestmark = needs_root

PAUSE = "registry.k8s.io/pause:3.6"
CRI_NAMESPACE = "k8s.io"


def _config(oci: str) -> str:
    plugin = 'plugins."io.containerd.grpc.v1.cri"'
    return (f'[{plugin}]\n  restrict_oom_score_adj = true\n  sandbox_image = "{PAUSE}"\n'
            f'[{plugin}.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
            f'[{plugin}.containerd.runtimes.supervisor]\n  runtime_type = "io.containerd.runc.v2"\n'
            f'[{plugin}.containerd.runtimes.supervisor.options]\n  BinaryName = "{oci}"\n')


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    require_tools()
    try:
        import cri_api  # noqa: F401
    except ImportError:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs container-runtime-interface-api (pip)")
    images = {IMAGE: None, PAUSE: ["/bin/sleep", "2147483647"]}
    base = tmp_path_factory.mktemp("cri")
    # the native front end, as a node would be set up (the ctr tests run the Python one too)
    with private_containerd(base, images, _config(native_front_end(base)), CRI_NAMESPACE) as daemon:
        yield daemon


def test_pod_lifecycle(cri: Containerd, tmp_path: Path) -> None:
    """The client runs in a process of its own: gRPC keeps descriptors of its own (polling, wakeups)
    that it closes when it likes, which the leak check would take for ours."""
    logs = tmp_path / "logs"
    logs.mkdir()
    client = "import sys; from tests.test_oci_cri import pod_life; pod_life(*sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", client, str(cri.socket), str(cri.base), str(logs)],
                            cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def pod_life(socket: str, base: str, logs_dir: str) -> None:
    """A pod's life over CRI, from the client's side (run by ``test_pod_lifecycle`` in a process of its own)."""
    import grpc
    from cri_api.v1 import api_pb2 as pb
    from cri_api.v1 import api_pb2_grpc

    logs = Path(logs_dir)
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        rt = api_pb2_grpc.RuntimeServiceStub(channel)
        deadline = time.monotonic() + 20
        while True:  # the CRI plugin comes up after the daemon answers ctr
            try:
                rt.Version(pb.VersionRequest(), timeout=5)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, (Path(base) / "containerd.log").read_text()[-3000:]
                time.sleep(0.2)
        pod = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="pod", namespace="default", uid="uid-1", attempt=0),
            log_directory=str(logs),
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE))))
        sandbox = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod, runtime_handler="supervisor"),
                                   timeout=60).pod_sandbox_id
        try:
            _container_life(rt, pb, pod, sandbox, logs)
        finally:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
    assert not any(Path(d, sandbox).exists() for d in _cgroup_leftovers(CRI_NAMESPACE))


def _container_life(r: Any, p: Any, pod: Any, sandbox: str, logs: Path) -> None:
    """A container of the pod with memory and CPU limits: start, status, ExecSync, an update of its
    limits, stats, a stop its TERM trap answers with 0, its CRI log, removal."""
    config = p.ContainerConfig(
        metadata=p.ContainerMetadata(name="app", attempt=0),
        image=p.ImageSpec(image=IMAGE),
        command=["/bin/sh", "-c", "trap 'exit 0' TERM; echo hello-cri; while :; do sleep 0.1; done"],
        log_path="app.log",
        linux=p.LinuxContainerConfig(resources=p.LinuxContainerResources(
            memory_limit_in_bytes=64 << 20, cpu_shares=512, cpu_quota=50000, cpu_period=100000)))
    cid = r.CreateContainer(p.CreateContainerRequest(pod_sandbox_id=sandbox, config=config, sandbox_config=pod),
                            timeout=60).container_id
    try:
        r.StartContainer(p.StartContainerRequest(container_id=cid), timeout=60)
        status = r.ContainerStatus(p.ContainerStatusRequest(container_id=cid), timeout=10).status
        assert status.state == p.CONTAINER_RUNNING

        result = r.ExecSync(p.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
                                              timeout=20), timeout=30)
        assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 3)

        memory = next(Path(d, cid) for d in _cgroup_leftovers(CRI_NAMESPACE) if Path(d, cid, "memory.limit_in_bytes")
                      .exists() or Path(d, cid, "memory.max").exists())
        limit = memory / ("memory.limit_in_bytes" if (memory / "memory.limit_in_bytes").exists() else "memory.max")
        assert limit.read_text().strip() == str(64 << 20)
        r.UpdateContainerResources(p.UpdateContainerResourcesRequest(
            container_id=cid, linux=p.LinuxContainerResources(memory_limit_in_bytes=128 << 20, cpu_shares=256,
                                                              cpu_quota=50000, cpu_period=100000)), timeout=30)
        assert limit.read_text().strip() == str(128 << 20)

        stats = r.ContainerStats(p.ContainerStatsRequest(container_id=cid), timeout=10).stats
        assert stats.memory.working_set_bytes.value > 0

        r.StopContainer(p.StopContainerRequest(container_id=cid, timeout=10), timeout=30)
        status = r.ContainerStatus(p.ContainerStatusRequest(container_id=cid), timeout=10).status
        assert (status.state, status.exit_code) == (p.CONTAINER_EXITED, 0)
        log = (logs / "app.log").read_text()
        assert " stdout F hello-cri" in log, log
    finally:
        r.RemoveContainer(p.RemoveContainerRequest(container_id=cid), timeout=30)
