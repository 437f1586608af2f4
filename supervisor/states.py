"""The lifecycle of a supervised container: its states, the allowed transitions, and the event each
transition announces. A leaf module: it imports nothing of ours, so every layer can use it.

    CREATED ──► STARTING ──► RUNNING ──► STOPPING ──► EXITED ──► STOPPED
                  │  ▲          │                       │  ▲
                  │  │          └──────────────────────►│  │ (start again)
                  ▼  │                                  ▼  │
                FAILED ◄──────────────────────────── (gave up)
                  │  ▲
                  ▼  │
               RESTARTING ─────────────────────────────► STARTING

Only five transitions are announced (the names of ``supervisor run --events``): entering RUNNING is
``started``, EXITED ``exited``, RESTARTING ``restarting``, FAILED ``failed`` and STOPPED ``stopped``.

Health is a second state beside the lifecycle, for a running container with a health check or
readiness by notification: ``starting`` when it starts running, then ``healthy`` or ``unhealthy``
(both announced, under those names, when they change); None while it does not run.
"""

import enum

__all__ = ["EVENT_OF", "Health", "TERMINAL", "TRANSITIONS", "InvalidTransition", "State", "check_transition"]


class State(enum.Enum):
    CREATED = "created"        # waiting for its dependencies
    STARTING = "starting"      # the bootstrap runs
    RUNNING = "running"        # the workload was exec'd
    STOPPING = "stopping"      # stop signal sent, grace period running
    EXITED = "exited"          # the workload ended; a restart may follow
    RESTARTING = "restarting"  # waiting out the backoff
    FAILED = "failed"          # it could not start, or restarts were given up
    STOPPED = "stopped"        # stopped on request


class Health(enum.Enum):
    STARTING = "starting"      # running, not yet known healthy
    HEALTHY = "healthy"        # its check passed, or it said READY=1
    UNHEALTHY = "unhealthy"    # its check failed ``retries`` times in a row


TRANSITIONS: dict[State, frozenset[State]] = {
    State.CREATED: frozenset({State.STARTING, State.FAILED, State.STOPPED}),
    State.STARTING: frozenset({State.RUNNING, State.FAILED, State.STOPPED}),
    State.RUNNING: frozenset({State.STOPPING, State.EXITED}),
    State.STOPPING: frozenset({State.EXITED}),
    State.EXITED: frozenset({State.RESTARTING, State.FAILED, State.STOPPED, State.STARTING}),
    State.FAILED: frozenset({State.RESTARTING, State.STOPPED, State.STARTING, State.FAILED}),
    State.RESTARTING: frozenset({State.STARTING, State.FAILED, State.STOPPED}),
    State.STOPPED: frozenset({State.STARTING, State.FAILED}),
}

#: the event a transition into a state announces
EVENT_OF: dict[State, str] = {
    State.RUNNING: "started",
    State.EXITED: "exited",
    State.RESTARTING: "restarting",
    State.FAILED: "failed",
    State.STOPPED: "stopped",
}

#: states a container rests in when nothing more will happen to it unless asked
TERMINAL = frozenset({State.EXITED, State.FAILED, State.STOPPED})


class InvalidTransition(RuntimeError):
    pass


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"{old.value} -> {new.value}")
