"""The ``supervisor`` command.

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

from .errors import BootstrapError, SpecError

__all__ = ["main"]

#: signals a foreground ``run`` passes on to the container, as runc does
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH, signal.SIGCONT)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supervisor", description="Start, watch and stop Linux containers.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run containers in the foreground")
    run.add_argument("--bundle", metavar="DIR", help="an OCI bundle (DIR/config.json and its rootfs)")
    run.add_argument("name", nargs="?", help="the container's name (default: the bundle's directory name)")
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
        the_plan = plan(spec)
    except SpecError as e:
        _err(str(e if e.file else e.with_file(config)))
        return 2
    for field in spec.unapplied_resources():
        _err(f"warning: {name}: {field} is not applied (cgroup limits are not implemented yet)")
    try:
        pid, pidfd = launch_blocking(the_plan, name)
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
    return wait_blocking(pidfd).shell_code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        if args.bundle is None:
            _err("run: --bundle DIR is required (manifests are not implemented yet)")
            return 2
        return run_bundle(args.bundle, args.name)
    return 2


if __name__ == "__main__":
    sys.exit(main())
