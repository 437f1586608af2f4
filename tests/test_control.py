"""The control socket, driven through the CLI against a running ``supervisor run``."""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.control import ControlError, request

from .conftest import needs_root, wait_until

pytestmark = needs_root

CLI = [sys.executable, "-m", "supervisor"]
MANIFEST = """
[containers.web]
args = ["/bin/sh", "-c", "trap 'exit 0' TERM; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"]
hostname = "webhost"
restart = "always"
healthcheck = { test = ["CMD", "/bin/true"], interval = "50ms" }

[containers.job]
args = ["/bin/sh", "-c", "exit 3"]

[containers.talk]
args = ["/bin/sh", "-c", "trap 'exit 0' TERM; echo to out; echo to err >&2; while :; do sleep 0.05; done"]
restart = "on-failure"
backoff_initial = "10ms"
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    # reachable by an unprivileged uid too, for the SO_PEERCRED test: pytest's tmp_path is not
    state = tempfile.mkdtemp(prefix="sv-state-")
    os.chmod(state, 0o755)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(MANIFEST)
    with subprocess.Popen(CLI + ["run", "--state-dir", state, str(manifest)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None
            while not p.stdout.readline().replace(" ", "").startswith("web|tick"):  # names are padded
                pass
            yield state, p
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(20)
    assert not os.path.exists(os.path.join(state, "control.sock"))
    shutil.rmtree(state)


def cli(state: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + [args[0], "--state-dir", state, *args[1:]], capture_output=True, text=True,
                          timeout=30, check=False, **kw)  # type: ignore[call-overload]


def test_ps(running: tuple[str, subprocess.Popen[str]]) -> None:
    state, _ = running

    def rows_now() -> dict[str, Any]:
        return {r["name"]: r for r in json.loads(cli(state, "ps", "--json").stdout)}

    deadline = time.monotonic() + 10
    while rows_now()["web"]["health"] != "healthy":
        assert time.monotonic() < deadline, "web never became healthy"
        time.sleep(0.05)
    rows = rows_now()
    assert rows["job"]["health"] is None
    # the shell and its sleep, and maybe a health check being exec'd into its cgroup (its bootstrap
    # and the check itself)
    assert rows["web"]["state"] == "running" and rows["web"]["pid"] > 0 and rows["web"]["pids"] in (2, 3, 4)
    assert rows["web"]["memory"] > 0 and rows["web"]["cpu_ns"] >= 0
    assert rows["job"]["state"] == "exited" and rows["job"]["last_exit"] == "exited with code 3"
    table = cli(state, "ps").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "HEALTH", "PID", "RESTARTS", "UPTIME", "MEMORY", "PIDS", "CPU",
                                "LAST", "EXIT"]
    assert table[1].startswith("web   running  healthy")


def test_exec(running: tuple[str, subprocess.Popen[str]]) -> None:
    state, _ = running
    result = cli(state, "exec", "web", "--", "/bin/sh", "-c", "hostname; echo $$; read x; echo got $x; exit 5",
                 input="hello\n")
    lines = result.stdout.split("\n")
    assert (result.returncode, lines[0], lines[2]) == (5, "webhost", "got hello")
    assert int(lines[1]) > 1  # in the container's pid namespace, and not its pid 1
    missing = cli(state, "exec", "web", "--", "/bin/nope")
    assert missing.returncode == 127
    assert missing.stderr == 'supervisor: web: exec "/bin/nope": No such file or directory\n'
    ended = cli(state, "exec", "job", "--", "/bin/true")
    assert (ended.returncode, ended.stderr) == (1, "supervisor: job is not running (exited)\n")


def test_logs_stop_start(running: tuple[str, subprocess.Popen[str]]) -> None:
    state, _ = running
    logs = cli(state, "logs", "web").stdout.splitlines()
    assert logs[0] == "tick 0" and all(line.startswith("tick ") for line in logs)
    with subprocess.Popen(CLI + ["logs", "--state-dir", state, "-f", "web"], stdout=subprocess.PIPE, text=True) as f:
        assert f.stdout is not None
        seen = [f.stdout.readline() for _ in range(len(logs) + 3)]
        f.terminate()
    assert seen[-1].startswith("tick ") and int(seen[-1].split()[1]) >= len(logs) + 2  # new lines arrived

    assert cli(state, "stop", "web").returncode == 0
    rows = {r["name"]: r for r in json.loads(cli(state, "ps", "--json").stdout)}
    assert rows["web"]["state"] == "stopped"  # and the supervisor stays, to start it again
    assert cli(state, "start", "web").returncode == 0
    rows = {r["name"]: r for r in json.loads(cli(state, "ps", "--json").stdout)}
    assert rows["web"]["state"] == "running"


def test_restart_kill_events_and_logs_apart(running: tuple[str, subprocess.Popen[str]]) -> None:
    state, _ = running

    def rows() -> dict[str, Any]:
        return {r["name"]: r for r in json.loads(cli(state, "ps", "--json").stdout)}

    logs = cli(state, "logs", "--timestamps", "talk")
    assert logs.stdout.endswith(" to out\n") and logs.stderr.endswith(" to err\n")  # apart, as written
    stamp = logs.stdout.split()[0]
    assert stamp.endswith("Z") and abs(datetime.datetime.fromisoformat(stamp).timestamp() - time.time()) < 60
    assert cli(state, "logs", "talk").stdout == "to out\n"

    with subprocess.Popen(CLI + ["events", "--state-dir", state, "-f"], stdout=subprocess.PIPE, text=True) as follow:
        assert follow.stdout is not None
        pid = rows()["talk"]["pid"]
        killed = cli(state, "kill", "-s", "TERM", "talk")  # its trap exits 0: on-failure does not restart it
        assert killed.returncode == 0, killed.stderr
        seen = []
        while ("talk", "exited") not in seen:
            record = json.loads(follow.stdout.readline())
            seen.append((record["container"], record["event"]))
        follow.terminate()
    assert record["code"] == 0
    assert rows()["talk"]["state"] == "exited"
    bad = cli(state, "kill", "talk")
    assert (bad.returncode, bad.stderr) == (1, "supervisor: talk is not running (exited)\n")
    assert cli(state, "restart", "talk").returncode == 0
    row = rows()["talk"]
    assert row["state"] == "running" and row["pid"] not in (None, pid) and row["uptime"] < 5
    past = [json.loads(line) for line in cli(state, "events").stdout.splitlines()]
    assert [r["event"] for r in past if r["container"] == "talk"] == ["started", "exited", "started"]
    assert cli(state, "kill", "-s", "NOPE", "talk").stderr == "supervisor: bad request: not a signal: 'NOPE'\n"


def test_one_supervisor_per_state_dir(running: tuple[str, subprocess.Popen[str]], tmp_path: Path) -> None:
    state, p = running
    (tmp_path / "other.toml").write_text('[containers.x]\nargs = ["/bin/true"]\n')
    second = subprocess.run(CLI + ["run", "--state-dir", state, str(tmp_path / "other.toml")], capture_output=True,
                            text=True, timeout=30, check=False)
    assert (second.returncode, second.stderr) == (
        2, f"supervisor: another supervisor (pid {p.pid}) is running on {state}\n")


def test_another_uid_is_refused(running: tuple[str, subprocess.Popen[str]]) -> None:
    state, _ = running
    os.chmod(os.path.join(state, "control.sock"), 0o666)  # past the file mode: SO_PEERCRED decides
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the client, as nobody (it cannot exec root's python: it runs in a fork)
        code = 2
        try:
            os.setgid(65534)
            os.setuid(65534)
            list(request(state, {"cmd": "ps"}))
            code = 0
        except ControlError as e:
            os.write(w, str(e).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        said = f.read()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 1
    assert said == "uid 65534 may not control this supervisor"


def test_no_supervisor(tmp_path: Path) -> None:
    result = cli(str(tmp_path), "ps")
    assert (result.returncode, result.stderr) == (1, f"supervisor: no supervisor is running on {tmp_path}\n")


def test_bad_requests_get_an_answer_and_harm_nothing(running: tuple[str, subprocess.Popen[str]]) -> None:
    from supervisor.control import Connection

    state, p = running
    for raw, expected in [(b"[1, 2]\n", "bad request: a request is a JSON object"),
                          (b'{"cmd": "start", "name": "web"}\n', "web is already supervised (running)"),
                          (b'{"cmd": "nope"}\n', 'bad request: "unknown command \'nope\'"')]:
        conn = Connection(state)
        try:
            conn.sock.sendall(raw)
            with pytest.raises(ControlError) as info:
                conn.receive()
            assert str(info.value) == expected
        finally:
            conn.close()
    assert p.poll() is None  # the supervisor and its containers are unharmed
    rows = {r["name"]: r for r in json.loads(cli(state, "ps", "--json").stdout)}
    assert rows["web"]["state"] == "running"


async def test_the_control_server_under_each_event_loop(bundle: Any, tmp_path: Path) -> None:
    """The library's control server, embedded (asyncio and trio): ps, exec with fds passed, logs."""
    import anyio

    import supervisor
    from supervisor.control_server import serve
    from supervisor.service import Policy, Service
    from supervisor.supervise import Supervisor

    spec = supervisor.ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "echo hello; exec sleep 100"))
    state = str(tmp_path)

    def ask(message: dict[str, Any], fds: tuple[int, ...] = ()) -> list[dict[str, Any]]:
        return list(request(state, message, fds))

    r, w = os.pipe()
    try:
        with anyio.fail_after(20):
            async with Supervisor() as sup, anyio.create_task_group() as group:
                await group.start(serve, sup, state)
                await sup.start(Service("box", spec, Policy(stop_timeout=0.1)))
                [ps] = await anyio.to_thread.run_sync(ask, {"cmd": "ps"})
                assert [(c["name"], c["state"]) for c in ps["containers"]] == [("box", "running")]
                done = await anyio.to_thread.run_sync(ask, {"cmd": "exec", "name": "box",
                                                            "args": ["/bin/sh", "-c", "echo inside; exit 4"]},
                                                      (0, w, w))
                assert done == [{"ok": True, "code": 4, "signal": None}]
                assert os.read(r, 100) == b"inside\n"
                await wait_until(lambda: bool(sup.log_book.recent("box")))
                logs = await anyio.to_thread.run_sync(ask, {"cmd": "logs", "name": "box"})
                assert [(a.get("line"), a.get("stream")) for a in logs] == [("hello\n", "stdout"), (None, None)]
                assert logs[0]["time"].endswith("Z") and logs[1] == {"ok": True}
                old = sup.handles["box"].pid
                [again] = await anyio.to_thread.run_sync(ask, {"cmd": "restart", "name": "box"})
                assert again["state"] == "running" and again["pid"] not in (None, old)
                # pid 1 of its namespace, a plain sleep, ignores what it has no handler for; not KILL
                assert await anyio.to_thread.run_sync(ask, {"cmd": "kill", "name": "box", "signal": 9}) == [
                    {"ok": True}]
                assert (await sup.handles["box"].wait()).signal == signal.SIGKILL  # restart "no": it stays ended
                with pytest.raises(ControlError, match="^box is not running \\(exited\\)$"):
                    await anyio.to_thread.run_sync(ask, {"cmd": "kill", "name": "box"})
                events = await anyio.to_thread.run_sync(ask, {"cmd": "events"})
                assert [(a["event"]["container"], a["event"]["event"]) for a in events[:-1]] == [
                    ("box", "started"), ("box", "exited"), ("box", "stopped"), ("box", "started"), ("box", "exited")]
                assert events[-1] == {"ok": True} and events[-2]["event"]["signal"] == signal.SIGKILL
                await sup.stop_all()
                group.cancel_scope.cancel()
    finally:
        os.close(r)
        os.close(w)
