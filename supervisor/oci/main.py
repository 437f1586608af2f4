"""The ``supervisor-oci`` command: global flags, then one command; exit 0 on success, 1 on failure.

Imports stay inside the branches: ``state``, ``kill`` and ``delete`` must not pay for the planner
(see the package's docstring).
"""

import os
import sys
from collections.abc import Sequence

from .args import BOOL, MULTI, VALUE, Options, UsageError, flag_table, parse
from .log import CommandError, Log

__all__ = ["entry", "main"]

USAGE = """usage: supervisor-oci [global flags] COMMAND [flags] ID ...

An OCI runtime with runc's command line, for containerd (BinaryName) and people.

commands: create, start, run, state, list, kill, delete, exec, ps, pause, resume, update, events,
spec, features; install-fast PATH (the native front end, for containerd's BinaryName); planner (a
service that keeps the planner warm for the native front end's creates, on ROOT/planner.sock)
global flags: --root DIR, --log FILE, --log-format text|json, --debug, --systemd-cgroup
"""

_GLOBAL = flag_table(("root", VALUE), ("log", VALUE), ("log-format", VALUE), ("debug", BOOL),
                     ("systemd-cgroup", BOOL), ("criu", VALUE), ("rootless", VALUE), ("h|help", BOOL),
                     ("v|version", BOOL))

_UPDATE_FLAGS = ("memory", "memory-reservation", "memory-swap", "cpu-shares", "cpu-quota", "cpu-period",
                 "cpuset-cpus", "cpuset-mems", "pids-limit", "blkio-weight")

_COMMANDS = {
    "create": flag_table(("b|bundle", VALUE), ("pid-file", VALUE), ("console-socket", VALUE), ("no-pivot", BOOL),
                         ("no-new-keyring", BOOL), ("preserve-fds", VALUE)),
    "run": flag_table(("b|bundle", VALUE), ("pid-file", VALUE), ("console-socket", VALUE), ("no-pivot", BOOL),
                      ("no-new-keyring", BOOL), ("preserve-fds", VALUE), ("d|detach", BOOL)),
    "start": {},
    "state": {},
    "list": flag_table(("q|quiet", BOOL), ("f|format", VALUE)),
    "kill": flag_table(("a|all", BOOL)),
    "delete": flag_table(("f|force", BOOL)),
    "exec": flag_table(("p|process", VALUE), ("e|env", MULTI), ("u|user", VALUE), ("cwd", VALUE), ("t|tty", BOOL),
                       ("d|detach", BOOL), ("pid-file", VALUE), ("console-socket", VALUE),
                       ("preserve-fds", VALUE)),
    "ps": flag_table(("f|format", VALUE)),
    "pause": {},
    "resume": {},
    "spec": flag_table(("b|bundle", VALUE), ("rootless", BOOL)),
    "features": {},
    "install-fast": {},
    "planner": {},
    "events": flag_table(("stats", BOOL), ("interval", VALUE)),
    "update": flag_table(("r|resources", VALUE), *((name, VALUE) for name in _UPDATE_FLAGS)),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    log = Log()
    try:
        options, rest = parse(argv, _GLOBAL)
        log = Log(options["log"] or None, str(options["log_format"] or "text"),  # type: ignore[arg-type]
                  bool(options["debug"]))
        if options["log_format"] not in (None, "text", "json"):
            raise UsageError(f"unknown log format {options['log_format']!r}: text or json")
        if options["version"]:
            print("supervisor-oci version 0.1.0\nspec: 1.1.0")
            return 0
        if options["help"] or not rest:
            print(USAGE, end="")
            return 0 if options["help"] else 1
        command, *rest = rest
        if command not in _COMMANDS:
            raise UsageError(f"no such command: {command}")
        flags, positional = parse(rest, _COMMANDS[command])
        root = str(options["root"] or "")
        if not root:
            from .state import default_root

            root = default_root()
        log.debug(f"{command} {' '.join(rest)}")
        if command == "planner":
            from .planner import serve

            if positional:
                raise UsageError("planner: takes no arguments")
            return serve(root, bool(options["debug"]))
        return _run(command, root, flags, positional, log, bool(options["systemd_cgroup"]))
    except UsageError as e:
        log.error(str(e))
        return 1
    except CommandError as e:
        log.error(str(e))
        return 1
    except OSError as e:
        log.error(str(e))
        return 1
    except Exception as e:  # a bug of ours; the shim still needs a reason in --log, not only on stderr
        import traceback

        log.debug(traceback.format_exc())
        log.error(f"internal error: {type(e).__name__}: {e}")
        return 1


def _one_id(command: str, positional: list[str], extra: int = 0) -> str:
    if len(positional) < 1 or (extra == 0 and len(positional) > 1):
        raise UsageError(f"{command}: give exactly one container id")
    return positional[0]


def _run(command: str, root: str, flags: Options, positional: list[str], log: Log, systemd: bool = False) -> int:
    from . import lifecycle
    from .state import Container

    if command == "state":
        print(lifecycle.state(Container.load(root, _one_id(command, positional))))
    elif command == "start":
        lifecycle.start(Container.load(root, _one_id(command, positional)), log.warning)
    elif command == "kill":
        if not 1 <= len(positional) <= 2:
            raise UsageError("kill: give the container id and optionally a signal")
        sig = lifecycle.parse_signal(positional[1] if len(positional) == 2 else "SIGTERM")
        lifecycle.kill(Container.load(root, positional[0]), sig, bool(flags["all"]))
    elif command == "delete":
        container_id = _one_id(command, positional)
        try:
            c = Container.load(root, container_id)
        except CommandError:
            if flags["force"]:
                return 0  # runc: deleting what is not there, forcefully, is done
            raise
        lifecycle.delete(c, bool(flags["force"]), log.warning)
    elif command == "ps":
        c = Container.load(root, _one_id(command, positional, extra=1))
        print(lifecycle.ps(c, str(flags["format"] or "table")))
    elif command == "pause":
        lifecycle.pause(Container.load(root, _one_id(command, positional)))
    elif command == "resume":
        lifecycle.resume(Container.load(root, _one_id(command, positional)))
    elif command == "list":
        out = lifecycle.list_containers(root, bool(flags["quiet"]), str(flags["format"] or "table"))
        if out:
            print(out)
    elif command in ("create", "run"):
        return _create(command, root, flags, positional, log, systemd)
    elif command == "exec":
        from .create import exec_process

        if len(positional) < 1:
            raise UsageError("exec: give the container id")
        fds = str(flags["preserve_fds"] or "0")
        if not fds.isdigit():
            raise UsageError(f"--preserve-fds {fds!r}: give a number")
        return exec_process(Container.load(root, positional[0]), _opt(flags["process"]), positional[1:],
                            flags["env"], _opt(flags["user"]), _opt(flags["cwd"]),  # type: ignore[arg-type]
                            bool(flags["tty"]), bool(flags["detach"]), _opt(flags["pid_file"]),
                            _opt(flags["console_socket"]), int(fds))
    elif command == "events":
        from .events import events, parse_interval

        events(Container.load(root, _one_id(command, positional)), bool(flags["stats"]),
               parse_interval(str(flags["interval"] or "5s")))
    elif command == "update":
        from .update import update

        update(Container.load(root, _one_id(command, positional)), flags)
    elif command == "spec":
        from .info import write_spec

        write_spec(str(flags["bundle"] or "."), bool(flags["rootless"]))
    elif command == "install-fast":
        from .info import install_fast

        if len(positional) != 1:
            raise UsageError("install-fast: give the path to install the native front end at")
        install_fast(positional[0])
    elif command == "features":
        from .info import features

        print(features())
    return 0


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _create(command: str, root: str, flags: Options, positional: list[str], log: Log, systemd: bool) -> int:
    from .create import create

    container_id = _one_id(command, positional)
    fds = str(flags["preserve_fds"] or "0")
    if not fds.isdigit():
        raise UsageError(f"--preserve-fds {fds!r}: give a number")
    if flags["no_pivot"]:
        log.debug("--no-pivot: ignored, the root is always entered with pivot_root")
    detach = command == "create" or bool(flags["detach"])
    c, console = create(root, container_id, str(flags["bundle"] or os.getcwd()), _opt(flags["pid_file"]),
                        _opt(flags["console_socket"]), int(fds), log.warning, foreground=not detach,
                        systemd=systemd)
    if command == "create":
        return 0
    from . import lifecycle

    pidfd = os.pidfd_open(c.pid)
    try:
        try:
            lifecycle.start(c, log.warning)
        except CommandError:
            # a startContainer hook failed (the container is stopped): undo the create, as runc's run
            lifecycle.delete(c, force=True, warn=log.warning)
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
            raise
        if detach:
            return 0
        from .create import wait_for

        code = wait_for(pidfd, console)
        console = None
    finally:
        os.close(pidfd)
        if console is not None:
            os.close(console)
    lifecycle.delete(c, force=True, warn=log.warning)
    return code


def entry() -> None:
    """The command (``_bin/supervisor-oci``, and ``python -m supervisor.oci``): ``main`` without the interpreter's
    teardown, which a command run once per call does not need (see ``supervisor._exit``)."""
    from .._exit import exit_after

    exit_after(main)


if __name__ == "__main__":
    entry()
