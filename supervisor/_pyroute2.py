"""pyroute2's netlink message classes, without the cost of importing all of pyroute2.

``import pyroute2`` runs a package ``__init__`` that imports every socket class it has (about 150 ms
here); the message classes in ``pyroute2.netlink`` need none of that. The spawn path of every
container, and the one-shot CLI, only need the message classes. So when nobody has imported pyroute2
yet, the package module is created without running its ``__init__``; the first access to a name that
only ``__init__`` defines (``pyroute2.IPRoute``, say) runs it then, on the same module object, so
later users see the ordinary package.
"""

import importlib.util
import sys
import types


class _LazyPackage(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # an ordinary module from now on
        spec.loader.exec_module(self)
        return getattr(self, name)


def _install() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        raise ImportError("pyroute2 is not installed")
    package = importlib.util.module_from_spec(spec)
    package.__class__ = _LazyPackage
    sys.modules["pyroute2"] = package


_install()

from pyroute2.netlink import NLM_F_REQUEST, nla, nlmsg

__all__ = ["NLM_F_REQUEST", "nla", "nlmsg"]
