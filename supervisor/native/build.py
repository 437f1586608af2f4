"""The cffi (API mode) build of ``supervisor._native``.

It compiles the bootstrap's message parser into a Python extension, so tests run the very C code the
bootstrap runs on the same vectors, and it exposes every ``SV_*`` constant of ``wire.h``: the part of
the header between its CFFI markers is handed to ``cdef`` as it is, so no wire constant is written
twice. ``setup.py`` also builds the bootstrap executable from the same sources.
"""

from pathlib import Path

from cffi import FFI

NATIVE = Path("supervisor") / "native"


def wire_cdef() -> str:
    text = (Path(__file__).parent / "wire.h").read_text()
    return text.split("/* CFFI-BEGIN */")[1].split("/* CFFI-END */")[0]


#: syscalls Python 3.11's os module lacks, for the supervisor's own threads
SYSCALLS = """
int setns(int fd, int nstype);
"""

ffibuilder = FFI()
ffibuilder.cdef(wire_cdef() + SYSCALLS)
ffibuilder.set_source(
    "supervisor._native",
    '#include <sched.h>\n#include "wire.h"',  # Python.h defines _GNU_SOURCE
    sources=[str(NATIVE / "parse.c")],
    include_dirs=[str(NATIVE)],
    extra_compile_args=["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
