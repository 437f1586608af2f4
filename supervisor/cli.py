"""The ``supervisor`` command.

``supervisor run MANIFEST`` runs a manifest's containers in the foreground under the ``Supervisor``:
their output with the container's name in front, one line on stderr per exit, failure and restart,
``--events FILE`` appending every event as a JSON line. Under systemd's ``Type=notify``
(``NOTIFY_SOCKET`` set) it says ``READY=1`` once every container has started (or had its try) and
``STOPPING=1`` when it begins to stop them. SIGINT or SIGTERM stops every container
gracefully (dependents first); a second SIGINT kills them at once. SIGHUP, or ``supervisor reload``,
re-reads the manifest and applies what changed (``Supervisor.reload``); a manifest that no longer
loads is reported and changes nothing. It exits 0 when every container
ended with code 0 (or was stopped on request) and none failed, 1 otherwise, 2 for a bad manifest.

``supervisor run --bundle DIR [NAME]`` runs one OCI bundle in the foreground, as ``runc run`` does:
stdio passed through, signals forwarded to the container's init, and the workload's exit code (or
128+N when signal N killed it) as ours. A container that cannot start prints
``supervisor: NAME: <what failed>: <why>`` and exits 127 (not found), 126 (not executable) or 125;
a bad bundle exits 2. The bundle's hooks run as under ``runc run``, every point (``_Hooks``). This
path is blocking and imports no event loop: its start-up cost is part of every one-shot run.
"""

import argparse
import functools
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .control import ControlError, acquire_state_dir, default_state_dir, release_state_dir, request
from .errors import BootstrapError, SpecError

if TYPE_CHECKING:
    import anyio
    from anyio.abc import TaskGroup

    from .logs import PrefixedOutput
    from .manifest import Manifest
    from .plan import Plan
    from .spec import ContainerSpec
    from .supervise import Supervisor

__all__ = ["entry", "main"]

#: signals a foreground ``run`` passes on to the container, as runc does
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH, signal.SIGCONT)


@functools.cache  # built once a process: a planner's workers share it (``oci/planner.py``)
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supervisor", description="Start, watch and stop Linux containers.")
    sub = parser.add_subparsers(dest="command", required=True)
    state_dir = argparse.ArgumentParser(add_help=False)
    state_dir.add_argument("--state-dir", metavar="DIR", default=default_state_dir(),
                           help=f"where the control socket lives (default {default_state_dir()})")
    run = sub.add_parser("run", parents=[state_dir], help="run containers in the foreground",
                         usage="supervisor run MANIFEST [--events FILE] | supervisor run --bundle DIR [NAME]")
    run.add_argument("--bundle", metavar="DIR", help="an OCI bundle (DIR/config.json and its rootfs)")
    run.add_argument("--events", metavar="FILE", help="append every event to FILE as a JSON line")
    run.add_argument("target", nargs="?", metavar="MANIFEST|NAME",
                     help="a manifest (TOML); with --bundle, the container's name (default: the directory's)")
    ps = sub.add_parser("ps", parents=[state_dir], help="list the containers of a running supervisor")
    ps.add_argument("--json", action="store_true", help="one JSON document")
    exe = sub.add_parser("exec", parents=[state_dir], help="run a command inside a running container",
                         usage="supervisor exec [-t] NAME -- CMD...")
    exe.add_argument("-t", "--tty", action="store_true", help="a terminal (not supported yet)")
    exe.add_argument("name")
    exe.add_argument("cmd", nargs=argparse.REMAINDER)
    for command, text in (("stop", "stop a container"), ("start", "start a stopped or ended container"),
                          ("restart", "stop a container (if it runs) and start it again")):
        sub.add_parser(command, parents=[state_dir], help=text).add_argument("name")
    kill = sub.add_parser("kill", parents=[state_dir], help="send a signal to a container's init (the restart "
                                                          "policy decides what follows)")
    kill.add_argument("-s", "--signal", default="KILL", help="a name (TERM, SIGTERM) or number (default KILL)")
    kill.add_argument("name")
    events = sub.add_parser("events", parents=[state_dir], help="the running supervisor's events, as JSON lines")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    sub.add_parser("reload", parents=[state_dir], help="re-read the manifest: start, restart and stop what changed")
    logs = sub.add_parser("logs", parents=[state_dir], help="a container's recent output")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-t", "--timestamps", action="store_true", help="each line with the time it was read")
    logs.add_argument("name")
    return parser


def _err(text: str) -> None:
    print(f"supervisor: {text}", file=sys.stderr, flush=True)


def run_bundle(bundle: str, name: str | None) -> int:
    from ._launch import launch_blocking, wait_blocking
    from .plan import plan
    from .spec import HOOK_KINDS, ContainerSpec

    name = name or os.path.basename(os.path.abspath(bundle))
    config = os.path.join(bundle, "config.json")
    try:
        spec = ContainerSpec.from_bundle(bundle)
        the_plan = plan(spec, name, runs_hooks=HOOK_KINDS)
    except SpecError as e:
        _err(str(e if e.file else e.with_file(config)))
        return 2
    hooks = _Hooks(spec, name, bundle) if spec.hooks else None
    if hooks is not None:
        the_plan = hooks.plan_for(the_plan)
    if the_plan.terminal and os.isatty(0):
        from .console import window_size

        import attrs

        # the pty starts at our terminal's size (the relay follows it from then on)
        the_plan = attrs.evolve(the_plan, console_size=window_size(0) or the_plan.console_size)
    # A signal that comes while the container starts waits for the handler below (the workload may
    # already run, and the user sees it run, before we return from the handshake).
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    try:
        pid, pidfd, cgroup, console = launch_blocking(the_plan, name,
                                                      host_work=hooks.create_runtime if hooks else None)
    except BaseException as e:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        if isinstance(e, BootstrapError):
            _err(f"{name}: {e.message}")
            return e.exit_code
        if isinstance(e, SpecError):
            _err(str(e.with_file(config)))
            return 2
        if hooks is not None and (message := hooks.failure(e)) is not None:
            _err(f"{name}: {message}")
            return 125
        raise

    from .console import attend

    if hooks is not None:
        hooks.run("poststart", "running", pid)
    attend(pidfd, console, _FORWARDED)
    status = wait_blocking(pidfd, cgroup)
    if status.oom_killed:
        _err(f"{name}: {status}")
    if hooks is not None:
        hooks.run("poststop", "stopped", 0)
    return status.shell_code


class _Hooks:
    """A bundle's hooks under ``supervisor run --bundle``, all of them as ``runc run`` runs them, with
    supervisor-oci's runner and wording: prestart and createRuntime while the init waits (a failure
    fails the start), createContainer and startContainer in the init (its failure is the start's),
    poststart once the workload runs and poststop once it ended (failures are warnings). Made only
    for a bundle with hooks: a run without pays for none of this."""

    def __init__(self, spec: "ContainerSpec", name: str, bundle: str) -> None:
        from .oci.create import spec_version
        from .oci.hooks import to_state

        bundle = os.path.abspath(bundle)
        self.lists = to_state(spec.hooks)
        self.fields = {"ociVersion": spec_version(bundle), "id": name, "bundle": bundle,
                       "annotations": dict(spec.annotations)}
        self.name = name

    def plan_for(self, the_plan: "Plan") -> "Plan":
        from .plan import with_hook_state

        return with_hook_state(the_plan, self.fields)

    def state(self, status: str, pid: int) -> dict[str, Any]:
        return {"ociVersion": self.fields["ociVersion"], "id": self.name, "status": status, "pid": pid,
                "bundle": self.fields["bundle"], "annotations": self.fields["annotations"]}

    def create_runtime(self, pid: int) -> None:
        from .oci.hooks import run_hooks

        for kind in ("prestart", "createRuntime"):
            run_hooks(self.lists, kind, self.state("creating", pid))

    def run(self, kind: str, status: str, pid: int) -> None:
        from .oci.hooks import run_hooks

        run_hooks(self.lists, kind, self.state(status, pid), lambda text: _err(f"{self.name}: warning: {text}"))

    @staticmethod
    def failure(e: BaseException) -> str | None:
        """What a host-side hook's failure during the start says, if ``e`` is one."""
        from .oci.log import CommandError

        return str(e) if isinstance(e, CommandError) else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        if args.bundle is not None:
            return run_bundle(args.bundle, args.target)
        if args.target is None:
            _err("run: give a manifest, or --bundle DIR")
            return 2
        return run_manifest(args.target, args.events, args.state_dir)
    try:
        return _control(args)
    except ControlError as e:
        answer = e.answer
        if "errno" in answer:  # exec could not start the command: the same codes as run
            _err(f"{args.name}: {e}")
            return BootstrapError(int(answer["errno"]), str(answer.get("stage", "")), "", "").exit_code
        _err(str(e))
        return 1


def _control(args: argparse.Namespace) -> int:
    """ps, exec, stop, start, restart, kill, events, logs, reload: requests to the control socket of a
    running supervisor."""
    if args.command == "ps":
        [answer] = request(args.state_dir, {"cmd": "ps"})
        if args.json:
            print(json.dumps(answer["containers"], indent=2))
        else:
            _print_ps(answer["containers"])
        return 0
    if args.command == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            _err("exec: give the command after --")
            return 2
        if args.tty:
            answer = _exec_with_terminal(args.state_dir, args.name, cmd)
        else:
            answers = list(request(args.state_dir, {"cmd": "exec", "name": args.name, "args": cmd, "tty": False},
                                   fds=(0, 1, 2)))
            answer = answers[-1] if answers else {}
        return int(answer["code"]) if answer.get("code") is not None else 128 + int(answer.get("signal") or 0)
    if args.command in ("stop", "start", "restart"):
        for _ in request(args.state_dir, {"cmd": args.command, "name": args.name}):
            pass
        return 0
    if args.command == "kill":
        sig: str | int = int(args.signal) if args.signal.isdigit() else args.signal
        for _ in request(args.state_dir, {"cmd": "kill", "name": args.name, "signal": sig}):
            pass
        return 0
    if args.command == "events":
        for answer in request(args.state_dir, {"cmd": "events", "follow": args.follow}):
            if "event" in answer:
                print(json.dumps(answer["event"]), flush=True)
        return 0
    if args.command == "reload":
        for answer in request(args.state_dir, {"cmd": "reload"}):
            print(f"reloaded: {answer['summary']}")
        return 0
    if args.command == "logs":
        # stdout lines to our stdout, stderr lines to our stderr, as the container wrote them
        for answer in request(args.state_dir, {"cmd": "logs", "name": args.name, "follow": args.follow}):
            if "line" in answer:
                out = sys.stderr if answer.get("stream") == "stderr" else sys.stdout
                out.write(f"{answer['time']} {answer['line']}" if args.timestamps else answer["line"])
                out.flush()
        return 0
    return 2


def _exec_with_terminal(state_dir: str, name: str, cmd: list[str]) -> dict[str, Any]:
    """exec -t: the supervisor passes back the pty master; we attach our terminal to it until the
    supervisor sends the exit status."""
    from .console import relay
    from .control import Connection

    conn = Connection(state_dir)
    try:
        from .console import window_size

        conn.send({"cmd": "exec", "name": name, "args": cmd, "tty": True, "size": window_size(0)})
        while (got := conn.receive()) is not None:
            answer, fds = got
            if answer.get("console") and fds:
                try:
                    if not relay(fds[0], conn.fileno()):
                        return {"signal": signal.SIGHUP}  # hung up: closing the connection ends the exec
                finally:
                    for fd in fds:
                        os.close(fd)
            elif "code" in answer or "signal" in answer:
                return answer
        raise ControlError("the supervisor closed the connection")
    finally:
        conn.close()


def _print_ps(rows: list[dict[str, Any]]) -> None:
    def size(n: int | None) -> str:
        if n is None:
            return "-"
        for unit in ("B", "KiB", "MiB", "GiB"):
            if n < 1024 or unit == "GiB":
                return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
            n = n / 1024  # type: ignore[assignment]
        return "-"

    header = ("NAME", "STATE", "HEALTH", "PID", "RESTARTS", "UPTIME", "MEMORY", "PIDS", "CPU", "LAST EXIT")
    table = [header] + [(
        r["name"], r["state"], r.get("health") or "-", str(r["pid"] or "-"), str(r["restarts"]),
        f"{r['uptime']:.0f}s" if r.get("uptime") is not None else "-", size(r.get("memory")),
        str(r.get("pids") or "-"), f"{r['cpu_ns'] / 1e9:.2f}s" if r.get("cpu_ns") is not None else "-",
        r.get("error") or r.get("last_exit") or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def run_manifest(path: str, events_path: str | None, state_dir: str | None = None) -> int:
    from .logs import PrefixedOutput
    from .manifest import load_manifest
    from .supervise import Supervisor

    try:
        manifest = load_manifest(path)
    except SpecError as e:
        _err(str(e))
        return 2
    output = PrefixedOutput(sys.stdout.fileno())
    sup = Supervisor(log_sink=output, move_into_leaf=True)  # this process is the supervisor, nothing else
    for service in manifest.services:  # every container is planned before any starts
        try:
            sup.plan(service)  # as its start will plan it; the Supervisor keeps the plan
        except SpecError as e:
            _err(str(manifest.locate(service.name, e)))
            return 2
    state_dir = state_dir or default_state_dir()
    try:
        lock = acquire_state_dir(state_dir)
    except (ControlError, OSError) as e:
        _err(str(e))
        return 2
    import anyio

    try:  # the library runs on asyncio and trio alike; the command runs on trio
        return anyio.run(_supervise_manifest, sup, output, manifest, events_path, state_dir, backend="trio")
    finally:
        release_state_dir(state_dir, lock)


async def _supervise_manifest(sup: "Supervisor", output: "PrefixedOutput", manifest: "Manifest",
                              events_path: str | None, state_dir: str) -> int:
    import anyio

    from .notify import notify_systemd
    from .states import State

    events_file = open(events_path, "a", encoding="utf-8") if events_path else None
    try:
        async with anyio.create_task_group() as outer:
            async with sup:
                await outer.start(_report_events, sup, events_file)
                signals = anyio.CancelScope()
                shutting_down = anyio.Event()
                reloader = _Reloader(sup, manifest.path, shutting_down)
                outer.start_soon(_handle_signals, sup, signals, outer, shutting_down, reloader)
                control = anyio.CancelScope()
                outer.start_soon(_serve_control, sup, state_dir, control, reloader)
                for service in manifest.services:
                    sup.add(service)
                ready = False
                # Until every container has ended, or, if some were stopped through the control
                # socket (and may be started again), until we are told to shut down.
                while not (all(h._task_done.is_set() for h in sup.handles.values())
                           and (shutting_down.is_set() or not any(h.held for h in sup.handles.values()))):
                    if not ready and all(h.state not in (State.CREATED, State.STARTING)
                                         for h in sup.handles.values()):
                        ready = True  # every container has started (or had its try): systemd's READY
                        notify_systemd("READY=1")
                    await sup.wait_for_change()
                if not shutting_down.is_set():
                    notify_systemd("STOPPING=1")
            signals.cancel()
            control.cancel()
    finally:
        output.close()
        if events_file is not None:
            events_file.close()
    ok = all(h.state == State.STOPPED or (h.state == State.EXITED and h.last_exit is not None
                                          and h.last_exit.code == 0) for h in sup.handles.values())
    return 0 if ok else 1


async def _serve_control(sup: "Supervisor", state_dir: str, scope: "anyio.CancelScope",
                         reloader: "_Reloader") -> None:
    from .control_server import serve

    with scope:
        await serve(sup, state_dir, reload=reloader)


class _Reloader:
    """SIGHUP and ``supervisor reload``: re-read the manifest and apply what changed. One at a
    time; a manifest that no longer loads, or a container that no longer plans, is reported (file,
    line, key) and changes nothing."""

    def __init__(self, sup: "Supervisor", path: str, shutting_down: "anyio.Event") -> None:
        import anyio

        self.sup = sup
        self.path = path
        self.shutting_down = shutting_down
        self._lock = anyio.Lock()

    async def __call__(self) -> dict[str, Any]:
        import time

        import anyio

        from .manifest import load_manifest
        from .notify import notify_systemd

        async with self._lock:
            if self.shutting_down.is_set():  # it would start what the shutdown is stopping
                return {"ok": False, "error": "shutting down: not reloading"}
            notify_systemd(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
            try:
                try:
                    manifest = await anyio.to_thread.run_sync(load_manifest, self.path)
                except SpecError as e:
                    return self._refused(str(e))
                changes = self.sup.changes(manifest.services)
                for name in changes.started + changes.restarted:
                    try:
                        await anyio.to_thread.run_sync(self.sup.plan, manifest.service(name))
                    except SpecError as e:
                        return self._refused(str(manifest.locate(name, e)))
                    except BootstrapError as e:
                        return self._refused(f"{name}: {e.message}")
                changes = await self.sup.reload(manifest.services)
            finally:
                notify_systemd("READY=1")
        _err(f"reloaded {self.path}: {changes}")
        return {"ok": True, "summary": str(changes), "started": changes.started, "restarted": changes.restarted,
                "stopped": changes.stopped, "unchanged": changes.unchanged}

    @staticmethod
    def _refused(error: str) -> dict[str, Any]:
        _err(f"reload refused, nothing changed: {error}")
        return {"ok": False, "error": f"reload refused, nothing changed: {error}"}


async def _report_events(sup: "Supervisor", events_file: "TextIO | None", task_status: Any) -> None:
    """Every event to the events file; exits, failures and restarts to stderr too."""
    async with sup.events() as events:
        task_status.started()
        async for e in events:
            if events_file is not None:
                events_file.write(e.to_json() + "\n")
                events_file.flush()
            if e.event == "exited":
                how = f"code {e.code}" if e.code is not None else f"signal {signal.Signals(e.signal or 0).name}"
                _err(f"{e.container}: exited with {how}")
            elif e.event == "failed":
                _err(f"{e.container}: {e.error}")
            elif e.event == "restarting":
                why = " (unhealthy)" if e.reason == "unhealthy" else ""
                _err(f"{e.container}: restarting in {e.delay:g}s{why}")
            elif e.event == "unhealthy":
                then = ": restarting it" if e.action == "restart" else ""
                _err(f"{e.container}: unhealthy{then}" + (f" ({e.error})" if e.error else ""))


async def _handle_signals(sup: "Supervisor", scope: "anyio.CancelScope", nursery: "TaskGroup",
                          shutting_down: "anyio.Event", reloader: "_Reloader") -> None:
    import anyio

    from .notify import notify_systemd

    with scope, anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as received:
        async for signum in received:
            if signum == signal.SIGHUP:
                if not shutting_down.is_set():
                    nursery.start_soon(reloader)
            elif not shutting_down.is_set():
                shutting_down.set()
                notify_systemd("STOPPING=1")
                sup.wake()
                _err(f"{signal.Signals(signum).name}: stopping every container (again to kill them)")
                nursery.start_soon(sup.stop_all)
            else:
                _err("killing every container")
                sup.kill_all()


def entry() -> None:
    """The command: ``main`` without the interpreter's teardown (see ``supervisor._exit``)."""
    from ._exit import exit_after

    exit_after(main)


if __name__ == "__main__":
    entry()
