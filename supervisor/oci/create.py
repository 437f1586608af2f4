"""create, run and exec: the calls that plan, hence the only ones that import the planner.

``create`` spawns the bootstrap exactly as every start does (``_launch.launch_blocking``), with two
differences in the plan: no parent-death signal (the container outlives us), and ``exec_fifo``, which
makes the init close the sync socket once it is set up and then wait on the FIFO for ``start``.
So ``launch_blocking`` returns when the init is set up and blocked; its errors are the bootstrap's
records, as for any start.
"""

import array
import fcntl
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._launch import launch_blocking, reap
from ..console import window_size
from ..errors import BootstrapError, SpecError
from ..plan import plan, plan_exec, with_hook_state
from ..spec import ContainerSpec, User, _Obj, _process, lenient
from . import hooks
from .log import CommandError
from .state import Container, rfc3339, start_time

if TYPE_CHECKING:
    from ..spec import Process
    from .systemd import Unit

__all__ = ["create", "exec_process", "wait_for"]

_TIOCGPTN = 0x80045430


def _load_spec(bundle: str, container_id: str, warn: Callable[[str], None] | None = None,
               unit: "Callable[[str | None], str] | None" = None) -> ContainerSpec:
    unknown: list[str] = []
    try:
        spec = ContainerSpec.from_bundle(bundle, unknown=unknown)
    except SpecError as e:
        raise CommandError(str(e)) from None
    if unknown and warn is not None:
        warn(f"{os.path.join(bundle, 'config.json')}: ignoring unknown fields: {', '.join(unknown)}")
    if unit is not None:
        # systemd's form (SLICE:PREFIX:NAME) becomes the scope's cgroup path
        spec = attrs.evolve(spec, cgroups_path=unit(spec.cgroups_path))
    elif spec.cgroups_path is None:
        # the default below the root, as runc's: below our own, create's cgroup would be swept
        spec = attrs.evolve(spec, cgroups_path=f"/{container_id}")
    return spec


def _error(e: BootstrapError | SpecError) -> CommandError:
    return CommandError(e.message if isinstance(e, BootstrapError) else str(e))


def create(root: str, container_id: str, bundle: str, pid_file: str | None, console_socket: str | None,
           preserve_fds: int = 0, warn: Callable[[str], None] | None = None, foreground: bool = False,
           systemd: bool = False) -> tuple[Container, int | None]:
    """Set a container up, its init blocked before execve; return once the pid file holds its pid.
    ``warn`` gets one warning naming the config's unknown fields, which are ignored. ``foreground``
    (``run`` without ``-d``): a terminal's pty master is returned to the caller (who relays it) rather
    than sent to a console socket. ``systemd``: the container's cgroup is a systemd scope
    (``systemd.py``)."""
    bundle = os.path.abspath(bundle)
    units: list[Unit] = []
    if systemd:
        from . import systemd as systemd_driver

        def to_unit(cgroups_path: str | None) -> str:
            try:
                units.append(systemd_driver.Unit.from_cgroups_path(cgroups_path, container_id))
            except CommandError as e:
                raise CommandError(f"{os.path.join(bundle, 'config.json')}: {e}") from None
            return units[0].cgroup_path

    spec = _load_spec(bundle, container_id, warn, to_unit if systemd else None)
    if spec.process.terminal and console_socket is None and not foreground:
        raise CommandError("cannot allocate tty if runc will detach without setting console socket")
    if console_socket is not None and not spec.process.terminal:
        raise CommandError("cannot use console socket if runc will not detach or allocate tty")
    try:
        the_plan = plan(spec, container_id, runs_hooks=hooks.RUNS)
    except SpecError as e:
        raise CommandError(str(e.with_file(os.path.join(bundle, "config.json")) if not e.file else e)) from None
    c = Container.make_dir(root, container_id)
    controllers = the_plan.cgroup_controllers | {"freezer"} if the_plan.cgroup is not None else frozenset()
    try:
        _pass_on(preserve_fds)
    except CommandError:
        c.remove()
        raise
    # the state document of every hook, but its status and pid
    fields = {"ociVersion": spec_version(bundle), "id": container_id, "bundle": bundle,
              "annotations": dict(spec.annotations)}
    the_plan = attrs.evolve(with_hook_state(the_plan, fields), pdeathsig=0, exec_fifo=c.fifo,
                            cgroup_controllers=controllers, preserve_fds=preserve_fds)
    if the_plan.terminal and console_socket is None:
        the_plan = attrs.evolve(the_plan, console_size=window_size(0) or the_plan.console_size)
    hook_lists = hooks.to_state(spec.hooks)
    created = rfc3339(time.time())

    def create_runtime(pid: int) -> None:
        """The init exists, in its new namespaces, and waits: the createRuntime point."""
        state = {"ociVersion": fields["ociVersion"], "id": container_id, "status": "creating", "pid": pid,
                 "bundle": bundle, "annotations": fields["annotations"]}
        hooks.run_hooks(hook_lists, "prestart", state)
        hooks.run_hooks(hook_lists, "createRuntime", state)

    scope = None
    if units:
        def scope(pid: int) -> None:
            from ..cgroups import hierarchies

            memory_v2 = any(h.version == 2 and "memory" in h.controllers for h in hierarchies())
            with systemd_driver.Systemd() as manager:
                try:
                    manager.start_scope(units[0], pid, f"supervisor-oci container {container_id}",
                                        systemd_driver.properties(spec.resources, memory_v2))
                finally:
                    # systemd took the unit, whether its job is done or not: undo stops it
                    if manager.started is not None:
                        scope_started.append(True)

    scope_started: list[bool] = []

    def undo() -> None:
        """Nothing of a failed create stays: its state directory, and its unit once started."""
        try:
            if scope_started:
                with systemd_driver.Systemd() as manager:
                    manager.stop(units[0].name)
        finally:
            c.remove()

    try:
        pid, pidfd, cgroup, console = launch_blocking(the_plan, container_id,
                                                      host_work=create_runtime if hook_lists else None,
                                                      scope=scope)
    except (BootstrapError, SpecError) as e:
        undo()
        raise _error(e) from None
    except BaseException:
        undo()
        raise
    try:
        started = start_time(pid)
        assert started is not None  # our child, not reaped
        c.data = {
            "oci_version": fields["ociVersion"],
            "pid": pid,
            "start_time": started[0],
            "bundle": bundle,
            "rootfs": os.path.join(bundle, spec.root.path) if spec.root.path else "",
            "created": created,
            "owner": "",
            "annotations": dict(spec.annotations),
            "hooks": hook_lists,
            "cgroup": [{"version": h.version, "mountpoint": h.mountpoint, "controllers": sorted(h.controllers),
                        "own": h.own, "dir": d} for h, d in (cgroup.dirs.items() if cgroup else ())],
        }
        if units:
            c.data["systemd_unit"] = units[0].name
        c.save()
        if console is not None and console_socket is not None:
            send_console(console_socket, console)
        if pid_file:
            write_pid_file(pid_file, pid)
    except BaseException:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        reap(pidfd)
        if cgroup is not None:
            cgroup.remove()
        undo()
        if console is not None:
            os.close(console)
        raise
    finally:
        os.close(pidfd)
    if console is not None and console_socket is not None:
        os.close(console)
        console = None
    return c, console


def spec_version(bundle: str) -> str:
    import json

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            return str(json.load(f).get("ociVersion", "1.0.2"))
    except (OSError, ValueError):
        return "1.0.2"


def write_pid_file(path: str, pid: int) -> None:
    """Bare digits, no newline (containerd parses the whole file as a number); atomically."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def send_console(path: str, master: int) -> None:
    """One message to the caller's socket: the pty's name, and its master as the one fd."""
    buf = fcntl.ioctl(master, _TIOCGPTN, b"\0\0\0\0")
    name = f"/dev/pts/{struct.unpack('=I', buf)[0]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
            sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
        except OSError as e:
            raise CommandError(f"sending the console to {path}: {e.strerror}") from None


# -- exec ------------------------------------------------------------------------------------------

def _exec_process(spec: ContainerSpec, process_file: str | None, args: Sequence[str], env: Sequence[str],
                  user: str | None, cwd: str | None, tty: bool) -> "Process":
    if process_file is not None:
        import json

        try:
            with open(process_file, "rb") as f:
                doc: Any = json.load(f)
            with lenient([]):
                return _process(_Obj(doc, "process"))
        except (OSError, ValueError) as e:
            if isinstance(e, SpecError):
                raise CommandError(f"{process_file}: {e}") from None
            raise CommandError(f"reading {process_file}: {e}") from None
    if not args:
        raise CommandError("exec: give the command to run, or --process FILE")
    process = spec.process
    merged = dict(entry.split("=", 1) for entry in process.env)
    for entry in env:
        if "=" not in entry:
            raise CommandError(f'exec: "{entry}" is not NAME=VALUE')
        key, value = entry.split("=", 1)
        merged[key] = value
    new_user = process.user
    if user is not None:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise CommandError(f"exec: --user {user!r}: give UID[:GID] as numbers")
        new_user = User(uid=int(uid), gid=int(gid or 0))
    return attrs.evolve(process, args=tuple(args), env=tuple(f"{k}={v}" for k, v in merged.items()),
                        cwd=cwd or process.cwd, user=new_user, terminal=tty)


def _pass_on(preserve_fds: int) -> None:
    """The caller's fds 3..3+N-1 go to the workload as they are (runc's --preserve-fds)."""
    for fd in range(3, 3 + preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            raise CommandError(f"--preserve-fds {preserve_fds}: fd {fd} is not open") from None


def exec_process(c: Container, process_file: str | None, args: Sequence[str], env: Sequence[str],
                 user: str | None, cwd: str | None, tty: bool, detach: bool, pid_file: str | None,
                 console_socket: str | None, preserve_fds: int = 0) -> int:
    """Run a process in a running container; with ``detach``, return once it runs (0), else wait
    and return its status as a shell would. ``preserve_fds``: as for ``create``."""
    status = c.status()
    if status in ("stopped", "paused"):
        raise CommandError(f"cannot exec in a {status} container")
    spec = _load_spec(str(c.data["bundle"]), c.id)
    process = _exec_process(spec, process_file, args, env, user, cwd, tty)
    if process.terminal and console_socket is None and detach:
        raise CommandError("cannot allocate tty if runc will detach without setting console socket")
    if console_socket is not None and not process.terminal:
        raise CommandError("cannot use console socket if runc will not detach or allocate tty")
    spec = attrs.evolve(spec, process=process)
    try:
        base = attrs.evolve(plan(attrs.evolve(spec, hooks=()), c.id), cgroup=None, resources=None)
        the_plan = attrs.evolve(plan_exec(base, spec, c.pid, process.args, base.env, process.cwd, process.terminal),
                                pdeathsig=0, preserve_fds=preserve_fds)
        if the_plan.terminal and console_socket is None:
            the_plan = attrs.evolve(the_plan, console_size=window_size(0) or the_plan.console_size)
    except SpecError as e:
        raise CommandError(str(e)) from None
    if not c.alive():
        raise CommandError("cannot exec in a stopped container")
    _pass_on(preserve_fds)
    cgroup = c.cgroup()
    try:
        pid, pidfd, _, console = launch_blocking(the_plan, c.id, join=cgroup if cgroup.dirs else None)
    except (BootstrapError, SpecError) as e:
        raise _error(e) from None
    try:
        if console is not None and console_socket is not None:
            try:
                send_console(console_socket, console)
            finally:
                os.close(console)
                console = None
        if pid_file:
            write_pid_file(pid_file, pid)
        if detach:
            return 0
        return wait_for(pidfd, console)
    except BaseException:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        raise
    finally:
        os.close(pidfd)


def wait_for(pidfd: int, console: int | None = None) -> int:
    """Wait for our child behind a pidfd, passing on the signals a foreground runtime forwards;
    its status as a shell reports it. ``console``: a pty master to relay our terminal to meanwhile
    (closed here)."""
    from ..console import attend

    attend(pidfd, console, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                            signal.SIGUSR2))
    result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    assert result is not None
    return result.si_status if result.si_code == os.CLD_EXITED else 128 + result.si_status
