"""bpf(2) for cgroup v2 device programs: load one, and attach it to a cgroup in place of what was there.

The thin I/O edge under ``cgroups.py``; the program's bytes come from ``devices.py``. The calls go
through the cffi module (``native/bpf.c``), compiled with the package: nothing is compiled at run time.

Lifetime: the program's fd is closed as soon as the program is attached; the cgroup holds it from then
on, and the kernel frees it when the cgroup is removed. Nothing is pinned, nothing is left behind.
While some cgroup still holds a program, another container can be given the same one by its id
(``reopen_device_program``), without loading it again.
"""

import errno
import os

from ._native import ffi, lib

__all__ = ["load_device_program", "attach_device_program", "device_program_ids", "program_identity",
           "reopen_device_program"]

_LOG_SIZE = 1 << 16


def _error(what: str) -> OSError:
    err = ffi.errno
    return OSError(err, f"{what}: {os.strerror(err)}")


def load_device_program(code: bytes, license: bytes) -> int:
    """Load a BPF_PROG_TYPE_CGROUP_DEVICE program; its fd (close-on-exec, as every bpf fd is). A program
    the verifier refuses is loaded again with the log on, and the log is the error's text."""
    insns = ffi.from_buffer(code)
    fd = int(lib.sv_bpf_prog_load_device(insns, len(code) // 8, license, ffi.NULL, 0))
    if fd >= 0:
        return fd
    err = ffi.errno
    log = ffi.new("char[]", _LOG_SIZE)
    lib.sv_bpf_prog_load_device(insns, len(code) // 8, license, log, _LOG_SIZE)
    text = ffi.string(log).decode(errors="replace").strip()
    raise OSError(err, f"load the device program: {os.strerror(err)}" + (f"\n{text}" if text else ""))


def device_program_ids(cgroup_fd: int) -> list[int]:
    """The ids of the device programs attached to this cgroup itself (not its ancestors')."""
    size = 8
    while True:
        ids = ffi.new("uint32_t[]", size)
        count = ffi.new("uint32_t *", size)
        if lib.sv_bpf_query_device(cgroup_fd, ids, count) == 0:
            return [ids[i] for i in range(count[0])]
        if ffi.errno != errno.ENOSPC or size >= 4096:  # ENOSPC: more programs than room
            raise _error("query the device programs")
        size *= 4


def attach_device_program(cgroup_fd: int, prog_fd: int) -> None:
    """Attach the program to the cgroup in place of the device programs it had (none for a new
    cgroup). One old program is replaced atomically (BPF_F_REPLACE); otherwise the new one is attached
    first and the old ones detached after, so the cgroup is never without a program."""
    old = device_program_ids(cgroup_fd)
    if len(old) == 1:
        replace = lib.sv_bpf_prog_fd_by_id(old[0])
        if replace >= 0:
            try:
                if lib.sv_bpf_attach_device(cgroup_fd, prog_fd, replace) == 0:
                    return
                raise _error("replace the device program")
            finally:
                os.close(replace)
    if lib.sv_bpf_attach_device(cgroup_fd, prog_fd, -1) != 0:
        raise _error("attach the device program")
    for prog_id in old:
        fd = lib.sv_bpf_prog_fd_by_id(prog_id)
        if fd < 0:
            continue  # gone meanwhile
        try:
            if lib.sv_bpf_detach_device(cgroup_fd, fd) != 0 and ffi.errno != errno.ENOENT:  # detached already
                raise _error("detach the old device program")
        finally:
            os.close(fd)


#: BPF_PROG_TYPE_CGROUP_DEVICE (linux/bpf.h)
_CGROUP_DEVICE = 15


def program_identity(prog_fd: int) -> tuple[int, bytes]:
    """A loaded program's id and tag (the kernel's hash of its instructions)."""
    kind, prog_id, tag = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("uint8_t[8]")
    if lib.sv_bpf_prog_info(prog_fd, kind, prog_id, tag) != 0:
        raise _error("read the device program's id")
    return int(prog_id[0]), bytes(ffi.buffer(tag))


def reopen_device_program(prog_id: int, tag: bytes) -> int | None:
    """An fd of the device program ``prog_id`` if it is still loaded (some cgroup still holds it) and
    is the one with ``tag``; None otherwise (ids are not reused soon, but the tag makes sure)."""
    fd = int(lib.sv_bpf_prog_fd_by_id(prog_id))
    if fd < 0:
        return None
    kind, got_id, got_tag = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("uint8_t[8]")
    if (lib.sv_bpf_prog_info(fd, kind, got_id, got_tag) != 0 or kind[0] != _CGROUP_DEVICE
            or bytes(ffi.buffer(got_tag)) != tag):
        os.close(fd)
        return None
    return fd
