"""The ``Supervisor``: many containers in one task group, one task each (asyncio or trio, through anyio).

Theory of operation. ``Supervisor`` is an async context manager around a task group. Every container
is a ``Service`` run by one task (``_supervise``) that loops: wait for the dependencies to run,
start (``open_container``), pump its stdout and stderr, wait on its pidfd, decide by the restart
policy, sleep the backoff, again. The only shared state is each container's ``Handle``, and every
change of its state goes through ``_transition``, which checks it against ``states.TRANSITIONS`` and
emits the event. Stopping is a request (an event the task watches): the task sends the stop signal,
waits the grace period and kills. Nothing polls (but a failed health check, which looks for a
quarter second whether its container is ending: see ``_ending``); nothing calls ``waitpid(-1)``.

While a container runs, its task also runs its health check (``_check_health``: an exec every
interval) and reads its notify socket (``_read_notifications``), in a task group that ends with the
run; health changes go through ``_set_health``, as lifecycle changes go through ``_transition``. An
unhealthy container to be restarted is stopped by the same path as a stop request (its wait is
cancelled, ``_wait_or_stop`` sends the signal), but its task goes on to the restart policy.
``reload`` replaces the set of services: it stops and forgets what went, and restarts what changed
on the same handle, so a handle outlives a change of its config.

Leaving the ``async with`` block waits for every task, like a task group; call ``stop_all()`` first to
end containers that would run forever. An exception or cancellation inside the block stops every
container with SIGKILL before it propagates, so no container outlives its supervisor.
"""

import collections
import contextlib
import datetime
import errno
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any

import attrs
import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _aio
from ._launch import ExitStatus, raise_fd_limit
from .cgroups import CgroupDriver
from .container import Container, open_container
from .errors import BootstrapError, SpecError
from .host import Host
from .logs import FileWriter, LogBook, LogSink, RotatingFile, pump_lines
from .plan import Plan, for_container, plan
from .service import HealthCheck, Service
from .network import Attachment, Networks
from .notify import CONTAINER_PATH, NotifySockets, parse
from .spec import ContainerSpec, Mount, Namespace
from .states import EVENT_OF, TERMINAL, Health, State, check_transition

__all__ = ["Changes", "Event", "Handle", "Supervisor"]


@attrs.frozen
class Changes:
    """What a reload does, by name: ``started`` (new), ``restarted`` (their config changed),
    ``stopped`` (gone from the new set), ``unchanged`` (left running, untouched)."""

    started: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [f"{len(names)} {what} ({', '.join(names)})" for what, names in (
            ("started", self.started), ("restarted", self.restarted), ("stopped", self.stopped)) if names]
        return ", ".join(parts + [f"{len(self.unchanged)} unchanged"])


@attrs.frozen
class Event:
    """One announced state change; ``to_json`` gives the ``--events`` line."""

    time: float
    container: str
    event: str
    pid: int | None = None
    code: int | None = None
    signal: int | None = None
    error: str | None = None
    delay: float | None = None
    oom: bool | None = None
    #: why it happened, when not by itself: ``"unhealthy"`` on the exit and the restart that a
    #: failed health check caused
    reason: str | None = None
    #: what follows: ``"restart"`` on an ``unhealthy`` event when the restart policy restarts it
    action: str | None = None

    def to_json(self) -> str:
        stamp = datetime.datetime.fromtimestamp(self.time, datetime.UTC)
        record: dict[str, Any] = {"time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                                  "container": self.container, "event": self.event}
        for key in ("pid", "code", "signal", "error", "delay", "oom", "reason", "action"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        return json.dumps(record)


class Handle:
    """What the supervisor knows about one container. Made by the ``Supervisor`` only."""

    def __init__(self, service: Service, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("handles are made by Supervisor.add() and Supervisor.start()")
        self.service = service
        self.state = State.CREATED
        self.pid: int | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self.last_exit: ExitStatus | None = None
        self.last_error: str | None = None
        self.container: Container | None = None
        #: beside the lifecycle, for a running container with a check or ``notify``; None otherwise
        self.health: Health | None = None
        #: the last failed check's output (its tail), or why it failed
        self.health_output: str | None = None
        self._unhealthy = False  # this run is being ended because its health check failed
        self._changed = anyio.Event()  # set and replaced on every transition
        self._stop = anyio.Event()
        self._task_done = anyio.Event()
        self._task_done.set()
        self._wait_scope: anyio.CancelScope | None = None  # the wait a stop request interrupts
        #: stopped on request and not started again: a foreground ``supervisor run`` waits for it
        self.held = False

    def _request_stop(self) -> None:
        self._stop.set()
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    @property
    def name(self) -> str:
        return self.service.name

    async def wait(self) -> ExitStatus | None:
        """Wait until the container's task has ended (nothing more will happen to it unless it is
        started again) and return its last exit status: None when it never ran."""
        await self._task_done.wait()
        return self.last_exit

    async def wait_for(self, *states: State) -> State:
        """Wait until the container is in one of ``states``."""
        while self.state not in states:
            await self._changed.wait()
        return self.state

    def __repr__(self) -> str:
        return f"<Handle {self.name} {self.state.value} pid={self.pid} restarts={self.restarts}>"


_TOKEN = object()


class Supervisor:
    """Run containers concurrently, restart them by policy, stop them gracefully.

    ``log_sink`` receives every line every container writes (``PrefixedOutput`` prints them with
    the container's name); without one, output is dropped unless a service has a log file.
    """

    def __init__(self, *, log_sink: LogSink | None = None, move_into_leaf: bool = False) -> None:
        self.log_sink = log_sink
        #: this supervisor's cgroups (``move_into_leaf``: may this process be moved into a leaf of
        #: its own cgroup, see ``open_container``)
        #: what planning needs to know about this host, probed once (see ``host.py``)
        self.host = Host.probe()
        self.cgroups = CgroupDriver(move_into_leaf=move_into_leaf, hierarchies=self.host.cgroups)
        #: the last lines of each container, for ``logs``
        self.log_book = LogBook()
        self.handles: dict[str, Handle] = {}
        self._tasks: TaskGroup | None = None
        self._stack = AsyncExitStack()
        self._subscribers: list[MemoryObjectSendStream[Event]] = []
        self._recent: collections.deque[Event] = collections.deque(maxlen=1000)  # for recent_events()
        self._log_files: dict[str, RotatingFile] = {}
        self._log_writers: dict[str, FileWriter] = {}  # of the runs under way
        self._changed = anyio.Event()  # set and replaced on every change of any container
        self._devnull = -1  # every container's stdin
        self.networks = Networks()
        self._notify = NotifySockets()
        #: a spec is planned once, when a container of it first starts; its restarts and the other
        #: containers of the spec (replicas) take that plan with their own cgroup (``for_container``)
        self._plans: dict[ContainerSpec, Plan] = {}
        self._planning = anyio.Lock()

    # -- lifetime ----------------------------------------------------------------------------

    async def __aenter__(self) -> "Supervisor":
        raise_fd_limit()
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._tasks = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> bool | None:
        if kind is not None:
            self.kill_all()
        try:
            return await self._stack.__aexit__(kind, value, traceback)
        finally:
            for f in self._log_files.values():
                f.close()
            self._notify.close()
            os.close(self._devnull)
            for channel in self._subscribers:
                channel.close()

    # -- containers --------------------------------------------------------------------------

    def add(self, service: Service) -> Handle:
        """Start supervising ``service`` in the background (after its dependencies run)."""
        handle = self._register(service)
        assert self._tasks is not None, "use Supervisor as an async context manager"
        handle._task_done = anyio.Event()
        self._tasks.start_soon(self._supervise, handle, name=f"container {service.name}")
        return handle

    async def start(self, service: Service | str) -> Handle:
        """Start a container (a new service, or a stopped or ended one by name) and return once its
        first start attempt is over: look at ``handle.state`` for how it went."""
        if isinstance(service, str):
            handle = self.handles[service]
            if not handle._task_done.is_set():
                raise RuntimeError(f"{service} is already supervised ({handle.state.value})")
            handle._stop = anyio.Event()
            handle.held = False
        else:
            handle = self._register(service)
        assert self._tasks is not None, "use Supervisor as an async context manager"
        handle._task_done = anyio.Event()
        result: Handle = await self._tasks.start(self._supervise, handle, name=f"container {handle.name}")
        return result

    async def stop(self, name: str) -> None:
        """Stop one container: its stop signal, the grace period, then SIGKILL. Waits till it ended."""
        handle = self.handles[name]
        handle.held = True
        handle._request_stop()
        await handle._task_done.wait()

    async def restart(self, name: str) -> Handle:
        """Stop a container (if it runs) and start it again; returns once the new start is over."""
        await self.stop(name)
        return await self.start(name)

    def kill(self, name: str, signum: int = 9) -> None:
        """Send ``signum`` to a running container's init. Only a signal: what follows its end is
        up to the restart policy, as for any other end (``stop`` is the way to end it for good).
        ``ProcessLookupError`` when it does not run."""
        handle = self.handles[name]
        if handle.container is None or handle.state not in (State.RUNNING, State.STOPPING):
            raise ProcessLookupError(f"{name} is not running ({handle.state.value})")
        handle.container.send_signal(signum)

    def recent_events(self) -> list[Event]:
        """The last thousand events, oldest first (``supervisor events`` starts with them)."""
        return list(self._recent)

    async def stop_all(self) -> None:
        """Stop every container, dependents before what they depend on."""
        for layer in self._stop_order():
            async with anyio.create_task_group() as group:
                for name in layer:
                    group.start_soon(self.stop, name)

    def changes(self, services: Sequence[Service]) -> Changes:
        """What ``reload(services)`` would do; nothing is done. A service is unchanged when it
        equals the one supervised: spec (annotations included), policy, logs and network."""
        new = {s.name: s for s in services}
        if len(new) != len(services):
            raise ValueError("two services with the same name")

        def same(a: Service, b: Service) -> bool:
            return a == b and a.spec.annotations == b.spec.annotations

        return Changes(
            started=tuple(n for n in new if n not in self.handles),
            restarted=tuple(n for n in new if n in self.handles and not same(self.handles[n].service, new[n])),
            stopped=tuple(n for n in self.handles if n not in new),
            unchanged=tuple(n for n in new if n in self.handles and same(self.handles[n].service, new[n])))

    async def reload(self, services: Sequence[Service]) -> Changes:
        """Make ``services`` the supervised set, touching only what changed: new ones start,
        changed ones are stopped and started with their new config, those not in ``services``
        are stopped and forgotten, unchanged ones keep running (same pid, same restart count).
        Stops go dependents first; starts wait for their dependencies (``depends_on`` and its
        conditions), so they happen in dependency order. Every new or changed service is planned
        first: a ``SpecError`` (or ``BootstrapError``) is raised before anything changed.

        A container that depends on a restarted one is not restarted with it (see
        ``_wait_for_dependencies``): it keeps running."""
        changes = self.changes(services)
        new = {s.name: s for s in services}
        for name in changes.started + changes.restarted:
            await anyio.to_thread.run_sync(self.plan, new[name])
        going = set(changes.stopped) | set(changes.restarted)
        for layer in self._stop_order():
            async with anyio.create_task_group() as group:
                for name in layer:
                    if name in going:
                        group.start_soon(self.stop, name)
        for name in changes.stopped:
            del self.handles[name]
            log_file = self._log_files.pop(name, None)
            if log_file is not None:
                log_file.close()
            self._notify.close(name)
        assert self._tasks is not None, "use Supervisor as an async context manager"
        # Every task's handle is ready before any task runs: a new container that depends on a
        # restarted one must find it on its way up, not ended.
        handles = []
        for name in changes.restarted:
            handle = self.handles[name]
            handle.service = new[name]
            handle._stop = anyio.Event()
            handle.held = False
            handle.restarts = 0
            handle.last_error = None
            handle._task_done = anyio.Event()
            log_file = self._log_files.pop(name, None)
            if log_file is not None:
                log_file.close()
            log = handle.service.log
            if log.file is not None:
                self._log_files[name] = RotatingFile(log.file, log.max_bytes, log.backups)
            if not handle.service.policy.notify:
                self._notify.close(name)
            handles.append(handle)
        for name in changes.started:
            handle = self._register(new[name])
            handle._task_done = anyio.Event()
            handles.append(handle)
        for handle in handles:
            self._tasks.start_soon(self._supervise, handle, name=f"container {handle.name}")
        self.wake()
        return changes

    def kill_all(self) -> None:
        """SIGKILL every container at once (a second Ctrl-C); their tasks then end."""
        for handle in self.handles.values():
            handle._request_stop()
            if handle.container is not None:
                handle.container.kill()

    def wake(self) -> None:
        """Wake whoever waits in ``wait_for_change``."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for_change(self) -> None:
        """Return after the next change of any container (a transition, or a task's end)."""
        await self._changed.wait()

    @asynccontextmanager
    async def events(self, buffer: int = 10_000) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        """A stream of every event from now on: ``async with sup.events() as events: async for e in
        events: ...``.

        Bounded: a reader that falls ``buffer`` events behind is cut off (its stream ends after the
        events it has) instead of holding the supervisor's memory without end; the containers never
        wait for a reader."""
        send: MemoryObjectSendStream[Event]
        receive: MemoryObjectReceiveStream[Event]
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        self._subscribers.append(send)
        try:
            async with receive:
                yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()

    # -- internals ---------------------------------------------------------------------------

    def _register(self, service: Service) -> Handle:
        if service.name in self.handles:
            raise ValueError(f"a container named {service.name} exists already")
        handle = Handle(service, _TOKEN)
        self.handles[service.name] = handle
        if service.log.file is not None:
            self._log_files[service.name] = RotatingFile(service.log.file, service.log.max_bytes,
                                                         service.log.backups)
        return handle

    def _transition(self, handle: Handle, new: State, **details: Any) -> None:
        """Every state change goes through here: checked, recorded, announced."""
        check_transition(handle.state, new)
        handle.state = new
        self._changed_now(handle)
        name = EVENT_OF.get(new)
        if name is not None:
            self._announce(handle, name, **details)

    def _set_health(self, handle: Handle, health: Health | None, **details: Any) -> None:
        """Every change of health goes through here; healthy and unhealthy are announced."""
        if health == handle.health:
            return
        handle.health = health
        self._changed_now(handle)
        if health in (Health.HEALTHY, Health.UNHEALTHY):
            assert health is not None
            self._announce(handle, health.value, **details)

    def _changed_now(self, handle: Handle) -> None:
        changed, handle._changed = handle._changed, anyio.Event()
        changed.set()
        self.wake()

    def _announce(self, handle: Handle, name: str, **details: Any) -> None:
        event = Event(time=time.time(), container=handle.name, event=name, **details)
        self._recent.append(event)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.WouldBlock):
                self._subscribers.remove(channel)
                channel.close()  # gone, or too far behind: its stream ends

    def _stop_order(self) -> list[list[str]]:
        """Layers of names: nothing in a layer is depended on by a later layer's containers."""
        remaining = {name for name, h in self.handles.items()}
        layers = []
        while remaining:
            needed = {dep for name in remaining for dep in self.handles[name].service.policy.depends_on}
            layer = sorted(remaining - needed) or sorted(remaining)  # a cycle: stop the rest together
            layers.append(layer)
            remaining -= set(layer)
        return layers

    async def _wait_for_dependencies(self, handle: Handle) -> str | None:
        """Wait till every dependency meets its condition (``Policy.conditions``): ``started``, it
        runs (or, a one-shot job, has ended with code 0); ``healthy``, its health is healthy;
        ``completed``, its task has ended with code 0. Returns why one never will, if one won't.

        A dependency's restart does nothing to its dependents once they run (compose's default):
        the conditions are waited for before each start of the dependent, not watched after."""
        net = handle.service.network
        joined = (net.container,) if net is not None and net.container is not None else ()
        policy = handle.service.policy
        for dep in policy.depends_on + joined:
            other = self.handles.get(dep)
            if other is None:
                return f"dependency {dep} is not running"
            condition = policy.condition(dep) if dep in policy.depends_on else "started"
            while True:
                ended = other.state in TERMINAL and other._task_done.is_set()
                completed = ended and other.state == State.EXITED and other.last_exit is not None \
                    and other.last_exit.code == 0
                if condition == "started" and (other.state == State.RUNNING or completed):
                    break
                if condition == "healthy" and other.health == Health.HEALTHY:
                    break
                if condition == "completed" and completed:
                    break
                if condition == "healthy" and not other.service.policy.has_health:
                    return f"dependency {dep} has no health check: it is never healthy"
                if ended:
                    if condition == "completed":
                        return f"dependency {dep} did not complete ({other.last_error or other.last_exit})"
                    return f"dependency {dep} is not running"
                await other._changed.wait()
        return None

    def _emit_terminal_line(self, name: str, data: bytes) -> None:
        """A pty writes CR LF; a log line ends with LF alone."""
        self._emit_line(name, "stdout", data[:-2] + b"\n" if data.endswith(b"\r\n") else data)

    def _emit_line(self, name: str, stream: str, data: bytes) -> None:
        self.log_book.line(name, stream, data)
        if self.log_sink is not None:
            self.log_sink.line(name, stream, data)
        writer = self._log_writers.get(name)
        if writer is not None:
            writer.line(data)

    async def _run_once(self, handle: Handle, report: Callable[[], None]) -> tuple[ExitStatus, float]:
        """One start of the container: returns its exit status (None: it did not start) and how
        long it ran."""
        service = handle.service
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._transition(handle, State.STARTING)
        began = anyio.current_time()
        attachment: list[Attachment] = []

        async def attach_network(pid: int) -> None:
            assert service.network is not None
            attachment.append(await self.networks.attach(service.name, service.network, pid))

        started: Container | None = None
        try:
            spec = self._network_spec(service)
            if service.policy.notify:
                self._notify.drain(service.name)
            shared = self._plans.get(spec)
            if shared is None:
                # The first plan of a spec reads files (the rootfs's passwd, group) and may compile
                # a seccomp filter: in a worker thread, never on the event loop; one at a time, so
                # that the replicas starting together wait for that plan instead of each making it.
                async with self._planning:
                    shared = self._plans.get(spec)
                    if shared is None:
                        shared = await anyio.to_thread.run_sync(self._plan_of, spec, service.name)
            the_plan = for_container(shared, spec, service.name)
            bridged = service.network is not None and service.network.bridge is not None
            async with open_container(spec, name=service.name, stdin=self._devnull, stdout=out_w,
                                      stderr=err_w, plan=the_plan, on_init=attach_network if bridged else None,
                                      cgroups=self.cgroups) as container:
                started = container
                os.close(out_w)
                os.close(err_w)
                out_w = err_w = -1
                handle.container, handle.pid = container, container.pid
                console = container.take_console()
                log_file = self._log_files.get(service.name)
                writer = None if log_file is None else FileWriter(log_file)
                try:
                    # the log file's writer outlives the pumps, to write what they read last (no task
                    # group without one: it costs every start)
                    async with anyio.create_task_group() if writer else contextlib.nullcontext() as log_writing:
                        if writer is not None and log_writing is not None:
                            self._log_writers[service.name] = writer
                            log_writing.start_soon(writer.run)
                        try:
                            async with anyio.create_task_group() as pumps:
                                if console is not None:  # a terminal: its output is the container's stdout
                                    pumps.start_soon(pump_lines, console,
                                                     functools.partial(self._emit_terminal_line, service.name))
                                    console = None
                                for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
                                    pumps.start_soon(pump_lines, fd,
                                                     functools.partial(self._emit_line, service.name, stream))
                                out_r = err_r = -1
                                handle.started_at = time.time()
                                self._transition(handle, State.RUNNING, pid=container.pid)
                                report()
                                async with anyio.create_task_group() as watch:
                                    if service.policy.has_health:
                                        self._set_health(handle, Health.STARTING)
                                    if service.policy.notify:
                                        watch.start_soon(self._read_notifications, handle)
                                    if service.policy.healthcheck is not None:
                                        watch.start_soon(self._check_health, handle, container,
                                                         service.policy.healthcheck)
                                    status = await self._wait_or_stop(handle, container)
                                    watch.cancel_scope.cancel()
                                self._set_health(handle, None)
                                # The workload's processes end with its pid namespace, and with them
                                # the pipes' writers; without one, a leftover must not hold the logs
                                # open for ever.
                                pumps.cancel_scope.deadline = anyio.current_time() + 2.0
                        finally:
                            self._log_writers.pop(service.name, None)
                            if writer is not None:
                                writer.close()  # it writes what is left, then ends
                finally:
                    handle.container = None
                    if console is not None:
                        os.close(console)
        except BaseException:
            if started is not None and started.status is not None:
                handle.last_exit = started.status  # killed on the way out: how it ended is still news
            raise
        finally:
            for fd in (out_r, out_w, err_r, err_w):
                if fd >= 0:
                    os.close(fd)
            if attachment:
                with anyio.CancelScope(shield=True):
                    await self.networks.detach(service.name, attachment[0])
        return status, anyio.current_time() - began

    async def _read_notifications(self, handle: Handle) -> None:
        """``READY=1`` from the workload makes it healthy (systemd's ``Type=notify``)."""
        sock = self._notify.socket(handle.name)
        while True:
            message = parse(await _aio.recv(sock))
            if message.get("READY") == "1" and handle.health == Health.STARTING:
                self._set_health(handle, Health.HEALTHY)

    async def _check_health(self, handle: Handle, container: Container, check: HealthCheck) -> None:
        """Run ``check`` every interval while the container runs, and keep its health. Unhealthy,
        under a restart policy that restarts (``on-failure`` or ``always``), it is stopped (its
        stop signal, the grace period, SIGKILL) and restarted, as a liveness probe does; under
        ``no`` the checks go on, and a pass makes it healthy again."""
        began = anyio.current_time()
        failures = 0
        while True:
            await anyio.sleep(check.interval)
            passed, output = await self._run_check(container, check)
            if passed:
                failures = 0
                handle.health_output = None
                self._set_health(handle, Health.HEALTHY)
                continue
            if await _ending(container):
                return  # it ended while the check ran (which then failed with it): not news
            handle.health_output = output
            if handle.health == Health.STARTING and anyio.current_time() - began < check.start_period:
                continue  # still starting: compose does not count these
            failures += 1
            if failures < check.retries:
                continue
            restart = handle.service.policy.restart != "no"
            self._set_health(handle, Health.UNHEALTHY, error=output, action="restart" if restart else None)
            if restart:
                handle._unhealthy = True
                if handle._wait_scope is not None:
                    handle._wait_scope.cancel()  # _wait_or_stop stops it
                return

    async def _run_check(self, container: Container, check: HealthCheck) -> tuple[bool, str]:
        """One run of the check: whether it passed, and the tail of its output (or why it failed)."""
        output = bytearray()
        r, w = os.pipe()
        try:
            _aio.nonblocking(r)

            async def collect() -> None:
                while chunk := await _aio.read(r):
                    output.extend(chunk)
                    del output[:-_CHECK_OUTPUT]

            failed: BootstrapError | None = None
            with anyio.move_on_after(check.timeout) as timer:
                async with anyio.create_task_group() as reading:
                    reading.start_soon(collect)
                    try:
                        # caught here, not around the task group, which would wrap it in a group
                        status = await container.exec(check.test, stdin=self._devnull, stdout=w, stderr=w)
                    except BootstrapError as e:  # it could not start (the container is ending?)
                        failed = e
                    finally:
                        os.close(w)
                        w = -1
                    # a process the check left in the background may hold the pipe: not for long
                    reading.cancel_scope.deadline = anyio.current_time() + 0.5
            if timer.cancelled_caught:
                return False, f"timed out after {check.timeout:g}s"
            if failed is not None:
                return False, failed.message
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        text = output.decode(errors="replace").strip()
        if status.code == 0:
            return True, text
        return False, text or str(status)

    def plan(self, service: Service) -> Plan:
        """Plan ``service`` as its start will (its network namespace, this supervisor's host facts)
        and keep the plan for its starts: how a front end validates containers before any starts
        (``supervisor run`` does, for a whole manifest). Blocking: it reads files and may compile a
        seccomp filter. A ``container:NAME`` network is planned as a joined namespace (which one
        is known once NAME runs). Raises ``SpecError``, or ``BootstrapError`` for what this host
        cannot give (a bridge without root)."""
        return self._plan_of(self._network_spec(service, validating=True), service.name)

    def _plan_of(self, spec: ContainerSpec, name: str) -> Plan:
        shared = self._plans.get(spec)  # a spec's equality covers what its plan depends on
        if shared is None:
            shared = self._plans[spec] = plan(spec, name, self.host)
        return shared

    def _network_spec(self, service: Service, validating: bool = False) -> ContainerSpec:
        """The spec as it starts: with the network namespace its ``network`` asks for (a new one for
        a bridge, or the running container's for ``container:NAME``), and with the notify socket
        bound in for ``notify``."""
        spec = service.spec
        if service.policy.notify:
            # systemd's Type=notify: our socket at a fixed place inside, and the variable naming it
            notify = Mount(CONTAINER_PATH, "bind", self._notify.path(service.name), ("bind",))
            process = attrs.evolve(spec.process, env=tuple(e for e in spec.process.env if not e.startswith(
                "NOTIFY_SOCKET=")) + (f"NOTIFY_SOCKET={CONTAINER_PATH}",))
            spec = attrs.evolve(spec, mounts=spec.mounts + (notify,), process=process)
        net = service.network
        if net is None:
            return spec
        if net.bridge is not None and self.host.rootless and not validating:  # the start reports it
            raise BootstrapError(errno.EPERM, "network", "attach", f"{service.name} to {net.bridge} (a veth on a "
                                 "bridge needs root; without root a container keeps the host's network or an "
                                 "empty one of its own)")
        others = tuple(ns for ns in spec.namespaces if ns.type != "network")
        if net.container is None:
            return attrs.evolve(spec, namespaces=others + (Namespace("network"),))
        if validating:
            return attrs.evolve(spec, namespaces=others + (Namespace("network", "/proc/self/ns/net"),))
        other = self.handles.get(net.container)
        if other is None or other.state != State.RUNNING or other.pid is None:
            raise BootstrapError(errno.ESRCH, "network", "join the network of", f"{net.container} (not running)")
        return attrs.evolve(spec, namespaces=others + (Namespace("network", f"/proc/{other.pid}/ns/net"),))

    async def _wait_or_stop(self, handle: Handle, container: Container) -> ExitStatus:
        """Wait for the workload to end; a stop request (which cancels the wait) turns it into
        stop signal, grace period, SIGKILL."""
        if not handle._stop.is_set() and not handle._unhealthy:
            with anyio.CancelScope() as handle._wait_scope:
                return await container.wait()
        handle._wait_scope = None
        policy = handle.service.policy
        self._transition(handle, State.STOPPING)
        container.send_signal(policy.stop_signal)
        with anyio.move_on_after(policy.stop_timeout):
            return await container.wait()
        container.kill()
        return await container.wait()

    async def _supervise(self, handle: Handle, task_status: TaskStatus[Handle] = anyio.TASK_STATUS_IGNORED) -> None:
        """One container's task: start, wait, restart by policy. Whatever goes wrong in it is this
        container's failure alone (FAILED, with the error in its event); only a cancellation leaves
        it, and then the container is settled (STOPPED) so that it can be started again."""
        policy = handle.service.policy
        reported = False
        failures = 0

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started(handle)

        try:
            while True:
                if handle._stop.is_set():
                    self._transition(handle, State.STOPPED)
                    break
                missing = None
                with anyio.CancelScope() as handle._wait_scope:  # a stop request cancels the wait
                    missing = await self._wait_for_dependencies(handle)
                handle._wait_scope = None
                if handle._stop.is_set():
                    self._transition(handle, State.STOPPED)
                    break
                if missing is not None:
                    handle.last_error = missing
                    self._transition(handle, State.FAILED, error=handle.last_error)
                    break
                reason = None
                try:
                    handle._unhealthy = False
                    status, ran = await self._run_once(handle, report)
                    handle.last_exit = status
                    handle.pid = None
                    if status.oom_killed:
                        self._announce(handle, "oom")
                    reason = "unhealthy" if handle._unhealthy else None
                    self._transition(handle, State.EXITED, code=status.code, signal=status.signal,
                                     oom=status.oom_killed or None, reason=reason)
                    failed = status.code != 0 or handle._unhealthy
                except Exception as e:  # noqa: BLE001 - one container's failure must stay its own
                    ran = 0.0
                    failed = True
                    self._ended_on_the_way_out(handle)
                    handle.last_error = _describe(e)
                    self._transition(handle, State.FAILED, error=handle.last_error)
                    if not all(isinstance(leaf, BootstrapError) for leaf in _leaves(e)):
                        break  # a bad spec, or a bug: restarting will not make it better
                report()
                if handle._stop.is_set():
                    self._transition(handle, State.STOPPED)
                    break
                if policy.restart == "no" or (policy.restart == "on-failure" and not failed):
                    break
                if policy.max_restarts is not None and handle.restarts >= policy.max_restarts:
                    handle.last_error = f"gave up after {handle.restarts} restarts"
                    if handle.state != State.FAILED:
                        self._transition(handle, State.FAILED, error=handle.last_error)
                    break
                failures = 1 if ran >= policy.stable_after else failures + 1
                delay = policy.backoff(failures if failed else 1)
                handle.restarts += 1
                self._transition(handle, State.RESTARTING, delay=round(delay, 3), reason=reason)
                with anyio.move_on_after(delay):
                    await handle._stop.wait()
            report()
        except BaseException:
            self._settle(handle)
            raise
        finally:
            handle._wait_scope = None
            handle._task_done.set()
            changed, handle._changed = handle._changed, anyio.Event()
            changed.set()
            self.wake()

    def _settle(self, handle: Handle) -> None:
        """A container's task is being cancelled (its start was, or the whole supervisor): its
        container was killed and reaped on the way out. Leave the handle in a resting state, so
        that a later ``start(name)`` finds it there."""
        self._ended_on_the_way_out(handle)
        if handle.state not in (State.STOPPED, State.FAILED):
            self._transition(handle, State.STOPPED)

    def _ended_on_the_way_out(self, handle: Handle) -> None:
        """A container that ran and was killed because its task is leaving by an exception: it
        exited all the same (``_run_once`` kept its status)."""
        handle.pid = None
        self._set_health(handle, None)
        if handle.state in (State.RUNNING, State.STOPPING):
            status = handle.last_exit
            self._transition(handle, State.EXITED, code=status.code if status else None,
                             signal=status.signal if status else None)


async def _ending(container: Container, grace: float = 0.25) -> bool:
    """Whether the container is ending: a check exec'd as its pid namespace goes down fails, and
    the init becomes a zombie a moment later (its namespace's last process, the check, is reaped
    first). Its pidfd has a waiter already (the container's task), hence the short poll."""
    with anyio.move_on_after(grace):
        while not container.has_exited():  # noqa: ASYNC110 - a second waiter on the pidfd is not allowed
            await anyio.sleep(0.01)
        return True
    return False


_CHECK_OUTPUT = 4096  # how much of a failed check's output its event keeps (the end of it)


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) groups: a task group wraps what its tasks raise."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _describe(error: Exception) -> str:
    """What a container's failed event says."""
    texts = []
    for leaf in _leaves(error):
        if isinstance(leaf, BootstrapError):
            texts.append(leaf.message)
        elif isinstance(leaf, SpecError):
            texts.append(str(leaf))
        else:
            texts.append(f"{type(leaf).__name__}: {leaf}")
    return "; ".join(texts)

