"""How a container is supervised: ``Service`` = a name, a ``ContainerSpec`` and a ``Policy``.

Pure data, no I/O: the manifest loader (``manifest.py``) and embedders build these; the
``Supervisor`` (``supervise.py``) runs them.
"""

import signal
from typing import Literal

import attrs

from .spec import ContainerSpec

__all__ = ["RESTART_POLICIES", "LogConfig", "Policy", "Service"]

RestartPolicy = Literal["no", "on-failure", "always"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("no", "on-failure", "always")


@attrs.frozen
class Policy:
    """Supervision of one container.

    ``restart``: ``no`` never restarts; ``on-failure`` restarts after a non-zero exit, a death by
    signal or a failed start; ``always`` restarts after any end that was not a requested stop.
    ``max_restarts`` (None: no limit) ends the restarts with a ``failed`` event. The delay before a
    restart starts at ``backoff_initial`` and doubles up to ``backoff_max``; a run that lasted
    ``stable_after`` seconds resets it. A stop sends ``stop_signal``, waits ``stop_timeout`` seconds,
    then SIGKILL. ``depends_on`` names the containers that must be running before this one starts.
    """

    restart: RestartPolicy = "no"
    max_restarts: int | None = None
    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    stable_after: float = 10.0
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = 10.0
    depends_on: tuple[str, ...] = ()

    def backoff(self, failures_in_a_row: int) -> float:
        """The delay before restart number ``failures_in_a_row`` (1 for the first)."""
        return min(self.backoff_max, self.backoff_initial * 2.0 ** max(0, failures_in_a_row - 1))


@attrs.frozen
class LogConfig:
    """Where a container's output goes besides the supervisor's own log: a file, rotated by size."""

    file: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3


@attrs.frozen
class Service:
    name: str
    spec: ContainerSpec
    policy: Policy = Policy()
    log: LogConfig = LogConfig()
