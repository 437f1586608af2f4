"""Health checks, dependency conditions and readiness by notification, on real containers."""

import os
import tempfile
from pathlib import Path

import anyio
import pytest

import supervisor
from supervisor.service import HealthCheck, Policy, Service
from supervisor.states import Health, State
from supervisor.supervise import Event, Supervisor

from .conftest import Bundle, needs_root
from .test_supervise import FAST, Lines, collect

pytestmark = needs_root

#: runs until TERM (pid 1 of its namespace needs the trap to stop on it)
SERVE = "trap 'exit 0' TERM; while :; do sleep 0.05; done"


def service(bundle: Bundle, name: str, script: str, **policy: object) -> Service:
    spec = supervisor.ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script))
    return Service(name, spec, Policy(stop_timeout=2, **policy))  # type: ignore[arg-type]


def of(events: list[Event], name: str) -> list[str]:
    return [e.event for e in events if e.container == name]


async def test_a_check_that_passes_makes_it_healthy(bundle: Bundle) -> None:
    events: list[Event] = []
    check = HealthCheck(["CMD-SHELL", "test -f /dev/shm/up && echo fine"], interval=0.05, retries=1,
                        start_period=10)  # failures before the file is there do not count
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        web = await sup.start(service(bundle, "web", "sleep 0.3; touch /dev/shm/up; " + SERVE, healthcheck=check))
        assert web.health == Health.STARTING  # its file is not there yet: the first checks fail
        with anyio.fail_after(10):
            await web.wait_for(State.RUNNING)
            while web.health != Health.HEALTHY:
                await web._changed.wait()
        await sup.stop("web")
    assert of(events, "web") == ["started", "healthy", "exited", "stopped"]  # starting is not announced
    assert web.health is None  # not running: no health


async def test_unhealthy_is_restarted_and_says_why(bundle: Bundle) -> None:
    events: list[Event] = []
    check = HealthCheck(["/bin/sh", "-c", "echo sick as pid $$; exit 1"], interval=0.05, retries=2)
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        web = sup.add(service(bundle, "web", SERVE, healthcheck=check, restart="on-failure", max_restarts=1,
                              **FAST))
        with anyio.fail_after(15):
            await web.wait()
    mine = [e for e in events if e.container == "web"]
    assert [e.event for e in mine] == ["started", "unhealthy", "exited", "restarting", "started", "unhealthy",
                                       "exited", "failed"]
    unhealthy, exited, restarting = mine[1], mine[2], mine[3]
    assert unhealthy.action == "restart" and unhealthy.error is not None
    assert unhealthy.error.startswith("sick as pid ") and unhealthy.error != "sick as pid 1"  # exec'd inside
    assert exited.reason == "unhealthy" and exited.code == 0  # its TERM trap: a clean exit, still a failure
    assert restarting.reason == "unhealthy"
    assert web.restarts == 1 and web.last_error == "gave up after 1 restarts"


async def test_unhealthy_without_restart_keeps_running_and_may_recover(bundle: Bundle) -> None:
    events: list[Event] = []
    # fails while /dev/shm/ok is missing; the workload creates it after a while
    check = HealthCheck(["CMD-SHELL", "test -f /dev/shm/ok"], interval=0.05, retries=1)
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        web = sup.add(service(bundle, "web", "sleep 0.5; touch /dev/shm/ok; " + SERVE, healthcheck=check))
        with anyio.fail_after(10):
            while web.health != Health.HEALTHY:
                await web._changed.wait()
        pid = web.pid
        await sup.stop("web")
    assert of(events, "web") == ["started", "unhealthy", "healthy", "exited", "stopped"]
    assert next(e for e in events if e.event == "unhealthy").action is None
    assert pid is not None and web.restarts == 0


async def test_a_check_that_hangs_times_out(bundle: Bundle) -> None:
    events: list[Event] = []
    check = HealthCheck(["CMD", "/bin/sleep", "10"], interval=0.05, timeout=0.2, retries=1)
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        web = sup.add(service(bundle, "web", SERVE, healthcheck=check))
        with anyio.fail_after(10):
            while web.health != Health.UNHEALTHY:
                await web._changed.wait()
        assert web.container is not None and web.container.stats() is not None
        await sup.stop("web")
    assert next(e for e in events if e.event == "unhealthy").error == "timed out after 0.2s"


def test_compose_test_forms() -> None:
    assert HealthCheck(["CMD", "/bin/true"]).test == ("/bin/true",)
    assert HealthCheck(["CMD-SHELL", "exit 0"]).test == ("/bin/sh", "-c", "exit 0")
    assert HealthCheck("exit 0").test == ("/bin/sh", "-c", "exit 0")
    assert HealthCheck(["/bin/true", "x"]).test == ("/bin/true", "x")
    for bad in (["NONE"], [], ["CMD"], ["CMD-SHELL"], ["CMD-SHELL", "a", "b"]):
        with pytest.raises(ValueError):
            HealthCheck(bad)
    with pytest.raises(ValueError):
        HealthCheck(["CMD", "/bin/true"], interval=0)


async def test_dependency_conditions(bundle: Bundle) -> None:
    events: list[Event] = []
    ready = HealthCheck(["CMD-SHELL", "test -f /dev/shm/up"], interval=0.05, retries=1, start_period=10)
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        sup.add(service(bundle, "db", "sleep 0.3; touch /dev/shm/up; " + SERVE, healthcheck=ready))
        sup.add(service(bundle, "migrate", "sleep 0.2"))
        sup.add(service(bundle, "broken", "exit 4"))
        web = sup.add(service(bundle, "web", SERVE, depends_on=("db", "migrate"),
                              conditions={"db": "healthy", "migrate": "completed"}))
        late = sup.add(service(bundle, "late", SERVE, depends_on=("broken",), conditions={"broken": "completed"}))
        never = sup.add(service(bundle, "never", SERVE, depends_on=("migrate",), conditions={"migrate": "healthy"}))
        with anyio.fail_after(10):
            await web.wait_for(State.RUNNING)
            await late.wait()
            await never.wait()
        await sup.stop_all()
    order = [(e.container, e.event) for e in events]
    started = order.index(("web", "started"))
    assert order.index(("db", "healthy")) < started and order.index(("migrate", "exited")) < started
    assert late.state == State.FAILED and late.last_error == "dependency broken did not complete (exited with code 4)"
    assert never.last_error == "dependency migrate has no health check: it is never healthy"


async def test_a_dependencys_restart_leaves_its_dependents_running(bundle: Bundle) -> None:
    async with Supervisor() as sup:
        db = await sup.start(service(bundle, "db", SERVE, restart="always", **FAST))
        web = await sup.start(service(bundle, "web", SERVE, depends_on=("db",)))
        pid, db_pid = web.pid, db.pid
        assert db.container is not None
        db.container.kill()
        with anyio.fail_after(10):
            while db.restarts == 0 or db.state != State.RUNNING:
                await db._changed.wait()
        assert db.pid != db_pid and web.pid == pid and web.state == State.RUNNING
        await sup.stop_all()


def test_conditions_are_checked() -> None:
    assert Policy(depends_on=("a", "b"), conditions={"a": "healthy", "b": "started"}).conditions == (("a", "healthy"),)
    assert Policy(depends_on=("a",)).condition("a") == "started"
    with pytest.raises(ValueError, match="not in depends_on"):
        Policy(conditions={"a": "healthy"})
    with pytest.raises(ValueError, match="none of started, healthy, completed"):
        Policy(depends_on=("a",), conditions={"a": "ready"})  # type: ignore[dict-item]


#: a TOML literal string: python3 of the host root tells its supervisor it is ready
NOTIFY = ("'''import os, socket, time; time.sleep(0.2); s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
          "s.sendto(b'STATUS=up\\nREADY=1', os.environ['NOTIFY_SOCKET']); print(os.environ['NOTIFY_SOCKET'], "
          "flush=True); time.sleep(30)'''")


async def test_notify_ready_makes_it_healthy(tmp_path: Path) -> None:
    """An inline container on the host root (read-only): python3 of the host sends READY=1."""
    path = tmp_path / "manifest.toml"
    path.write_text(f"""
[containers.app]
args = ["/usr/bin/python3", "-c", {NOTIFY}]
notify = true
user = "nobody"
stop_signal = "KILL"

[containers.client]
args = ["/bin/true"]
depends_on = {{ app = "healthy" }}
""")
    manifest = supervisor.load_manifest(path)
    events: list[Event] = []
    lines = Lines()
    async with anyio.create_task_group() as watch, Supervisor(log_sink=lines) as sup:
        await watch.start(collect, sup, events)
        app = await sup.start(manifest.service("app"))
        client = sup.add(manifest.service("client"))
        assert app.health == Health.STARTING
        with anyio.fail_after(10):
            await client.wait()
        assert app.health == Health.HEALTHY, (app, lines.lines, events)
        await sup.stop("app")
    assert ("app", "stdout", b"/run/notify.sock\n") in lines.lines
    order = [(e.container, e.event) for e in events]
    assert order.index(("app", "healthy")) < order.index(("client", "started"))
    assert client.last_exit is not None and client.last_exit.code == 0
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("supervisor-notify-")]


async def test_a_check_racing_the_end_is_no_failure(bundle: Bundle) -> None:
    """Checks every 10 ms while containers end: a check that cannot start in an ending container
    is neither their failure nor unhealthy news."""
    events: list[Event] = []
    check = HealthCheck(["CMD", "/bin/true"], interval=0.01, retries=1)
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        for i in range(4):
            sup.add(service(bundle, f"short{i}", f"sleep 0.{i + 2}", healthcheck=check))
    for i in range(4):
        assert of(events, f"short{i}") == ["started", "healthy", "exited"]
