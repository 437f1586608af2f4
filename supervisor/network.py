"""Container networks from the host side, with pyroute2: a veth pair per container, its host end on a
bridge, its other end ``eth0`` in the container with addresses and routes.

Theory of operation. The work happens while the container's init waits at the sync point (after its
pid is known, before it runs anything), in worker threads: pyroute2's ``IPRoute`` is blocking and
runs its own event loop, so each one is created, used and closed inside one ``anyio.to_thread.run_sync`` call,
under a ``CapacityLimiter``. The host side (bridge, veth, the host end up and on the bridge) is done in
the host's network namespace; the peer is created directly in the container's (``net_ns_pid``). The
container side is done by the same thread after ``setns(CLONE_NEWNET)`` into the container's
namespace (a thread's namespace is its own), and the thread switches back before it returns to the
pool. ``lo`` is brought up by the bootstrap itself.

Addresses left out are allocated from the bridge's subnet (the gateway's network), lowest free first,
never one in use by another container of this supervisor. A bridge the supervisor created is removed
when its last container is gone; an existing one is left alone.
"""

import errno
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import anyio

from ._native import ffi, lib
from .errors import BootstrapError
from .service import NetworkConfig
from .spec import NAMESPACE_TYPES

__all__ = ["Attachment", "Networks"]

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@attrs.frozen
class Attachment:
    """What ``attach`` made for one container, for ``detach``."""

    host_ifname: str
    bridge: str
    addresses: tuple[str, ...]


class Networks:
    """The bridges, addresses and veths of one supervisor's containers."""

    def __init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(4)
        self._locks: dict[str, anyio.Lock] = {}  # a bridge is made, joined and removed one at a time
        self._users: dict[str, set[str]] = {}
        self._created: set[str] = set()
        self._in_use: dict[str, set[Address]] = {}

    def _gateway(self, cfg: NetworkConfig) -> Interface | None:
        if cfg.gateway is None:
            return None
        gw = ipaddress.ip_interface(cfg.gateway)
        if "/" not in cfg.gateway and cfg.addresses:  # the prefix of the container's own address
            gw = ipaddress.ip_interface(f"{gw.ip}/{ipaddress.ip_interface(cfg.addresses[0]).network.prefixlen}")
        return gw

    def _allocate(self, name: str, cfg: NetworkConfig) -> tuple[str, ...]:
        assert cfg.bridge is not None
        used = self._in_use.setdefault(cfg.bridge, set())
        if cfg.addresses:
            chosen = tuple(cfg.addresses)
        else:
            gw = self._gateway(cfg)
            assert gw is not None
            if "/" not in (cfg.gateway or ""):
                gw = ipaddress.ip_interface(f"{gw.ip}/24")
            for host in gw.network.hosts():
                if host != gw.ip and host not in used:
                    chosen = (f"{host}/{gw.network.prefixlen}",)
                    break
            else:
                raise BootstrapError(0, "network", "allocate an address", f"{name} on {cfg.bridge} (all in use)")
        for a in chosen:
            ip = ipaddress.ip_interface(a).ip
            if ip in used:
                raise BootstrapError(0, "network", "assign", f"{a} to {name}: {cfg.bridge} has it already")
        used.update(ipaddress.ip_interface(a).ip for a in chosen)
        return chosen

    async def attach(self, name: str, cfg: NetworkConfig, pid: int) -> Attachment:
        """Give container ``name`` (its init: ``pid``) its network; undone by ``detach``."""
        assert cfg.bridge is not None
        addresses = self._allocate(name, cfg)
        attachment = Attachment(f"svh{pid}", cfg.bridge, addresses)
        self._users.setdefault(cfg.bridge, set()).add(name)
        made: list[bool] = []  # _attach says, as soon as it has made the bridge
        try:
            async with self._locks.setdefault(cfg.bridge, anyio.Lock()):
                await anyio.to_thread.run_sync(_attach, cfg, pid, attachment, self._gateway(cfg), made,
                                              limiter=self._limiter)
        except BaseException:
            if made:
                self._created.add(cfg.bridge)
            with anyio.CancelScope(shield=True):
                await self.detach(name, attachment)
            raise
        if made:
            self._created.add(cfg.bridge)
        return attachment

    async def detach(self, name: str, attachment: Attachment) -> None:
        users = self._users.get(attachment.bridge, set())
        users.discard(name)
        for a in attachment.addresses:
            self._in_use.get(attachment.bridge, set()).discard(ipaddress.ip_interface(a).ip)
        async with self._locks.setdefault(attachment.bridge, anyio.Lock()):
            # decided under the lock: an attach to this bridge cannot be halfway meanwhile
            remove_bridge = not users and attachment.bridge in self._created
            if remove_bridge:
                self._created.discard(attachment.bridge)
            await anyio.to_thread.run_sync(_detach, attachment.host_ifname,
                                          attachment.bridge if remove_bridge else None, limiter=self._limiter)


def _ipr() -> Any:
    from pyroute2 import IPRoute  # the whole of pyroute2: only when a container has a network

    return IPRoute()


def _lookup(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _attach(cfg: NetworkConfig, pid: int, attachment: Attachment, gateway: Interface | None,
            made: list[bool]) -> None:
    """In a worker thread: the host side, then the container side. Appends to ``made`` the moment
    it has made the bridge, so that a failure later still removes it."""
    assert cfg.bridge is not None
    peer = f"svc{pid}"
    try:
        with _ipr() as ipr:
            bridge = _lookup(ipr, cfg.bridge)
            if bridge is None:
                try:
                    ipr.link("add", ifname=cfg.bridge, kind="bridge")
                    made.append(True)
                except Exception as e:
                    if getattr(e, "code", None) != errno.EEXIST:
                        raise  # (another supervisor made it meanwhile: use theirs)
                bridge = _lookup(ipr, cfg.bridge)
                if gateway is not None:
                    ipr.addr("add", index=bridge, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
                ipr.link("set", index=bridge, state="up")
            ipr.link("add", ifname=attachment.host_ifname, kind="veth", peer={"ifname": peer, "net_ns_pid": pid})
            host = _lookup(ipr, attachment.host_ifname)
            extra = {"mtu": cfg.mtu} if cfg.mtu else {}
            ipr.link("set", index=host, master=bridge, state="up", **extra)
        with _in_netns(pid), _ipr() as ipr:
            index = _lookup(ipr, peer)
            ipr.link("set", index=index, ifname=cfg.ifname, **({"mtu": cfg.mtu} if cfg.mtu else {}))
            for a in attachment.addresses:
                iface = ipaddress.ip_interface(a)
                ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            ipr.link("set", index=index, state="up")
            if gateway is not None:
                ipr.route("add", dst="default" if gateway.version == 4 else "::/0", gateway=str(gateway.ip),
                          family=2 if gateway.version == 4 else 10)
            for r in cfg.routes:
                ipr.route("add", dst=r.dst, **({"gateway": r.via} if r.via else {"oif": index}))
    except OSError as e:
        raise BootstrapError(e.errno or 0, "network", "set up", f"{cfg.ifname} on {cfg.bridge}: {e}") from None
    except Exception as e:  # pyroute2's NetlinkError (not an OSError in 0.9) and the like
        raise BootstrapError(0, "network", "set up", f"{cfg.ifname} on {cfg.bridge}: {e}") from None


def _detach(host_ifname: str, bridge: str | None) -> None:
    from pyroute2.netlink.exceptions import NetlinkError  # not an OSError in pyroute2 0.9

    with _ipr() as ipr:
        for ifname in (host_ifname, bridge):
            index = _lookup(ipr, ifname) if ifname else None
            if index is not None:
                try:
                    ipr.link("del", index=index)
                except (OSError, NetlinkError):
                    pass  # the veth went with the container's namespace meanwhile


@contextmanager
def _in_netns(pid: int) -> Iterator[None]:
    """This thread in the network namespace of ``pid``, and back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if lib.setns(target, NAMESPACE_TYPES["network"]) != 0:
            raise OSError(ffi.errno, os.strerror(ffi.errno), f"/proc/{pid}/ns/net")
        try:
            yield
        finally:
            if lib.setns(own, NAMESPACE_TYPES["network"]) != 0:
                # a pool thread left in a container's namespace would do later work there
                os.abort()
    finally:
        os.close(own)
        os.close(target)
