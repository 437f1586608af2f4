"""The cffi (API mode) build of ``supervisor._native``.

It compiles the bootstrap's message parser into a Python extension, so tests run the very C code the
bootstrap runs on the same vectors, and it exposes every ``SV_*`` constant of ``wire.h``: the part of
the header between its CFFI markers is handed to ``cdef`` as it is, so no wire constant is written
twice. ``setup.py`` also builds the bootstrap executable from the same sources.
"""

from pathlib import Path

from cffi import FFI

NATIVE = Path("supervisor") / "native"


def header_cdef(name: str) -> str:
    """The declarations between a header's CFFI markers, handed to ``cdef`` as they are."""
    text = (Path(__file__).parent / name).read_text()
    return text.split("/* CFFI-BEGIN */")[1].split("/* CFFI-END */")[0]


def wire_cdef() -> str:
    return header_cdef("wire.h")


#: syscalls Python 3.11's os module lacks, for the supervisor's own threads; bpf(2) for the cgroup v2
#: device programs comes as small helpers (bpf.h), since cffi cannot describe ``union bpf_attr``
SYSCALLS = """
int setns(int fd, int nstype);
""" + header_cdef("bpf.h")

ffibuilder = FFI()
ffibuilder.cdef(wire_cdef() + SYSCALLS)
ffibuilder.set_source(
    "supervisor._native",
    '#include <sched.h>\n#include "wire.h"\n#include "bpf.h"',  # Python.h defines _GNU_SOURCE
    sources=[str(NATIVE / "parse.c"), str(NATIVE / "bpf.c")],
    include_dirs=[str(NATIVE)],
    extra_compile_args=["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
