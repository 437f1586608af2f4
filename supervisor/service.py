"""How a container is supervised: ``Service`` = a name, a ``ContainerSpec`` and a ``Policy``.

Pure data, no I/O: the manifest loader (``manifest.py``) and embedders build these; the
``Supervisor`` (``supervise.py``) runs them.
"""

import ipaddress
import signal
from typing import Any, Literal

import attrs

from .errors import SpecError
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
