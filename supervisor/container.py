"""One container's life, under asyncio or trio (through anyio): start it, wait for it through its
pidfd, signal it.

``open_container`` starts a container and yields its ``Container`` handle; leaving the block kills
and reaps whatever still runs, so no container outlives the code that started it. ``run`` is the
whole life in one call. The handle is made by the library only.

Waiting uses the init's pidfd: ``anyio.wait_readable(pidfd)`` wakes when the init exits, and
``waitid(P_PIDFD)`` reaps exactly that child. Nothing here calls ``waitpid(-1)``, which would steal
other children from the event loop (asyncio's child watchers, trio's subprocesses).

The bootstrap is spawned from the thread that runs the event loop, and the init's parent-death
signal belongs to that thread: the loop's thread must outlive its containers (it does, for a program
that runs ``asyncio.run`` or ``trio.run`` in its main thread).
"""

import errno
import os
import select
import socket as _socket
import signal as _signal
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from contextlib import asynccontextmanager

import anyio

from . import _aio
from ._launch import (
    ExitStatus,
    Spawned,
    drain_after_exit,
    finish_cgroup,
    host_setup,
    make_cgroup,
    message_for,
    leftover_pid,
    orphan_init,
    spawn_into,
)
from .errors import BootstrapError
from .pipes import Handshake, HostSetup, InitDied, Request, Send
from .plan import Plan, plan, plan_exec
from .cgroups import Cgroup, CgroupDriver, Stats
from .host import Host
from .spec import NAMESPACE_TYPES, ContainerSpec

__all__ = ["Container", "open_container", "run"]

Stdio = tuple[int | None, int | None, int | None]


class Container:
    """A running (or exited, not yet closed) container. Made by ``open_container``."""

    def __init__(self, name: str, pid: int, pidfd: int, spec: ContainerSpec, plan: Plan, cgroup: Cgroup | None,
                 own_pid_ns: bool, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("containers are made by supervisor.open_container()")
        self.name = name
        self.pid = pid
        self.spec = spec
        self.plan = plan
        self.cgroup = cgroup
        #: the pty master when the spec asked for a terminal (``process.terminal``); the container
        #: closes it when it is closed, unless someone took it with ``take_console``
        self.console: int | None = None
        self._own_pid_ns = own_pid_ns
        self._pidfd = pidfd
        self._status: ExitStatus | None = None
        self._reaping = anyio.Lock()  # one task waits on the pidfd; the others queue behind it

    @property
    def status(self) -> ExitStatus | None:
        """How the workload ended, once it has been waited for."""
        return self._status

    def has_exited(self) -> bool:
        """Whether the init has exited, reaped or not (a pidfd is readable from its exit on);
        never blocks."""
        if self._status is not None or self._pidfd < 0:
            return True
        return bool(select.select([self._pidfd], [], [], 0)[0])

    async def wait(self) -> ExitStatus:
        """Wait for the init to exit and return its status. Many tasks may wait; a waiter that is
        cancelled hands the pidfd to the next."""
        async with self._reaping:
            if self._status is None:
                await anyio.wait_readable(self._pidfd)
                result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
                assert result is not None
                # Reaped: from here on a cancellation must not lose the status (the next waiter
                # would find no child), so it is recorded before anything else may checkpoint.
                if not self._own_pid_ns and self.cgroup is not None:
                    self.cgroup.kill()  # without a pid namespace, the init's end is not everyone's
                oom = self.cgroup is not None and self.cgroup.oom_kills() > 0
                self._status = ExitStatus.from_waitid(result, oom)
                os.close(self._pidfd)
                self._pidfd = -1
                with anyio.CancelScope(shield=True):  # as trio's own Process.wait shields its reap
                    await _remove_cgroup(self.cgroup)
            return self._status

    def send_signal(self, sig: int) -> None:
        """Signal the init (through its pidfd: never a recycled pid). Does nothing once it is reaped."""
        if self._status is None:
            try:
                _signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass  # exited, not yet reaped

    def kill(self) -> None:
        """SIGKILL the whole container: its init, whose end ends its pid namespace, or without one
        every process in its cgroup."""
        if not self._own_pid_ns and self.cgroup is not None and self._status is None:
            self.cgroup.kill()
        self.send_signal(_signal.SIGKILL)

    def take_console(self) -> int | None:
        """The pty master, now the caller's to read, write and close."""
        console, self.console = self.console, None
        return console

    def close(self) -> None:
        if self.console is not None:
            os.close(self.console)
            self.console = None

    async def exec(self, args: Sequence[str], *, env: Sequence[str] | None = None, cwd: str | None = None,
                   stdin: int | None = None, stdout: int | None = None, stderr: int | None = None,
                   terminal: bool = False, on_console: Callable[[int], Awaitable[None]] | None = None,
                   console_size: tuple[int, int] | None = None) -> ExitStatus:
        """Run another process inside the running container and wait for it: in all its namespaces
        and its cgroup, as its user with its capabilities, env and cwd unless given. Cancelling kills
        it. A container that has ended raises ``BootstrapError`` (ESRCH), it never hangs.
        ``terminal``: the process gets a pty of the container's, ``console_size`` (height, width)
        before it runs; ``on_console(master)`` receives its master (and owns it) once it runs."""
        if self._status is not None or self._pidfd < 0:
            raise BootstrapError(errno.ESRCH, "exec", "exec into", "a container that has exited", self.name)
        if terminal and on_console is None:
            raise ValueError("a terminal needs on_console, to receive the pty master")
        the_plan = plan_exec(self.plan, self.spec, self.pid, tuple(args), None if env is None else tuple(env), cwd,
                             terminal, console_size)
        pid, console = await _launch(the_plan, self.name, (stdin, stdout, stderr), self.cgroup)
        fd = os.pidfd_open(pid)
        try:
            if console is not None and on_console is not None:
                await on_console(console)
            return await _wait_exit(fd)
        except BaseException:
            await _kill_and_reap(fd)
            raise
        finally:
            os.close(fd)

    def stats(self) -> Stats | None:
        """Memory, pids and CPU use from the container's cgroup (None without one)."""
        return self.cgroup.stats() if self.cgroup is not None and self._status is None else None

    def __repr__(self) -> str:
        return f"<Container {self.name} pid={self.pid} {self._status or 'running'}>"


_TOKEN = object()


HostWork = Callable[[int], Awaitable[None]]


async def _drive(gen: Generator[Request, tuple[bytes, list[int]] | None, int], spawned: Spawned,
                 sock: _socket.socket, host_work: HostWork) -> int:
    request = next(gen)
    while True:
        try:
            if isinstance(request, HostSetup):
                await host_work(request.pid)
                request = gen.send(None)
            elif isinstance(request, Send):
                try:
                    await _aio.send_all(sock, request.data)
                except BrokenPipeError:
                    pass  # the peer is gone; what it said before going is still to be read
                request = gen.send(None)
            elif request.watch_bootstrap and not await _readable_or_exited(sock, spawned.pidfd):
                request = gen.send(drain_after_exit(spawned.sock))
            else:
                try:
                    received = await _aio.recv_fds(sock)
                except ConnectionResetError:  # the init died with our go-ahead unread
                    received = (b"", [])
                request = gen.send(received)
        except StopIteration as done:
            return int(done.value)


async def _readable_or_exited(sock: _socket.socket, pidfd: int) -> bool:
    """Wait until the socket is readable (True) or the process behind ``pidfd`` exited (False).
    One epoll set holding both, waited on as one fd: cheaper than a task per fd on a start's path."""
    with select.epoll(2) as both:
        both.register(sock.fileno(), select.EPOLLIN)
        both.register(pidfd, select.EPOLLIN)
        await anyio.wait_readable(both.fileno())
        return any(fd == sock.fileno() for fd, _ in both.poll(0))


async def _remove_cgroup(cgroup: Cgroup | None) -> None:
    """After the init was reaped: remove its cgroup. Its last processes may take a moment to go:
    the retries run in a thread, never on the event loop."""
    if cgroup is not None and not cgroup.remove(attempts=1):
        await anyio.to_thread.run_sync(cgroup.remove)


async def _wait_exit(pidfd: int) -> ExitStatus:
    """Wait for the process behind ``pidfd`` to exit and reap it. One checkpoint: a cancellation
    leaves it unreaped, and the pidfd stays open either way (the caller closes it)."""
    await anyio.wait_readable(pidfd)
    result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    assert result is not None
    return ExitStatus.from_waitid(result)


async def _kill_and_reap(pidfd: int) -> None:
    """SIGKILL and reap, whatever cancellation is under way; the caller closes the pidfd."""
    with anyio.CancelScope(shield=True):
        try:
            _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited meanwhile: still to be reaped
        await _wait_exit(pidfd)


async def _reap(pidfd: int) -> ExitStatus:
    """Reap and close (shielded: used on the way out of a start)."""
    try:
        with anyio.CancelScope(shield=True):
            status = await _wait_exit(pidfd)
        return status
    finally:
        os.close(pidfd)


async def _launch(the_plan: Plan, name: str, stdio: Stdio, cgroup: Cgroup | None,
                  on_init: HostWork | None = None) -> tuple[int, int | None]:
    """Spawn a bootstrap for a plan and run the handshake; the init's pid once it exec'd, and the
    pty master when the plan asked for a terminal.
    ``on_init(pid)`` runs while the init waits for its go-ahead (a network to attach, say)."""
    message = message_for(the_plan)
    spawned = spawn_into(None, stdio)  # from this (the main) thread: see _launch
    if cgroup is not None:
        # Into the cgroup before it reads its message, so the init is born inside. (Done here on
        # the event loop: the writes take microseconds in the hierarchies a container uses; worker
        # threads measured slower, for their handoffs and the GIL.)
        try:
            cgroup.add(spawned.pid)
        except BaseException:
            with anyio.CancelScope(shield=True):
                os.kill(spawned.pid, _signal.SIGKILL)
                stage0, spawned.pidfd = spawned.pidfd, -1
                await _reap(stage0)
                spawned.close()
            raise

    async def host_work(pid: int) -> None:
        if the_plan.uid_map_helper is not None or the_plan.gid_map_helper is not None:
            await anyio.to_thread.run_sync(host_setup, the_plan, pid)  # newuidmap: a process to wait for
        else:
            host_setup(the_plan, pid)  # a few writes to /proc: microseconds, on the loop
        if on_init is not None:
            await on_init(pid)

    handshake = Handshake()
    sock = spawned.sock
    sock.setblocking(False)
    try:
        return await _drive(handshake.run(message), spawned, sock, host_work), handshake.console
    except BaseException as e:
        handshake.close_console()
        if isinstance(e, BootstrapError):
            e.container = name
        with anyio.CancelScope(shield=True):
            if handshake.init_pid is None:
                # An init whose bootstrap died before reporting it waits for our go-ahead, alive
                # and holding the socket, until we shut our end: look for it first.
                handshake.init_pid = orphan_init(spawned)
            if handshake.init_pid is None:
                # Cancelled before the init's pid was read: it may exist all the same. Let the
                # bootstrap finish (it reads EOF if it still waits for its message), then look for
                # its PID message among what it left on the socket.
                sock.shutdown(_socket.SHUT_WR)
                stage0, spawned.pidfd = spawned.pidfd, -1
                await _reap(stage0)
                handshake.init_pid = leftover_pid(spawned.sock)
            if handshake.init_pid is not None:
                fd = os.pidfd_open(handshake.init_pid)
                _signal.pidfd_send_signal(fd, _signal.SIGKILL)
                status = await _reap(fd)
                if isinstance(e, InitDied):
                    e.how = str(status)
        raise
    finally:
        sock.close()
        if spawned.pidfd >= 0:
            with anyio.CancelScope(shield=True):
                stage0, spawned.pidfd = spawned.pidfd, -1
                await _reap(stage0)


async def _start(spec: ContainerSpec, name: str, stdio: Stdio, the_plan: Plan | None,
                 on_init: HostWork | None, cgroups: CgroupDriver) -> Container:
    if the_plan is None:
        the_plan = plan(spec, name)
    try:
        cgroup = make_cgroup(the_plan, cgroups)
    except BootstrapError as e:
        e.container = name
        raise
    try:
        pid, console = await _launch(the_plan, name, stdio, cgroup, on_init=on_init)
    except BaseException:
        finish_cgroup(cgroup)
        raise
    own_pid_ns = bool(the_plan.clone_flags & NAMESPACE_TYPES["pid"])
    container = Container(name, pid, os.pidfd_open(pid), spec, the_plan, cgroup, own_pid_ns, _TOKEN)
    container.console = console
    return container


@asynccontextmanager
async def open_container(spec: ContainerSpec, *, name: str, stdin: int | None = None, stdout: int | None = None,
                         stderr: int | None = None, plan: Plan | None = None,
                         on_init: HostWork | None = None, move_into_leaf: bool = False,
                         cgroups: CgroupDriver | None = None) -> AsyncIterator[Container]:
    """Start ``spec`` as container ``name`` and yield its handle once the workload runs.

    ``stdin``/``stdout``/``stderr`` are file descriptors for the workload (default: ours); ``plan``,
    one already made from ``spec`` (default: made now); ``on_init``, an async function called with the
    init's pid while it waits, before it runs anything (what the supervisor uses to attach networks);
    ``move_into_leaf``, whether this process may be moved into a leaf of its own cgroup (cgroup v2
    only delegates controllers from a cgroup without processes: a program that is nothing but a
    supervisor may allow it; without it, such a start fails and says so); ``cgroups``, the cgroup
    driver to make its cgroup with (a ``Supervisor`` passes its own; default: one for this call).
    Raises ``SpecError`` before anything is spawned, or ``BootstrapError`` when the container cannot
    start.
    On leaving, a container still running is killed (SIGKILL ends its pid namespace) and reaped.
    """
    if cgroups is None:
        cgroups = CgroupDriver(move_into_leaf=move_into_leaf, hierarchies=Host.current().cgroups)
    container = await _start(spec, name, (stdin, stdout, stderr), plan, on_init, cgroups)
    try:
        yield container
    finally:
        if container.status is None:
            with anyio.CancelScope(shield=True):
                container.kill()
                await container.wait()
        container.close()


async def run(spec: ContainerSpec, *, name: str, stdin: int | None = None, stdout: int | None = None,
              stderr: int | None = None, move_into_leaf: bool = False) -> ExitStatus:
    """Run a container to its end and return how it ended. Cancelling kills it."""
    async with open_container(spec, name=name, stdin=stdin, stdout=stdout, stderr=stderr,
                              move_into_leaf=move_into_leaf) as container:
        return await container.wait()
