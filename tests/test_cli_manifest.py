"""``supervisor run MANIFEST``: output, events, exit codes, signals, and the supervisor's own death."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import container_inits, needs_root

pytestmark = needs_root

CLI = [sys.executable, "-m", "supervisor", "run"]


def sv(tmp_path: Path, state: str = "state") -> list[str]:
    """``supervisor run`` with a state directory of the test's own."""
    return CLI + ["--state-dir", str(tmp_path / state)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return path


def test_runs_a_manifest_to_the_end(tmp_path: Path) -> None:
    manifest = write(tmp_path, """
[containers.hello]
args = ["/bin/sh", "-c", "echo hello from $(hostname); echo to stderr >&2"]
hostname = "hi"

[containers.three]
args = ["/bin/sh", "-c", "exit 3"]
""")
    events = tmp_path / "events.jsonl"
    result = subprocess.run(sv(tmp_path) + [str(manifest), "--events", str(events)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1, result.stderr  # one container ended with a non-zero code
    lines = result.stdout.splitlines()
    assert "hello | hello from hi" in lines and "hello | to stderr" in lines
    assert "supervisor: three: exited with code 3" in result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert {(r["container"], r["event"]) for r in records} == {
        ("hello", "started"), ("hello", "exited"), ("three", "started"), ("three", "exited")}
    for r in records:
        assert {"time", "container", "event"} <= r.keys()
        assert ("pid" in r) == (r["event"] == "started")
    assert next(r for r in records if r["container"] == "three" and r["event"] == "exited")["code"] == 3


def test_all_zero_exits_0(tmp_path: Path) -> None:
    manifest = write(tmp_path, """
[defaults]
restart = "no"

[containers.a]
args = ["/bin/true"]

[containers.b]
args = ["/bin/true"]
replicas = 3
""")
    result = subprocess.run(sv(tmp_path) + [str(manifest)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_bad_manifest_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    manifest = write(tmp_path, """
[containers.web]
args = ["/bin/true"]
restart = "sometimes"
""")
    result = subprocess.run(sv(tmp_path) + [str(manifest)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"supervisor: {manifest}: line 4: containers.web.restart")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_sigint_stops_gracefully_and_twice_kills(tmp_path: Path) -> None:
    manifest = write(tmp_path, """
[containers.polite]
args = ["/bin/sh", "-c", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.05; done"]
restart = "always"

[containers.stubborn]
args = ["/bin/sleep", "100"]
stop_timeout = 60
""")
    with subprocess.Popen(sv(tmp_path) + [str(manifest)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as p:
        assert p.stdout is not None
        assert p.stdout.readline() == "polite | up\n"
        p.send_signal(signal.SIGINT)
        assert p.stdout.readline() == "polite | bye\n"
        time.sleep(0.3)
        assert p.poll() is None  # stubborn ignores SIGTERM and has 60 s of grace
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0  # stopped on request is not a failure
        err = p.stderr.read() if p.stderr else ""
    assert "stopping every container" in err and "killing every container" in err


def test_supervisor_killed_takes_its_containers_along(tmp_path: Path) -> None:
    manifest = write(tmp_path, """
[containers.sleeper]
args = ["/bin/sleep", "100"]
replicas = 3
""")
    with subprocess.Popen(sv(tmp_path) + [str(manifest)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as p:
        deadline = time.monotonic() + 10
        while len(inits := container_inits(p.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(inits) == 3
        p.kill()
        p.wait(10)
    deadline = time.monotonic() + 1.0
    alive = inits
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"}
        time.sleep(0.01)
    assert not alive
    # nobody was left to remove their cgroups: the next supervisor sweeps them away
    stale = list(Path("/sys/fs/cgroup").glob(f"*/supervisor-{p.pid}"))
    assert stale
    one_shot = write(tmp_path, '[containers.x]\nargs = ["/bin/true"]\n')
    subprocess.run(sv(tmp_path, "state2") + [str(one_shot)], capture_output=True, timeout=30, check=True)
    assert not any(s.exists() for s in stale)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_the_example_manifest_runs_and_stops(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "manifest.toml"
    events = tmp_path / "events.jsonl"
    with subprocess.Popen(sv(tmp_path) + [str(example), "--events", str(events)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        seen: set[str] = set()
        while not {"setup", "clock", "worker-0", "worker-1", "flaky"} <= seen:
            seen.add(p.stdout.readline().split(" ", 1)[0])
        p.send_signal(signal.SIGINT)
        rest = p.stdout.read()
        code = p.wait(20)
    assert "clock    | clock: stopping" in rest
    records = [json.loads(line) for line in events.read_text().splitlines()]
    # flaky either gave up before the SIGINT (a failure: exit 1) or was stopped while it waited to
    # restart (stopped on request: exit 0)
    gave_up = any(r["container"] == "flaky" and r.get("error") == "gave up after 2 restarts" for r in records)
    assert code == (1 if gave_up else 0)
    stopped = [r["container"] for r in records if r["event"] == "stopped"]
    assert stopped.index("worker-0") < stopped.index("clock") and stopped.index("worker-1") < stopped.index("clock")


def test_health_checks_from_a_manifest(tmp_path: Path) -> None:
    manifest = write(tmp_path, """
[containers.sick]
args = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]
restart = "on-failure"
max_restarts = 1
stop_timeout = 2
healthcheck = { test = ["CMD-SHELL", "echo no database; exit 1"], interval = "50ms", retries = 2 }

[containers.fine]
args = ["/bin/sh", "-c", "sleep 0.5"]
healthcheck = { test = ["CMD", "/bin/true"], interval = 0.05, timeout = "1s", start_period = "1m" }
""")
    events = tmp_path / "events.jsonl"
    result = subprocess.run(sv(tmp_path) + [str(manifest), "--events", str(events)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    sick = [r for r in records if r["container"] == "sick"]
    assert [r["event"] for r in sick] == ["started", "unhealthy", "exited", "restarting", "started", "unhealthy",
                                          "exited", "failed"]
    assert sick[1]["action"] == "restart" and sick[1]["error"] == "no database"
    assert sick[2]["reason"] == sick[3]["reason"] == "unhealthy"
    assert "supervisor: sick: unhealthy: restarting it (no database)" in result.stderr
    assert [r["event"] for r in records if r["container"] == "fine"] == ["started", "healthy", "exited"]


def test_dependency_conditions_from_a_manifest(tmp_path: Path) -> None:
    manifest = write(tmp_path, """
[containers.db]
args = ["/bin/sh", "-c", "sleep 0.3; touch /run/up; sleep 0.5"]
healthcheck = { test = ["CMD-SHELL", "test -f /run/up"], interval = "50ms", start_period = "10s" }

[containers.migrate]
args = ["/bin/sh", "-c", "sleep 0.1"]

[containers.web]
args = ["/bin/echo", "web up"]
depends_on = { db = "healthy", migrate = "completed" }
""")
    events = tmp_path / "events.jsonl"
    result = subprocess.run(sv(tmp_path) + [str(manifest), "--events", str(events)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "web | web up" in result.stdout.splitlines()
    order = [(r["container"], r["event"]) for r in map(json.loads, events.read_text().splitlines())]
    started = order.index(("web", "started"))
    assert order.index(("db", "healthy")) < started and order.index(("migrate", "exited")) < started


def test_run_tells_systemd_ready_and_stopping(tmp_path: Path) -> None:
    """Under Type=notify: the test is systemd, with a datagram socket of its own."""
    import socket

    from .test_health import NOTIFY

    manifest = write(tmp_path, f"""
[containers.app]
args = ["/usr/bin/python3", "-c", {NOTIFY}]
notify = true
stop_signal = "KILL"

[containers.web]
args = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]
depends_on = {{ app = "healthy" }}
""")
    address = str(tmp_path / "systemd-notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.settimeout(15)
        events = tmp_path / "events.jsonl"
        with subprocess.Popen(sv(tmp_path) + [str(manifest), "--events", str(events)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "NOTIFY_SOCKET": address}) as p:
            try:
                assert systemd.recv(4096) == b"READY=1"
                ps = subprocess.run([sys.executable, "-m", "supervisor", "ps", "--json", "--state-dir",
                                     str(tmp_path / "state")], capture_output=True, text=True, timeout=10, check=True)
                assert {r["name"]: (r["state"], r["health"]) for r in json.loads(ps.stdout)} == {
                    "app": ("running", "healthy"), "web": ("running", None)}
                ready = time.monotonic()
                # every container had started by then (the events file is written a moment later)
                while '"web", "event": "started"' not in events.read_text():
                    assert time.monotonic() < ready + 5
                    time.sleep(0.01)
                order = [(r["container"], r["event"]) for r in map(json.loads, events.read_text().splitlines())]
                assert order.index(("app", "healthy")) < order.index(("web", "started"))
                p.send_signal(signal.SIGTERM)
                assert systemd.recv(4096) == b"STOPPING=1"
            finally:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                p.wait(20)
    assert p.returncode == 0, p.stderr


def test_env_file_and_backoff_from_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text('# compose format\nGREETING="hello there"\nexport WHO=env_file\n')
    manifest = write(tmp_path, """
[containers.app]
args = ["/bin/sh", "-c", "echo $GREETING from $WHO; exit 1"]
env_file = "app.env"
restart = "on-failure"
max_restarts = 2
backoff_initial = "20ms"
backoff_max = 0.03
""")
    events = tmp_path / "events.jsonl"
    result = subprocess.run(sv(tmp_path) + [str(manifest), "--events", str(events)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines().count("app | hello there from env_file") == 3
    delays = [r["delay"] for r in map(json.loads, events.read_text().splitlines()) if r["event"] == "restarting"]
    assert delays == [0.02, 0.03]
