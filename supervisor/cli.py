"""The ``supervisor`` command.

``supervisor run MANIFEST`` runs a manifest's containers in the foreground under the ``Supervisor``:
their output with the container's name in front, one line on stderr per exit, failure and restart,
``--events FILE`` appending every event as a JSON line. SIGINT or SIGTERM stops every container
gracefully (dependents first); a second SIGINT kills them at once. It exits 0 when every container
ended with code 0 (or was stopped on request) and none failed, 1 otherwise, 2 for a bad manifest.

``supervisor run --bundle DIR [NAME]`` runs one OCI bundle in the foreground, as ``runc run`` does:
stdio passed through, signals forwarded to the container's init, and the workload's exit code (or
128+N when signal N killed it) as ours. A container that cannot start prints
``supervisor: NAME: <what failed>: <why>`` and exits 127 (not found), 126 (not executable) or 125;
a bad bundle exits 2. This path is blocking and trio-free: its start-up cost is part of every
one-shot run.
"""

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .errors import BootstrapError, SpecError

if TYPE_CHECKING:
    import trio

    from .service import Service
    from .supervise import Supervisor

__all__ = ["main"]

#: signals a foreground ``run`` passes on to the container, as runc does
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH, signal.SIGCONT)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supervisor", description="Start, watch and stop Linux containers.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run containers in the foreground",
                         usage="supervisor run MANIFEST [--events FILE] | supervisor run --bundle DIR [NAME]")
    run.add_argument("--bundle", metavar="DIR", help="an OCI bundle (DIR/config.json and its rootfs)")
    run.add_argument("--events", metavar="FILE", help="append every event to FILE as a JSON line")
    run.add_argument("target", nargs="?", metavar="MANIFEST|NAME",
                     help="a manifest (TOML); with --bundle, the container's name (default: the directory's)")
    return parser


def _err(text: str) -> None:
    print(f"supervisor: {text}", file=sys.stderr, flush=True)


def run_bundle(bundle: str, name: str | None) -> int:
    from ._launch import launch_blocking, wait_blocking
    from .plan import plan
    from .spec import ContainerSpec

    name = name or os.path.basename(os.path.abspath(bundle))
    config = os.path.join(bundle, "config.json")
    try:
        spec = ContainerSpec.from_bundle(bundle)
        the_plan = plan(spec, name)
    except SpecError as e:
        _err(str(e if e.file else e.with_file(config)))
        return 2
    try:
        pid, pidfd, cgroup = launch_blocking(the_plan, name)
    except BootstrapError as e:
        _err(f"{name}: {e.message}")
        return e.exit_code
    except SpecError as e:
        _err(str(e.with_file(config)))
        return 2

    def forward(signum: int, _frame: object) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    status = wait_blocking(pidfd, cgroup)
    if status.oom_killed:
        _err(f"{name}: {status}")
    return status.shell_code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        if args.bundle is not None:
            return run_bundle(args.bundle, args.target)
        if args.target is None:
            _err("run: give a manifest, or --bundle DIR")
            return 2
        return run_manifest(args.target, args.events)
    return 2


def run_manifest(path: str, events_path: str | None) -> int:
    from .manifest import load_manifest

    from .plan import plan

    try:
        manifest = load_manifest(path)
    except SpecError as e:
        _err(str(e))
        return 2
    for service in manifest.services:  # every container is planned before any starts
        try:
            plan(service.spec)
        except SpecError as e:
            _err(str(manifest.locate(service.name, e)))
            return 2
    import trio

    return trio.run(_supervise_manifest, manifest.services, events_path)


async def _supervise_manifest(services: "tuple[Service, ...]", events_path: str | None) -> int:
    import trio

    from .logs import PrefixedOutput
    from .states import State
    from .supervise import Supervisor

    events_file = open(events_path, "a", encoding="utf-8") if events_path else None
    try:
        async with trio.open_nursery() as outer:
            async with Supervisor(log_sink=PrefixedOutput(sys.stdout.fileno())) as sup:
                await outer.start(_report_events, sup, events_file)
                signals = trio.CancelScope()
                outer.start_soon(_handle_signals, sup, signals, outer)
                for service in services:
                    sup.add(service)
            signals.cancel()
    finally:
        if events_file is not None:
            events_file.close()
    ok = all(h.state == State.STOPPED or (h.state == State.EXITED and h.last_exit is not None
                                          and h.last_exit.code == 0) for h in sup.handles.values())
    return 0 if ok else 1


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
                _err(f"{e.container}: restarting in {e.delay:g}s")


async def _handle_signals(sup: "Supervisor", scope: "trio.CancelScope", nursery: "trio.Nursery") -> None:
    import trio

    with scope, trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        stopping = False
        async for signum in received:
            if not stopping:
                stopping = True
                _err(f"{signal.Signals(signum).name}: stopping every container (again to kill them)")
                nursery.start_soon(sup.stop_all)
            else:
                _err("killing every container")
                sup.kill_all()


if __name__ == "__main__":
    sys.exit(main())
