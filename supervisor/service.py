"""How a container is supervised: ``Service`` = a name, a ``ContainerSpec`` and a ``Policy``.

Pure data, no I/O: the manifest loader (``manifest.py``) and embedders build these; the
``Supervisor`` (``supervise.py``) runs them.
"""

import ipaddress
import re
import signal
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from .errors import SpecError
from .spec import ContainerSpec

__all__ = ["CONDITIONS", "RESTART_POLICIES", "HealthCheck", "LogConfig", "Policy", "Service", "health_test",
           "parse_duration"]

RestartPolicy = Literal["no", "on-failure", "always"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("no", "on-failure", "always")

Condition = Literal["started", "healthy", "completed"]
#: what ``depends_on`` may wait for: compose's service_started, service_healthy and
#: service_completed_successfully
CONDITIONS: tuple[Condition, ...] = ("started", "healthy", "completed")


def health_test(test: Sequence[str] | str) -> tuple[str, ...] | None:
    """A health check's ``test`` in compose's forms, as the argv to exec: ``["CMD", prog, args...]``
    is that argv; ``["CMD-SHELL", "line"]`` (or a plain string) is ``/bin/sh -c line``;
    ``["NONE"]`` is no check (None). A list that starts with none of these words is an argv
    already (``["/bin/sh", "-c", "..."]``). Raises ``ValueError`` for an empty or malformed test."""
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    test = list(test)
    if not test or not all(isinstance(a, str) for a in test):
        raise ValueError("expected a non-empty list of strings")
    if test[0] == "NONE":
        if len(test) != 1:
            raise ValueError('["NONE"] takes nothing after it')
        return None
    if test[0] == "CMD-SHELL":
        if len(test) != 2 or not test[1]:
            raise ValueError('expected ["CMD-SHELL", "a shell command line"]')
        return ("/bin/sh", "-c", test[1])
    if test[0] == "CMD":
        test = test[1:]
    if not test or not test[0]:
        raise ValueError("no program to run")
    return tuple(test)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a compose duration (``"1m30s"``, ``"500ms"``, ``"2h"``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected seconds or a duration like \"1m30s\", got {value!r}")
    if isinstance(value, int | float):
        if not 0 <= value < float("inf"):
            raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str) and value and _DURATION.sub("", value) == "":
        return sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(value))
    raise ValueError(f"expected seconds or a duration like \"1m30s\", got {value!r}")


def _test_argv(test: Sequence[str] | str) -> tuple[str, ...]:
    argv = health_test(test)
    if argv is None:
        raise ValueError('["NONE"] is no health check: give the policy healthcheck=None')
    return argv


@attrs.frozen
class HealthCheck:
    """A check run inside the container (``Container.exec``: its namespaces, cgroup, user and
    environment) every ``interval`` seconds, the first one ``interval`` after the start; it passes
    when it exits 0 within ``timeout``. ``retries`` failures in a row make the container unhealthy;
    a failure within ``start_period`` of the start does not count (unless it was healthy once).
    compose's names, meanings and defaults (30 s, 30 s, 3, 0); ``test`` takes compose's forms (see
    ``health_test``) and keeps the argv."""

    test: tuple[str, ...] = attrs.field(converter=_test_argv)
    interval: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    retries: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    start_period: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))


def _conditions(value: Mapping[str, Condition] | Sequence[tuple[str, Condition]]) -> tuple[tuple[str, Condition], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items if v != "started"))


@attrs.frozen
class Policy:
    """Supervision of one container.

    ``restart``: ``no`` never restarts; ``on-failure`` restarts after a non-zero exit, a death by
    signal or a failed start; ``always`` restarts after any end that was not a requested stop.
    ``max_restarts`` (None: no limit) ends the restarts with a ``failed`` event. The delay before a
    restart starts at ``backoff_initial`` and doubles up to ``backoff_max``; a run that lasted
    ``stable_after`` seconds resets it. A stop sends ``stop_signal``, waits ``stop_timeout`` seconds,
    then SIGKILL. ``depends_on`` names the containers that must be running before this one starts;
    ``conditions`` says, for some of them, to wait for more than a start (see ``CONDITIONS``).
    ``healthcheck``: a ``HealthCheck``; ``notify``: the workload says when it is ready, systemd's
    way (``NOTIFY_SOCKET``, ``READY=1``).
    """

    restart: RestartPolicy = "no"
    max_restarts: int | None = None
    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    stable_after: float = 10.0
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = 10.0
    depends_on: tuple[str, ...] = ()
    conditions: tuple[tuple[str, Condition], ...] = attrs.field(default=(), converter=_conditions)
    healthcheck: HealthCheck | None = None
    notify: bool = False

    @conditions.validator
    def _check_conditions(self, _: object, value: tuple[tuple[str, Condition], ...]) -> None:
        for name, condition in value:
            if condition not in CONDITIONS:
                raise ValueError(f"{name}: the condition {condition!r} is none of {', '.join(CONDITIONS)}")
            if name not in self.depends_on:
                raise ValueError(f"a condition for {name}, which is not in depends_on")

    def condition(self, name: str) -> Condition:
        """What this container waits for of its dependency ``name``."""
        return dict(self.conditions).get(name, "started")

    @property
    def has_health(self) -> bool:
        """Whether the container has a health state (a check, or readiness by notification)."""
        return self.healthcheck is not None or self.notify

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
class Route:
    dst: str          # "default" or a network, "192.0.2.0/24"
    via: str | None = None


@attrs.frozen
class NetworkConfig:
    """A container's network: a bridge to join, or another container's network namespace."""

    bridge: str | None = None
    addresses: tuple[str, ...] = ()   # "10.0.0.2/24", "fd00::2/64"; none: allocated
    gateway: str | None = None        # "10.0.0.1" or "10.0.0.1/24" (the bridge's address)
    mtu: int | None = None
    ifname: str = "eth0"
    routes: tuple[Route, ...] = ()
    container: str | None = None      # "container:NAME": join NAME's network namespace


def parse_network(value: Any, field: str) -> NetworkConfig:
    """The manifest's ``network``: a table, or ``"container:NAME"``."""
    if isinstance(value, str):
        if not value.startswith("container:") or not value[len("container:"):]:
            raise SpecError(field, f'expected a table or "container:NAME", got "{value}"')
        return NetworkConfig(container=value[len("container:"):])
    if not isinstance(value, dict):
        raise SpecError(field, "expected a table or \"container:NAME\"")
    known = {"bridge", "address", "addresses", "gateway", "mtu", "ifname", "routes"}
    for key in value:
        if key not in known:
            raise SpecError(f"{field}.{key}", "unknown key")
    bridge = value.get("bridge")
    if not isinstance(bridge, str) or not 0 < len(bridge) <= 15:
        raise SpecError(f"{field}.bridge", "required: an interface name of at most 15 characters")
    addresses = list(value.get("addresses", []))
    if "address" in value:
        addresses.insert(0, value["address"])
    for i, a in enumerate(addresses):
        try:
            ipaddress.ip_interface(a)
        except ValueError:
            raise SpecError(f"{field}.addresses[{i}]", f"not an address with a prefix: {a!r}") from None
    gateway = value.get("gateway")
    if gateway is not None:
        try:
            ipaddress.ip_interface(gateway)
        except ValueError:
            raise SpecError(f"{field}.gateway", f"not an address: {gateway!r}") from None
    elif not addresses:
        raise SpecError(f"{field}.gateway", "needed to allocate an address (or give one)")
    routes = []
    for i, r in enumerate(value.get("routes", [])):
        if not isinstance(r, dict) or not isinstance(r.get("dst"), str):
            raise SpecError(f"{field}.routes[{i}]", "expected {dst = \"NET\", via = \"ADDRESS\"}")
        routes.append(Route(r["dst"], r.get("via")))
    mtu = value.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        raise SpecError(f"{field}.mtu", f"expected 68..65535, got {mtu!r}")
    ifname = value.get("ifname", "eth0")
    if not isinstance(ifname, str) or not 0 < len(ifname) <= 15:
        raise SpecError(f"{field}.ifname", "an interface name of at most 15 characters")
    return NetworkConfig(bridge, tuple(addresses), gateway, mtu, ifname, tuple(routes))


@attrs.frozen
class Service:
    name: str
    spec: ContainerSpec
    policy: Policy = Policy()
    log: LogConfig = LogConfig()
    #: a veth on a bridge, or another container's network namespace; None: what the spec says
    network: NetworkConfig | None = None
