"""``python tests/systemd_faults.py FAULT ARGS...``: supervisor-oci's main with one failure injected
into the systemd driver, for the tests of what a failed create leaves (against a real systemd, see
``systemd_pid1.py``). Only our own code is patched: systemd, the kernel and the bootstrap are real.

FAULT is one of:
  wait-gives-up  waiting for the start job fails at once, as when systemd does not answer in time (the
                 job is still queued: it runs after the create gave up); the next wait is real
  kill-after     the bootstrap is SIGKILLed once its scope has started (before its cgroup is completed)
"""

import os
import signal
import sys

from supervisor.oci import systemd
from supervisor.oci.main import main


def inject(fault: str) -> None:
    start_scope, wait_job = systemd.Systemd.start_scope, systemd.Systemd._wait_job

    def gives_up(self: systemd.Systemd, job: str) -> str:
        systemd.Systemd._wait_job = wait_job  # type: ignore[method-assign]  # once: undo's stop waits
        raise systemd.SystemdError(f"systemd: no answer in {self.timeout:g} s waiting for job {job} (injected)")

    def kill_after(self: systemd.Systemd, unit: systemd.Unit, pid: int, description: str,
                   extra: list[systemd.Property]) -> None:
        start_scope(self, unit, pid, description, extra)
        os.kill(pid, signal.SIGKILL)

    if fault == "wait-gives-up":
        systemd.Systemd._wait_job = gives_up  # type: ignore[method-assign]
    elif fault == "kill-after":
        systemd.Systemd.start_scope = kill_after  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    inject(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
