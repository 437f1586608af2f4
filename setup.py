"""Build glue that pyproject.toml cannot express: the cffi module and the bootstrap executable.

The bootstrap is a plain C program (it must be single-threaded to setns into user and mount
namespaces), installed inside the package as ``supervisor/_bootstrap``. It is linked statically: no
dynamic loader, and no host library, on the path of every container start. A C library that cannot
link it so stops the build, unless SUPERVISOR_DYNAMIC_BOOTSTRAP=1 asks for a dynamic one.
"""

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

NATIVE = Path("supervisor") / "native"
SOURCES = ["bootstrap.c", "init.c", "hooks.c", "parse.c", "nla.c"]
#: supervisor-oci's native front end (``supervisor-oci install-fast``), linked the same way
OCI_FAST_SOURCES = ["oci_fast.c", "oci_record.c", "oci_call.c", "oci_planner.c", "nla.c"]
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2"]


class BuildWithBootstrap(build_ext):
    """build_ext that also compiles the bootstrap executable next to the extension."""

    def run(self) -> None:
        super().run()
        for target in self._bootstrap_targets("_bootstrap"):
            self._compile_bootstrap(target)
        for target in self._bootstrap_targets("_oci_fast"):
            self._compile_bootstrap(target, OCI_FAST_SOURCES)

    def _bootstrap_targets(self, name: str) -> list[Path]:
        targets = [Path(self.build_lib) / "supervisor" / name]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(Path("supervisor") / name)
        return targets

    def _compile_bootstrap(self, target: Path, source_names: list[str] = SOURCES) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[:1]
        sources = [str(NATIVE / s) for s in source_names]
        base = cc + CFLAGS + ["-o", str(target)] + sources
        try:
            subprocess.run(base + ["-static"], check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            if os.environ.get("SUPERVISOR_DYNAMIC_BOOTSTRAP") != "1":
                raise SystemExit(
                    "error: the bootstrap must be linked statically, and this C library cannot "
                    "(install the static libc: Debian's libc6-dev, Alpine's musl-dev).\n"
                    "A dynamically linked bootstrap loads the libraries of the machine it runs on; set "
                    "SUPERVISOR_DYNAMIC_BOOTSTRAP=1 to build one anyway.\n" + e.stderr.decode(errors="replace"))
            print("WARNING: supervisor's bootstrap is linked dynamically (SUPERVISOR_DYNAMIC_BOOTSTRAP=1)",
                  file=sys.stderr)
            subprocess.run(base, check=True)

    def get_outputs(self) -> list[str]:
        return super().get_outputs() + [str(Path(self.build_lib) / "supervisor" / name)
                                        for name in ("_bootstrap", "_oci_fast")]


setup(
    cffi_modules=["supervisor/native/build.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithBootstrap},
)
