"""Starting one container, without an event loop: spawn the bootstrap, run the handshake, reap.

This is the part both front ends share. The async ``Container`` drives ``Handshake`` with anyio's
waits; the one-shot CLI drives it with blocking calls, because importing anyio and an event loop
would cost it more than a whole container start.

The bootstrap is spawned with ``posix_spawn`` from the calling thread, which must be a long-lived
one (the main thread): the init's parent-death signal fires when the thread that spawned it exits.
It is always spawned from a sealed in-memory copy (``sealed_bootstrap``), made once per process.
"""

import os
import signal
import socket
from collections.abc import Callable, Generator
from typing import Protocol

import attrs

from .bootstrap import encode
from .cgroups import Cgroup, CgroupDriver
from .errors import BootstrapError
from .pipes import Handshake, HostSetup, InitDied, InitStarted, Request, Send, SyncConnection
from .plan import Plan

__all__ = [
    "finish_cgroup",
    "raise_fd_limit",
    "message_for",
    "orphan_init",
    "make_cgroup",
    "spawn_into",
    "BOOTSTRAP",
    "INITPIPE_FD",
    "ExitStatus",
    "Spawned",
    "host_setup",
    "launch_blocking",
    "spawn_bootstrap",
    "wait_blocking",
]

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
INITPIPE_FD = 3
_RECV_SIZE = 65536

#: every signal back to its default in the bootstrap, hence in the workload: Python ignores SIGPIPE
#: and SIGXFSZ, and an ignored signal stays ignored across execve.
_DEFAULT_SIGNALS = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]


@attrs.frozen
class ExitStatus:
    """How a container's workload ended: ``code`` when it exited, ``signal`` when it was killed."""

    code: int | None = None
    signal: int | None = None
    #: the kernel's OOM killer killed a process of the container (read from its cgroup)
    oom_killed: bool = False

    @classmethod
    def from_waitid(cls, result: "os.waitid_result", oom_killed: bool = False) -> "ExitStatus":
        if result.si_code == os.CLD_EXITED:
            return cls(code=result.si_status, oom_killed=oom_killed)
        return cls(signal=result.si_status, oom_killed=oom_killed)

    @property
    def shell_code(self) -> int:
        """The code a shell would report: the exit code, or 128 + the signal."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    def __str__(self) -> str:
        oom = " (out of memory)" if self.oom_killed else ""
        if self.code is not None:
            return f"exited with code {self.code}{oom}"
        return f"killed by {signal.Signals(self.signal or 0).name if self.signal else 'a signal'}{oom}"


@attrs.define(eq=False)
class Spawned:
    """A bootstrap process that was just spawned, with its end of the sync socket."""

    pid: int
    pidfd: int
    sock: socket.socket
    #: the inode of the bootstrap's end of the socket, which the init inherits: how an init whose
    #: bootstrap died before reporting its pid is found (``orphan_init``)
    peer_inode: int = 0
    #: the bootstrap's parent, hence the init's (CLONE_PARENT): this process, or the front end of the
    #: call a planner serves (``spawner``)
    parent: int = attrs.field(factory=os.getpid)

    def close(self) -> None:
        self.sock.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _dup_above(fd: int, low: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)


_sealed: int | None = None


def sealed_bootstrap() -> int:
    """The descriptor of a sealed in-memory copy of the bootstrap, made on first use and kept for the
    life of the process (close-on-exec). Every bootstrap, for a start or an exec, is exec'd from it, so
    what runs in a container as /proc/PID/exe (the init's, or ``/proc/self/exe`` run by the workload
    before the init's execve) is this copy, which no one can write: the host's binary is out of
    reach (CVE-2019-5736). One copy per process, not one per start: spawning from it costs nothing."""
    global _sealed
    if _sealed is None:
        fd = _make_sealed_copy()
        if fd <= INITPIPE_FD:  # a spawn's dup2 onto 0-3 must not replace what it execs
            fd, low = _dup_above(fd, INITPIPE_FD + 1), fd
            os.close(low)
        _sealed = fd
    return _sealed


def _make_sealed_copy() -> int:
    fd = os.memfd_create("supervisor-bootstrap", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(BOOTSTRAP, "rb") as f:
            data = f.read()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Spawner(Protocol):
    """Who spawns bootstraps for this process, when it is not this process: the front end of the
    call a planner's worker serves (``oci/planner.py``), so that the init is the caller's child and
    its subreaper's to reap."""

    def spawn(self, program: int, argv: list[str], env: dict[str, str],
              fds: list[tuple[int, int]]) -> tuple[int, int, int]:
        """Spawn ``program`` (a descriptor) with (descriptor, number) pairs: its pid, a pidfd, and its
        parent's pid."""

    def wait(self, pid: int) -> int:
        """Reap a child of the caller's: waitpid's status. ChildProcessError when it is none;
        ConnectionError when the caller is gone."""


#: None: bootstraps are this process's children
spawner: Spawner | None = None


def reap(pidfd: int) -> "os.waitid_result":
    """Wait for the process behind a pidfd to end, and reap it: ours, or (a bootstrap or an init a
    planner's caller spawned, see ``spawner``) the caller's, who reaps it and tells us how it ended."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        assert result is not None  # it is, without WNOHANG
        return result
    except ChildProcessError:
        if spawner is None:
            raise
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        pid = next(int(line.split()[1]) for line in f if line.startswith("Pid:"))
    try:
        status = spawner.wait(pid)
    except ConnectionError:
        # The caller is gone, and its children passed to a subreaper: wait for the end without
        # knowing how it came, so that what the start made (the cgroup) is still cleaned up.
        import select

        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll()
        status = signal.SIGKILL
    if os.WIFEXITED(status):
        code, value = os.CLD_EXITED, os.WEXITSTATUS(status)
    else:
        code, value = os.CLD_DUMPED if os.WCOREDUMP(status) else os.CLD_KILLED, os.WTERMSIG(status)
    return os.waitid_result((pid, 0, signal.SIGCHLD, value, code))


def spawn_bootstrap(stdio: tuple[int | None, int | None, int | None] = (None, None, None),
                    executable: str | None = None, preserve: int = 0) -> Spawned:
    """Spawn the bootstrap (from the sealed copy unless ``executable`` says otherwise) with the sync
    socket at fd 3 and ``stdio`` (None: ours) at 0-2. Every other descriptor the process has open,
    inheritable or not, is closed by the bootstrap before it reads a byte, but with ``preserve`` N
    our fds 3..3+N-1 (the caller made them inheritable), which go on to the workload; the sync socket
    is then at 3+N."""
    initpipe = INITPIPE_FD + preserve
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    temps: list[int] = []
    try:
        # Sources sitting on a target number would be overwritten by an earlier dup2: move them up.
        def source(fd: int) -> int:
            if fd <= initpipe:
                fd = _dup_above(fd, initpipe + 1)
                temps.append(fd)
            return fd

        env = {"_LIBCONTAINER_INITPIPE": str(initpipe)}
        if preserve:
            env["_SUPERVISOR_PRESERVE_FDS"] = str(preserve)
        parent_pid = os.getpid()
        if spawner is not None and executable is None:
            # the caller's own 0-2 (None) are already the front end's
            fds = [(fd, target) for target, fd in enumerate(stdio) if fd is not None]
            pid, pidfd, parent_pid = spawner.spawn(sealed_bootstrap(), [BOOTSTRAP], env,
                                                   [*fds, (child.fileno(), initpipe)])
            peer_inode = os.fstat(child.fileno()).st_ino
            return Spawned(pid, pidfd, parent, peer_inode, parent_pid)
        if executable is None:
            # exec resolves /proc/self/fd/N before it closes the close-on-exec descriptors
            executable = f"/proc/self/fd/{source(sealed_bootstrap())}"
        actions = []
        for target, fd in enumerate(stdio):
            if fd is not None and fd != target:
                actions.append((os.POSIX_SPAWN_DUP2, source(fd), target))
        actions.append((os.POSIX_SPAWN_DUP2, source(child.fileno()), initpipe))
        pid = os.posix_spawn(executable, [BOOTSTRAP], env, file_actions=actions, setsigdef=_DEFAULT_SIGNALS,
                             setsigmask=())
        peer_inode = os.fstat(child.fileno()).st_ino
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
        for fd in temps:
            os.close(fd)
    return Spawned(pid, os.pidfd_open(pid), parent, peer_inode)


def host_setup(plan: Plan, pid: int) -> None:
    """The supervisor's share of a start, while the init waits: its user namespace's id maps."""
    proc = f"/proc/{pid}"
    if plan.setgroups_deny:
        _write(f"{proc}/setgroups", "deny")
    for text, helper, name in ((plan.uid_map, plan.uid_map_helper, "uid_map"),
                               (plan.gid_map, plan.gid_map_helper, "gid_map")):
        if text is None:
            continue
        if helper is None:
            _write(f"{proc}/{name}", text)
        else:
            _run_helper(helper, pid, text)


def _run_helper(helper: str, pid: int, mapping: str) -> None:
    """newuidmap PID inside outside count..., with /etc/subuid's permission (rootless)."""
    import subprocess

    result = subprocess.run([helper, str(pid), *mapping.split()], capture_output=True, text=True, env={},
                            check=False)
    if result.returncode != 0:
        raise BootstrapError(1, "host", os.path.basename(helper), result.stderr.strip() or f"exit {result.returncode}")


def _write(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise BootstrapError(e.errno or 0, "host", "write", path) from None


def recv_with_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """A read of the sync socket and the descriptors that came with it (close-on-exec from the start:
    no other container's bootstrap may inherit them)."""
    try:
        data, ancillary, _, _ = sock.recvmsg(_RECV_SIZE, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC)
    except ConnectionResetError:
        return b"", []  # the init died with our go-ahead unread: the end of the stream all the same
    return data, fds_of(ancillary)


def recv_or_bootstrap_exit(sock: socket.socket, pidfd: int) -> tuple[bytes, list[int]]:
    """``recv_with_fds``, or an end of stream once the bootstrap exited without saying more."""
    import select

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    ready = {fd for fd, _ in poller.poll()}
    if sock.fileno() in ready:
        return recv_with_fds(sock)
    return drain_after_exit(sock)


def drain_after_exit(sock: socket.socket) -> tuple[bytes, list[int]]:
    """What the socket still holds once the bootstrap has exited (its writes all came before), or an
    end of stream when it holds nothing."""
    blocking = sock.getblocking()
    sock.setblocking(False)
    try:
        return recv_with_fds(sock)
    except BlockingIOError:
        return b"", []
    finally:
        sock.setblocking(blocking)


def leftover_pid(sock: socket.socket) -> int | None:
    """The init's pid, if a PID message is still unread on a socket whose writers are gone."""
    sock.setblocking(False)
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    for event in SyncConnection().receive_data(bytes(data)):
        if isinstance(event, InitStarted):
            return event.pid
    return None


def orphan_init(spawned: Spawned) -> int | None:
    """The pid of an init whose bootstrap died before reporting it: a child of ours (it was cloned
    with CLONE_PARENT) that holds the bootstrap's end of the sync socket. A rare path (stage 0
    killed between clone and its report, an OOM kill say), so a scan of /proc is fine."""
    me, want = str(spawned.parent), f"socket:[{spawned.peer_inode}]"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == spawned.pid:  # stage 0 holds that socket too
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            if stat.rsplit(")", 1)[1].split()[1] != me:
                continue
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") == want for fd in os.listdir(f"/proc/{entry}/fd")):
                return int(entry)
        except OSError:
            continue  # gone meanwhile
    return None


#: the fd limit this process had before ``raise_fd_limit``: what its containers get by default
_fd_limit_before: tuple[int, int] | None = None


def raise_fd_limit() -> None:
    """Each container costs a supervisor a pidfd and two pipes while it runs: allow many. The limit
    it had before is what its containers keep (``message_for``): a workload does not inherit a
    supervisor's own needs."""
    import resource

    global _fd_limit_before
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        if _fd_limit_before is None:
            _fd_limit_before = (soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))


_RLIMIT_NOFILE = 7


def message_for(plan: Plan) -> bytes:
    """The bootstrap message of a plan, with the fd limit this process had before it raised its
    own where the spec sets none."""
    if _fd_limit_before is not None and all(r != _RLIMIT_NOFILE for r, _, _ in plan.rlimits):
        plan = attrs.evolve(plan, rlimits=(*plan.rlimits, (_RLIMIT_NOFILE, *_fd_limit_before)))
    return encode(plan)


def fds_of(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    import array

    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return fds


def _drive_blocking(gen: Generator[Request, tuple[bytes, list[int]] | None, int], sock: socket.socket,
                    bootstrap_pidfd: int, host_work: Callable[[int], None]) -> int:
    request = next(gen)
    while True:
        try:
            if isinstance(request, HostSetup):
                host_work(request.pid)
                request = gen.send(None)
            elif isinstance(request, Send):
                try:
                    sock.sendall(request.data)
                except BrokenPipeError:
                    pass  # the peer is gone; what it said before going is still to be read
                request = gen.send(None)
            elif request.watch_bootstrap:
                request = gen.send(recv_or_bootstrap_exit(sock, bootstrap_pidfd))
            else:
                request = gen.send(recv_with_fds(sock))
        except StopIteration as done:
            return int(done.value)


def wait_blocking(pidfd: int, cgroup: Cgroup | None = None) -> ExitStatus:
    """Reap the process behind a pidfd (blocking; ``reap``), close the pidfd, remove the cgroup."""
    try:
        result = reap(pidfd)
        return ExitStatus.from_waitid(result, finish_cgroup(cgroup))
    finally:
        os.close(pidfd)


def finish_cgroup(cgroup: Cgroup | None) -> bool:
    """After the init was reaped: whether the OOM killer struck, then the cgroup removed."""
    if cgroup is None:
        return False
    oom = cgroup.oom_kills() > 0
    cgroup.remove()
    return oom


def make_cgroup(plan: Plan, driver: CgroupDriver) -> Cgroup | None:
    """The container's cgroup, made and limited before anything is spawned."""
    if plan.cgroup is None:
        return None
    return driver.create(plan.cgroup, plan.resources, controllers=plan.cgroup_controllers or None,
                         device_policy=plan.device_policy)


def spawn_into(cgroup: Cgroup | None, stdio: tuple[int | None, int | None, int | None],
               preserve: int = 0) -> Spawned:
    """Spawn the bootstrap and put it into the cgroup before it reads its message, so the init and
    everything it forks are born inside."""
    spawned = spawn_bootstrap(stdio, preserve=preserve)
    if cgroup is not None:
        try:
            cgroup.add(spawned.pid)
        except BaseException:
            signal.pidfd_send_signal(spawned.pidfd, signal.SIGKILL)
            reap(spawned.pidfd)
            spawned.close()
            raise
    return spawned


def launch_blocking(plan: Plan, name: str, stdio: tuple[int | None, int | None, int | None] = (None, None, None),
                    host_work: Callable[[int], None] | None = None, join: Cgroup | None = None,
                    scope: Callable[[int], None] | None = None) -> tuple[int, int, Cgroup | None, int | None]:
    """Start a container; once the workload is exec'd, return its init's pid, pidfd and cgroup,
    and the pty master when it has a terminal. (The one-shot CLI's: a process that is the supervisor
    and nothing else, so it may move itself into a leaf cgroup.) ``host_work(pid)`` runs after
    ``host_setup``, while the init waits (supervisor-oci's createRuntime hooks). ``join``: a running
    container's cgroup to start in (an exec), kept whatever happens, instead of a cgroup of its own.
    ``scope(pid)``: a cgroup manager (systemd) puts the waiting bootstrap into the container's
    cgroup, which must exist for it to do so; only then are its directories completed and limited
    and the bootstrap joined to all of them (v1 controllers the manager left alone), before it reads
    its message."""

    def setup(pid: int) -> None:
        host_setup(plan, pid)
        if host_work is not None:
            host_work(pid)

    message = message_for(plan)
    if scope is None:
        cgroup = make_cgroup(plan, CgroupDriver(move_into_leaf=True)) if join is None else None
        try:
            spawned = spawn_into(cgroup or join, stdio, plan.preserve_fds)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
    else:
        spawned = spawn_bootstrap(stdio, preserve=plan.preserve_fds)
        cgroup = None
        try:
            scope(spawned.pid)
            cgroup = make_cgroup(plan, CgroupDriver())
            if cgroup is not None:
                cgroup.add(spawned.pid)
        except BaseException:
            signal.pidfd_send_signal(spawned.pidfd, signal.SIGKILL)
            reap(spawned.pidfd)
            spawned.close()
            if cgroup is not None:
                cgroup.remove()
            raise
    handshake = Handshake()
    try:
        pid = _drive_blocking(handshake.run(message), spawned.sock, spawned.pidfd, setup)
        return pid, os.pidfd_open(pid), cgroup, handshake.console
    except BaseException as e:
        if isinstance(e, BootstrapError):
            e.container = name
        init_pid = handshake.init_pid if handshake.init_pid is not None else orphan_init(spawned)
        if init_pid is None:
            # Interrupted before the init's pid was read (a signal during the send, say): let the
            # bootstrap finish (it reads the end of its message), then look for its report.
            spawned.sock.shutdown(socket.SHUT_WR)
            reap(spawned.pidfd)
            os.close(spawned.pidfd)
            spawned.pidfd = -1
            init_pid = leftover_pid(spawned.sock)
        if init_pid is not None:
            fd = os.pidfd_open(init_pid)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            status = wait_blocking(fd)
            if isinstance(e, InitDied):
                e.how = str(status)
        if cgroup is not None:
            cgroup.remove()
        handshake.close_console()
        raise
    finally:
        if spawned.pidfd >= 0:
            reap(spawned.pidfd)
        spawned.close()
