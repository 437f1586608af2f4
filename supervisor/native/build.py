"""The cffi (API mode) build of ``supervisor._native``.

It compiles the bootstrap's message parser, and the parser of supervisor-oci's state record, into a
Python extension, so tests run the very C code the bootstrap and the native front end run on the same
vectors, and it exposes every ``SV_*`` constant of ``nla.h``, ``wire.h`` and ``oci_record.h``: the part
of each header between its CFFI markers is handed to ``cdef`` as it is, so no wire constant is written
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
    """The payload types (nla.h), the bootstrap message's constants (wire.h), supervisor-oci's state
    record's (oci_record.h) and the planner protocol's (oci_planner.h)."""
    return header_cdef("nla.h") + header_cdef("wire.h") + header_cdef("oci_record.h") + header_cdef("oci_planner.h")


#: syscalls Python 3.11's os module lacks, for the supervisor's own threads; bpf(2) for the cgroup v2
#: device programs comes as small helpers (bpf.h), since cffi cannot describe ``union bpf_attr``
SYSCALLS = """
int setns(int fd, int nstype);
""" + header_cdef("bpf.h")

ffibuilder = FFI()
ffibuilder.cdef(wire_cdef() + SYSCALLS)
ffibuilder.set_source(
    "supervisor._native",
    # Python.h defines _GNU_SOURCE
    '#include <sched.h>\n#include "wire.h"\n#include "oci_record.h"\n#include "oci_planner.h"\n#include "bpf.h"',
    sources=[str(NATIVE / name) for name in ("nla.c", "parse.c", "oci_record.c", "oci_planner.c", "bpf.c")],
    include_dirs=[str(NATIVE)],
    extra_compile_args=["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
