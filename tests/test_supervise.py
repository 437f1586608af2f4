"""The Supervisor with real containers: restart policies, stops, dependencies, events, logs, load."""

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import anyio
from anyio.abc import TaskStatus

import supervisor
from supervisor.logs import PrefixedOutput
from supervisor.service import LogConfig, Policy, Service
from supervisor.states import State
from supervisor.supervise import Event, Supervisor

from .conftest import Bundle, needs_root

pytestmark = needs_root

FAST = dict(backoff_initial=0.02, backoff_max=0.1)


def service(bundle: Bundle, name: str, *args: str, policy: Policy = Policy(), **kw: Any) -> Service:
    spec = supervisor.ContainerSpec.from_bundle(bundle(*args))
    return Service(name, spec, policy, **kw)


class Lines:
    """A log sink that keeps every line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, bytes]] = []
        self._changed = anyio.Event()

    def line(self, container: str, stream: str, data: bytes) -> None:
        self.lines.append((container, stream, data))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, container: str, data: bytes) -> None:
        while (container, "stdout", data) not in self.lines:
            await self._changed.wait()


async def collect(sup: Supervisor, into: list[Event],
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    async with sup.events() as events:
        task_status.started()
        async for e in events:
            into.append(e)


async def test_exit_statuses_and_events(bundle: Bundle) -> None:
    events: list[Event] = []
    async with anyio.create_task_group() as watch, Supervisor() as sup:
        await watch.start(collect, sup, events)
        sup.add(service(bundle, "ok", "/bin/true"))
        sup.add(service(bundle, "three", "/bin/sh", "-c", "exit 3"))
        sup.add(service(bundle, "nope", "/bin/nope"))
    by = {(e.container, e.event): e for e in events}
    assert by["ok", "exited"].code == 0 and by["three", "exited"].code == 3
    assert by["ok", "started"].pid is not None
    assert by["nope", "failed"].error == 'exec "/bin/nope": No such file or directory'
    assert ("nope", "started") not in by
    assert sup.handles["three"].state == State.EXITED and sup.handles["nope"].state == State.FAILED
    line = json_line = by["three", "exited"].to_json()
    assert '"container": "three", "event": "exited"' in line and '"code": 3' in json_line


async def test_on_failure_restarts_then_gives_up(bundle: Bundle) -> None:
    events: list[Event] = []
    async with anyio.create_task_group() as watch:
        async with Supervisor() as sup:
            await watch.start(collect, sup, events)
            sup.add(service(bundle, "flaky", "/bin/sh", "-c", "exit 1",
                            policy=Policy(restart="on-failure", max_restarts=2, **FAST)))
            sup.add(service(bundle, "bad", "/bin/nope", policy=Policy(restart="on-failure", max_restarts=1, **FAST)))
            sup.add(service(bundle, "fine", "/bin/true", policy=Policy(restart="on-failure", **FAST)))
    flaky = [e.event for e in events if e.container == "flaky"]
    assert flaky == ["started", "exited", "restarting", "started", "exited", "restarting", "started", "exited",
                     "failed"]
    assert [e.delay for e in events if e.container == "flaky" and e.event == "restarting"] == [0.02, 0.04]
    assert [e.error for e in events if e.container == "flaky" and e.event == "failed"] == ["gave up after 2 restarts"]
    assert [e.event for e in events if e.container == "bad"] == ["failed", "restarting", "failed"]
    assert [e.event for e in events if e.container == "fine"] == ["started", "exited"]
    assert sup.handles["flaky"].restarts == 2


async def test_always_restarts_until_stopped(bundle: Bundle) -> None:
    async with Supervisor() as sup:
        handle = sup.add(service(bundle, "loop", "/bin/true", policy=Policy(restart="always", **FAST)))
        while handle.restarts < 3:
            await handle.wait_for(State.RESTARTING)
            await handle.wait_for(State.RUNNING, State.EXITED)
        await sup.stop("loop")
    assert handle.state == State.STOPPED


async def test_stop_signal_grace_then_kill(bundle: Bundle) -> None:
    sink = Lines()
    async with Supervisor(log_sink=sink) as sup:
        polite = await sup.start(service(bundle, "polite", "/bin/sh", "-c",
                                         "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"))
        stubborn = await sup.start(service(bundle, "stubborn", "/bin/sleep", "100",
                                           policy=Policy(stop_timeout=0.3)))
        assert polite.state == stubborn.state == State.RUNNING
        await sink.wait_for("polite", b"ready\n")  # its trap is set: a TERM before would be ignored (pid 1)
        began = anyio.current_time()
        with anyio.fail_after(10):
            await sup.stop_all()
        took = anyio.current_time() - began
    assert polite.last_exit is not None and polite.last_exit.code == 7
    assert stubborn.last_exit is not None and stubborn.last_exit.signal == signal.SIGKILL
    assert took >= 0.3  # the stubborn one had its grace period
    assert polite.state == stubborn.state == State.STOPPED


async def test_depends_on_orders_starts_and_stops(bundle: Bundle) -> None:
    events: list[Event] = []
    async with anyio.create_task_group() as watch:
        async with Supervisor() as sup:
            await watch.start(collect, sup, events)
            sup.add(service(bundle, "app", "/bin/sleep", "100", policy=Policy(depends_on=("db",), stop_timeout=0.1)))
            sup.add(service(bundle, "db", "/bin/sleep", "100", policy=Policy(stop_timeout=0.1)))
            sup.add(service(bundle, "migrate", "/bin/true"))
            sup.add(service(bundle, "after", "/bin/true", policy=Policy(depends_on=("migrate",))))
            sup.add(service(bundle, "orphan", "/bin/true", policy=Policy(depends_on=("nowhere",))))
            await sup.handles["app"].wait_for(State.RUNNING)
            await sup.handles["after"].wait()  # else stop_all may come before its start
            await sup.stop_all()
    order = [(e.container, e.event) for e in events]
    assert order.index(("db", "started")) < order.index(("app", "started"))
    assert order.index(("app", "stopped")) < order.index(("db", "stopped"))
    assert ("after", "exited") in order  # a one-shot dependency that exited 0 counts
    assert sup.handles["orphan"].last_error == "dependency nowhere is not running"


async def test_logs_whole_lines_under_load(bundle: Bundle) -> None:
    sink = Lines()
    script = "i=0; while [ $i -lt 2000 ]; do echo \"line $i of $0 abcdefghijklmnopqrstuvwxyz\"; i=$((i+1)); done; " \
             "printf 'no newline at the end'; echo oops >&2"
    async with Supervisor(log_sink=sink) as sup:
        for n in range(4):
            sup.add(Service(f"talk{n}", supervisor.ContainerSpec.from_bundle(bundle("/bin/sh", "-c", script, f"c{n}"))))
    for n in range(4):
        out = [data for c, s, data in sink.lines if c == f"talk{n}" and s == "stdout"]
        assert out[:2000] == [f"line {i} of c{n} abcdefghijklmnopqrstuvwxyz\n".encode() for i in range(2000)]
        assert out[2000:] == [b"no newline at the end\n"]
        assert [d for c, s, d in sink.lines if c == f"talk{n}" and s == "stderr"] == [b"oops\n"]


async def test_prefixed_output_and_rotating_log_file(bundle: Bundle, tmp_path: Path) -> None:
    r, w = os.pipe()
    log = tmp_path / "web.log"
    try:
        with PrefixedOutput(w, color=False) as output:
            async with Supervisor(log_sink=output) as sup:
                sup.add(service(bundle, "web", "/bin/sh", "-c", "for i in 1 2 3 4 5 6; do echo line-$i-xxxxxxxxxx; "
                                "done", log=LogConfig(str(log), max_bytes=40, backups=2)))
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        assert f.read().splitlines() == [f"web | line-{i}-xxxxxxxxxx" for i in range(1, 7)]
    assert log.read_text() == "line-5-xxxxxxxxxx\nline-6-xxxxxxxxxx\n"
    assert Path(f"{log}.1").read_text() == "line-3-xxxxxxxxxx\nline-4-xxxxxxxxxx\n"
    assert Path(f"{log}.2").read_text() == "line-1-xxxxxxxxxx\nline-2-xxxxxxxxxx\n"
    assert not Path(f"{log}.3").exists()


async def test_hundreds_at_once_each_with_its_status(bundle: Bundle) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    spec = supervisor.ContainerSpec.from_bundle(bundle("/bin/sh", "-c", 'exit $((${N} % 7))'))
    async with Supervisor() as sup:
        for i in range(300):
            env = spec.process.env + (f"N={i}",)
            sup.add(Service(f"c{i}", supervisor.spec.attrs.evolve(
                spec, process=supervisor.spec.attrs.evolve(spec.process, env=env))))
    statuses = {name: h.last_exit for name, h in sup.handles.items()}
    assert all(statuses[f"c{i}"] == supervisor.ExitStatus(code=i % 7) for i in range(300)), statuses
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_a_crash_looping_container_does_not_starve_others(bundle: Bundle) -> None:
    async with Supervisor() as sup:
        looping = sup.add(service(bundle, "loop", "/bin/nope",
                                  policy=Policy(restart="always", backoff_initial=0.001, backoff_max=0.001)))
        with anyio.fail_after(20):
            handles = [await sup.start(service(bundle, f"w{i}", "/bin/true")) for i in range(20)]
            for h in handles:
                await h.wait_for(State.EXITED)
        assert looping.restarts > 5
        await sup.stop("loop")
    assert all(h.last_exit == supervisor.ExitStatus(code=0) for h in handles)


async def test_an_exception_kills_every_container(bundle: Bundle) -> None:
    pids = []
    with pytest.raises(BaseExceptionGroup) as info:  # the supervisor's nursery groups what it raises
        async with Supervisor() as sup:
            for i in range(3):
                h = await sup.start(service(bundle, f"s{i}", "/bin/sleep", "100"))
                assert h.pid is not None
                pids.append(h.pid)
            raise KeyError("boom")
    assert info.group_contains(KeyError)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)


async def test_stop_interrupts_a_wait_for_dependencies(bundle: Bundle) -> None:
    async with Supervisor() as sup:
        sup.add(service(bundle, "db", "/bin/nope", policy=Policy(restart="always", backoff_initial=5)))
        app = sup.add(service(bundle, "app", "/bin/true", policy=Policy(depends_on=("db",))))
        await anyio.sleep(0.2)
        assert app.state == State.CREATED  # waiting for db, which never runs
        with anyio.fail_after(5):
            await sup.stop_all()
    assert app.state == State.STOPPED


async def test_start_again_when_a_dependency_is_gone(bundle: Bundle) -> None:
    async with Supervisor() as sup:
        db = sup.add(service(bundle, "db", "/bin/sh", "-c", "exit 1"))
        await db.wait_for(State.EXITED)
        await db._task_done.wait()
        app = await sup.start(service(bundle, "app", "/bin/true", policy=Policy(depends_on=("db",))))
        assert app.state == State.FAILED
        again = await sup.start("app")  # FAILED -> FAILED: its dependency still is not running
        assert again.state == State.FAILED and again.last_error == "dependency db is not running"


async def test_a_stalled_stdout_does_not_stop_supervision(bundle: Bundle) -> None:
    r, w = os.pipe()  # nobody reads it while the containers run
    try:
        output = PrefixedOutput(w, color=False, buffer=256 * 1024)
        noisy = "i=0; while [ $i -lt 40000 ]; do echo \"noise $i ........................................\"; " \
                "i=$((i+1)); done"
        with anyio.fail_after(30):
            async with Supervisor(log_sink=output) as sup:
                sup.add(service(bundle, "noisy", "/bin/sh", "-c", noisy))
                quick = await sup.start(service(bundle, "quick", "/bin/true"))
                await quick.wait_for(State.EXITED)  # supervised all the same
        assert output.dropped > 0  # past its buffer, output is dropped, not waited for
        with os.fdopen(r, "rb") as reader:
            r = -1
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(anyio.to_thread.run_sync, reader.read)
                await anyio.to_thread.run_sync(output.close)
                os.close(w)
                w = -1
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


async def test_a_cancelled_start_can_be_started_again(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while the init waits for its go-ahead: the container is killed, the handle rests in
    STOPPED, and ``start(name)`` works later."""
    from supervisor import container

    scope = anyio.CancelScope()
    host_setup = container.host_setup

    def setup_then_cancel(plan: Any, pid: int) -> None:
        host_setup(plan, pid)
        scope.cancel()

    async with Supervisor() as sup:
        monkeypatch.setattr(container, "host_setup", setup_then_cancel)
        with scope:
            await sup.start(service(bundle, "s", "/bin/sleep", "100", policy=Policy(stop_timeout=0.1)))
        monkeypatch.undo()
        assert scope.cancelled_caught
        handle = sup.handles["s"]
        assert handle.state == State.STOPPED and handle.pid is None
        again = await sup.start("s")
        assert again is handle and handle.state == State.RUNNING
        await sup.stop("s")
    assert handle.state == State.STOPPED


class Broken(Exception):
    pass


class FailingSink(Lines):
    """A log sink that raises on the lines of one container."""

    def line(self, container: str, stream: str, data: bytes) -> None:
        if container == "bad":
            raise Broken("the sink broke")
        super().line(container, stream, data)


@pytest.mark.parametrize("how", ["a bug before it runs", "a log sink that raises", "ENOSPC on its log file"])
async def test_one_containers_failure_stays_its_own(bundle: Bundle, monkeypatch: pytest.MonkeyPatch,
                                                    how: str) -> None:
    events: list[Event] = []
    sink = FailingSink() if "sink" in how else Lines()
    log = LogConfig("/dev/full") if how.startswith("ENOSPC") else LogConfig()  # every write: ENOSPC
    if how == "a bug before it runs":
        from supervisor import supervise

        for_container = supervise.for_container

        def buggy(shared: Any, spec: Any, name: str) -> Any:
            if name == "bad":
                raise Broken("a bug in the planner")
            return for_container(shared, spec, name)

        monkeypatch.setattr(supervise, "for_container", buggy)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as watch, Supervisor(log_sink=sink) as sup:
            await watch.start(collect, sup, events)
            good = await sup.start(service(bundle, "good", "/bin/sh", "-c", "echo up; exec sleep 100",
                                           policy=Policy(stop_timeout=0.1)))
            bad = await sup.start(service(bundle, "bad", "/bin/sh", "-c", "echo hello; exec sleep 100", log=log,
                                          policy=Policy(restart="always", **FAST)))  # type: ignore[arg-type]
            assert await bad.wait() in (None, supervisor.ExitStatus(signal=signal.SIGKILL))
            assert bad.state == State.FAILED and bad.restarts == 0
            await sink.wait_for("good", b"up\n")
            assert good.state == State.RUNNING  # the others run on
            await sup.stop_all()
            watch.cancel_scope.cancel()
    failed = [e for e in events if e.container == "bad" and e.event == "failed"]
    expected = {"a bug before it runs": "Broken: a bug in the planner",
                "a log sink that raises": "Broken: the sink broke",
                "ENOSPC on its log file": "OSError: [Errno 28] No space left on device"}[how]
    assert [e.error for e in failed] == [expected]
    assert good.state == State.STOPPED


async def test_specs_differing_only_in_annotations_get_their_own_plans(bundle: Bundle) -> None:
    """``supervisor.init`` arrives as an annotation, which a spec's equality ignores (OCI keeps them
    out of identity); the typed option it becomes does not, so the plan cache tells them apart."""
    spec = supervisor.ContainerSpec.from_bundle(bundle("/bin/sh", "-c", "read comm < /proc/1/comm; echo $comm"))
    with_init = supervisor.spec.attrs.evolve(spec, annotations={"supervisor.init": "true"})
    assert with_init.init and not spec.init and with_init != spec
    sink = Lines()
    async with Supervisor(log_sink=sink) as sup:
        await (await sup.start(Service("init", with_init))).wait()
        await (await sup.start(Service("plain", spec))).wait()
    said = {c: data for c, _, data in sink.lines}
    assert said["plain"] == b"sh\n"  # the workload is pid 1
    assert said["init"] != b"sh\n"  # the init is


async def test_a_reader_that_falls_behind_is_cut_off(bundle: Bundle) -> None:
    """Event streams are bounded: a reader that does not read loses its stream, not our memory."""
    async with Supervisor() as sup:
        async with sup.events(buffer=2) as events:
            flaky = await sup.start(service(bundle, "flaky", "/bin/sh", "-c", "exit 1",
                                            policy=Policy(restart="on-failure", max_restarts=1, **FAST)))
            await flaky.wait()  # six events: started, exited, restarting, started, exited, failed
            with anyio.fail_after(5):
                got = [e.event async for e in events]
    assert got == ["started", "exited"]


async def test_a_plan_made_to_validate_is_the_one_started(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Supervisor.plan`` (what ``supervisor run`` validates a manifest with) plans as the start
    will, with the supervisor's host facts, and hands the plan over: the start plans nothing."""
    from supervisor import supervise

    sup = Supervisor()  # made outside the loop's context, as the CLI does
    svc = service(bundle, "once", "/bin/true")
    made = sup.plan(svc)
    assert sup.host.euid == os.geteuid()

    def plan_again(*args: Any) -> Any:
        raise AssertionError("planned twice")

    monkeypatch.setattr(supervise, "plan", plan_again)
    async with sup:
        handle = await sup.start(svc)
        assert await handle.wait() == supervisor.ExitStatus(code=0)
    assert list(sup._plans.values()) == [made]


async def test_a_log_file_that_blocks_does_not_stop_supervision(bundle: Bundle, tmp_path: Path) -> None:
    """Log files are written off the event loop: one whose open or write blocks (a FIFO nobody
    reads, a stalled disk) holds up its own container's task only."""
    import threading

    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    reader: list[int] = []

    def open_reader() -> None:  # a watchdog: whatever happens, the writer gets its reader in the end
        reader.append(os.open(fifo, os.O_RDONLY))

    watchdog = threading.Timer(8.0, open_reader)
    watchdog.start()
    try:
        async with Supervisor() as sup:
            stuck = await sup.start(service(bundle, "stuck", "/bin/sh", "-c", "echo one", log=LogConfig(str(fifo))))
            quick = await sup.start(service(bundle, "quick", "/bin/true"))
            assert await quick.wait() == supervisor.ExitStatus(code=0)
            assert not reader, "the loop waited for the log file"
            assert not stuck._task_done.is_set()  # its writer still waits for a reader
            watchdog.cancel()
            await anyio.to_thread.run_sync(open_reader)
            assert await stuck.wait() == supervisor.ExitStatus(code=0)
        assert os.read(reader[0], 100) == b"one\n"
    finally:
        watchdog.cancel()
        watchdog.join()
        for fd in reader:
            os.close(fd)
