"""Run a container through the API and collect what it printed; parse the probe's report."""

import os
from collections import defaultdict
from pathlib import Path

import supervisor
from supervisor import _aio


async def run_capture(spec: supervisor.ContainerSpec, name: str = "test",
                      stdin: int | None = None) -> tuple["supervisor.ExitStatus", str]:
    """Run to the end with stdout and stderr on a pipe; return the status and the output."""
    r, w = os.pipe()
    try:
        async with supervisor.open_container(spec, name=name, stdin=stdin, stdout=w, stderr=w) as container:
            os.close(w)
            w = -1
            out = bytearray()
            _aio.nonblocking(r)
            while chunk := await _aio.read(r):
                out += chunk
            status = await container.wait()
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    return status, out.decode()


def parse(report: str) -> dict[str, list[str]]:
    """``key: value`` lines; every key maps to the list of its values, in order."""
    out: dict[str, list[str]] = defaultdict(list)
    for line in report.splitlines():
        key, sep, value = line.partition(":")
        if sep and " " not in key:
            out[key].append(value.removeprefix(" "))
    return out


async def probe(bundle: Path, name: str = "probe") -> dict[str, list[str]]:
    status, out = await run_capture(supervisor.ContainerSpec.from_bundle(bundle), name)
    assert status.code == 0, out
    return parse(out)


def one(report: dict[str, list[str]], key: str) -> str:
    values = report[key]
    assert len(values) == 1, (key, values)
    return values[0]
