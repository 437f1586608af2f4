"""supervisor-oci's state record (``ROOT/ID/fast``): golden bytes from the writer, the native front
end's C parser run on the same bytes through cffi, its strictness, and a fuzz test in which every
input ends where the readable memory ends (garbage in: an error out, never a read past the end)."""

import ctypes
import functools
import mmap
import random
import struct
import pytest

from supervisor._wire import MSG_OCI_STATE, OCI_FORMAT, OCI_MAX_CGROUPS, OCI_MAX_RECORD, OciAttr, ffi, lib
from supervisor.oci.record import Record, RecordError

from .fuzz import netlink_inputs
from .test_wire import nla, string, u32

FULL = Record(pid=4242, start=987654321012, hooks=False,
              cgroups=("/sys/fs/cgroup/memory/default/c1", "/sys/fs/cgroup/freezer/default/c1"),
              freezer=(1, "/sys/fs/cgroup/freezer/default/c1"),
              state=b'"ociVersion": "1.0.2", "id": "c1", "annotations": {}}')


def u64(kind: int, v: int) -> bytes:
    return nla(kind, struct.pack("=Q", v))


def record(*attrs: bytes, kind: int = MSG_OCI_STATE) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def minimal(*more: bytes) -> bytes:
    return record(u32(OciAttr.FORMAT, OCI_FORMAT), u32(OciAttr.PID, 7), u64(OciAttr.START, 9), *more)


def test_golden_full() -> None:
    assert FULL.encode() == record(
        u32(OciAttr.FORMAT, OCI_FORMAT), u32(OciAttr.PID, 4242), u64(OciAttr.START, 987654321012),
        string(OciAttr.CGROUP, "/sys/fs/cgroup/memory/default/c1"),
        string(OciAttr.CGROUP, "/sys/fs/cgroup/freezer/default/c1"),
        string(OciAttr.FREEZER_V1, "/sys/fs/cgroup/freezer/default/c1"),
        nla(OciAttr.STATE, FULL.state or b""))
    assert Record.decode(FULL.encode()) == FULL


def test_golden_minimal_with_hooks_and_a_v2_freezer() -> None:
    r = Record(pid=7, start=9, hooks=True, freezer=(2, "/sys/fs/cgroup/k8s.io/c"))
    assert r.encode() == minimal(u32(OciAttr.HOOKS, 1), string(OciAttr.FREEZER_V2, "/sys/fs/cgroup/k8s.io/c"))
    assert Record.decode(r.encode()) == r


class Parsed:
    """The native front end's view of a record (through cffi), read where the readable memory ends:
    a byte read past the record is a fault, not a silent success."""

    def __init__(self, data: bytes) -> None:
        self.buf = _guarded(data)
        self.rec = ffi.new("struct sv_oci_record *")
        self.err = ffi.new("char[256]")
        self.rc = lib.sv_oci_parse(self.buf, len(data), self.rec, self.err, 256)

    @property
    def error(self) -> str:
        return ffi.string(self.err).decode()

    def cgroups(self) -> list[str]:
        return [ffi.string(self.rec.cgroups[i]).decode() for i in range(self.rec.n_cgroups)]


def test_c_parser_reads_the_golden_vectors() -> None:
    p = Parsed(FULL.encode())
    assert p.rc == 0, p.error
    r = p.rec
    assert (r.pid, r.start, r.hooks) == (4242, 987654321012, 0)
    assert p.cgroups() == list(FULL.cgroups)
    assert (ffi.string(r.freezer).decode(), r.freezer_version) == ("/sys/fs/cgroup/freezer/default/c1", 1)
    assert ffi.buffer(r.state, r.state_len)[:] == FULL.state
    p = Parsed(minimal())
    assert p.rc == 0, p.error
    assert (p.rec.freezer, p.rec.freezer_version, p.rec.state, p.rec.n_cgroups) == (ffi.NULL, 0, ffi.NULL, 0)


def test_a_state_document_too_long_for_an_attribute_is_left_out() -> None:
    """Then ``state`` is the Python side's; the other calls need no state document."""
    long = Record(pid=7, start=9, state=b'"annotations": {"a": "' + b"x" * 70000 + b'"}}')
    p = Parsed(long.encode())
    assert p.rc == 0 and p.rec.state == ffi.NULL
    with pytest.raises(RecordError, match="not a path"):
        Record(pid=7, start=9, cgroups=("/sys/fs/cgroup/" + "d" * 70000,)).encode()


#: what the line-based file of earlier versions held: never taken for a record
OLD_TEXT = b'pid 4242\nstart 987654321012\nhooks 0\ncgroup /sys/fs/cgroup/pids/c1\njson "id": "c1"}\n'


@pytest.mark.parametrize("data, error", [
    (OLD_TEXT, "message type"),
    (b"", "shorter than its header"),
    (minimal()[:15], "shorter than its header"),
    (minimal()[:-2], "header says"),
    (minimal() + b"\0" * 4, "header says"),
    (record(u32(OciAttr.FORMAT, OCI_FORMAT), u32(OciAttr.PID, 7), u64(OciAttr.START, 9), kind=62000),
     "message type 62000"),
    (record(u32(OciAttr.PID, 7), u64(OciAttr.START, 9)), "no format"),
    (record(u32(OciAttr.FORMAT, OCI_FORMAT + 1), u32(OciAttr.PID, 7), u64(OciAttr.START, 9)), "format 2, not 1"),
    (minimal(u32(OciAttr.STATE + 1, 0)), "unknown attribute 9"),
    (minimal(u32(0, 0)), "unknown attribute 0"),
    (minimal(u32(OciAttr.PID, 8)), "attribute 2 repeated"),
    (record(u32(OciAttr.FORMAT, OCI_FORMAT), u32(OciAttr.PID, 0), u64(OciAttr.START, 9)), "pid 0 out of range"),
    (record(u32(OciAttr.FORMAT, OCI_FORMAT), u32(OciAttr.PID, 1 << 31), u64(OciAttr.START, 9)), "out of range"),
    (record(u32(OciAttr.FORMAT, OCI_FORMAT), u64(OciAttr.START, 9)), "no pid"),
    (record(u32(OciAttr.FORMAT, OCI_FORMAT), u32(OciAttr.PID, 7)), "no start time"),
    (record(u32(OciAttr.FORMAT, OCI_FORMAT), u32(OciAttr.PID, 7), u32(OciAttr.START, 9)), "want 8 bytes"),
    (minimal(u32(OciAttr.HOOKS, 2)), "bool is 2"),
    (minimal(nla(OciAttr.CGROUP, b"/sys/fs/cgroup/x")), "not one NUL-terminated string"),
    (minimal(nla(OciAttr.CGROUP, b"/a\0/b\0")), "not one NUL-terminated string"),
    (minimal(string(OciAttr.FREEZER_V1, "/a"), string(OciAttr.FREEZER_V2, "/b")), "two freezers"),
    (minimal(*(string(OciAttr.CGROUP, f"/c{i}") for i in range(OCI_MAX_CGROUPS + 1))), "more than 16"),
    (minimal(struct.pack("=HH", 200, OciAttr.CGROUP) + b"/a\0\0"), "out of bounds"),
    (minimal(b"\x08\0"), "trailing bytes"),
    (record(b"\0" * (OCI_MAX_RECORD - 16 + 1)), "over the limit"),
])
def test_c_parser_is_strict(data: bytes, error: str) -> None:
    p = Parsed(data)
    assert p.rc == -1
    assert error in p.error
    assert p.rec.pid == 0 and p.rec.n_cgroups == 0  # nothing half-read is left for the caller


def test_fuzz_random_and_mutated_records() -> None:
    rng = random.Random(4321)
    seeds = [FULL.encode(), minimal(), Record(pid=1, start=2, hooks=True, freezer=(2, "/x")).encode()]
    parsed = 0
    for data in netlink_inputs(rng, seeds, MSG_OCI_STATE, 0, 20000, random_body=200, max_edits=6):
        p = Parsed(data)
        assert p.rc in (0, -1)
        if p.rc == 0:
            parsed += 1
            r = p.rec
            assert 0 < r.pid < 1 << 31 and r.n_cgroups <= OCI_MAX_CGROUPS
            for j in range(r.n_cgroups):  # each a string inside the record
                assert ffi.string(r.cgroups[j]) is not None
            assert (r.freezer == ffi.NULL) == (r.freezer_version == 0)
    assert parsed > 100  # the mutations reach past the first checks


# -- inputs that end where readable memory ends --------------------------------------------------------

_PAGE = mmap.PAGESIZE
_PAGES = (OCI_MAX_RECORD + 2 * _PAGE) // _PAGE  # room for the largest record; a guard page after
_PROT_NONE = 0


@functools.cache
def _guarded_area() -> tuple[mmap.mmap, int]:
    area = mmap.mmap(-1, (_PAGES + 1) * _PAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(address + _PAGES * _PAGE, _PAGE, _PROT_NONE) == 0, ctypes.get_errno()
    return area, address


def _guarded(data: bytes) -> object:
    """A pointer to a copy of ``data`` whose last byte is the last readable one."""
    area, address = _guarded_area()
    end = _PAGES * _PAGE
    area[end - len(data):end] = data
    return ffi.cast("uint8_t *", address + end - len(data))


def test_the_guard_page_faults() -> None:
    """The guard works: reading the byte after the input's end kills a process that tries."""
    import subprocess
    import sys

    probe = ("from tests.test_oci_record import _guarded\n"
             "p = _guarded(b'x')\n"
             "assert p[0] == ord('x')\nprint('read', flush=True)\n"
             "p[1]\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                            cwd=__file__.rsplit("/tests/", 1)[0])
    assert result.stdout == "read\n" and result.returncode == -11, result
