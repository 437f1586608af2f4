"""supervisor: start, watch and stop Linux containers from asyncio or trio (through anyio).

The public surface is re-exported here; everything else lives in private modules. Importing the
package is cheap: every name but the two errors is loaded on first use, so the one-shot CLI never
pays for anyio or an event loop, and ``supervisor-oci``'s fast commands (``supervisor.oci``) not even
for attrs.
"""

from .errors import BootstrapError, SpecError

#: typing.TYPE_CHECKING without importing typing, which costs the one-shot CLI about 9 ms here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .spec import ContainerSpec
    from ._launch import ExitStatus
    from .container import Container, open_container, run
    from .manifest import Manifest, load_manifest
    from .service import HealthCheck, LogConfig, Policy, Service
    from .states import Health, State
    from .supervise import Event, Handle, Supervisor

__all__ = ["BootstrapError", "Container", "ContainerSpec", "Event", "ExitStatus", "Handle", "Health", "HealthCheck",
           "LogConfig", "Manifest", "Policy", "Service", "SpecError", "State", "Supervisor", "load_manifest",
           "open_container", "run"]

_LAZY = {"ContainerSpec": ".spec", "Container": ".container", "open_container": ".container", "run": ".container",
         "ExitStatus": "._launch", "Manifest": ".manifest", "load_manifest": ".manifest",
         "HealthCheck": ".service", "Health": ".states",
         "LogConfig": ".service", "Policy": ".service", "Service": ".service", "State": ".states",
         "Event": ".supervise", "Handle": ".supervise", "Supervisor": ".supervise"}


def __getattr__(name: str) -> "Any":
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
