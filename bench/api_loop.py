#!/usr/bin/env python3
"""api_loop.py [-n N] [--warmup W] [--base DIR] [--json PATH]

One container life through the Python API, measured from a warm Python process, next to the same
number of unshare+chroot lives started from the same warm process (so the ratio is like for like):

  api          N sequential ``await supervisor.run(spec, name=...)`` in one ``trio.run`` (also: without
               a cgroup, without ``linux.resources``, with the encoder's caches emptied)
  subprocess   N sequential ``subprocess.run(UNSHARE_ARGV, check=True)``
  posix_spawn  N sequential ``os.posix_spawn(UNSHARE_ARGV)`` + ``os.waitpid``

UNSHARE_ARGV = ``unshare --pid --net --ipc --uts --mount --fork chroot BASE/bundle/rootfs /bin/true``;
the API runs ``BASE/bundle`` (the same rootfs, /bin/true, pid,net,ipc,uts,mount namespaces).
Each row: W warm-up lives, then N timed ones. Per life: median/min/max wall ms, this process's own
CPU (``time.process_time`` delta / N) and its reaped children's CPU (``RUSAGE_CHILDREN`` delta / N).
Run it under ../shared/bench/in-bench-ns.sh (run.sh does), like every other row.
Exits 1 if a row failed (the other rows are still measured and written).
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import supervisor
import supervisor.bootstrap

Life = Callable[[int], Awaitable[None]]


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


async def measure(life: Life, n: int, warmup: int) -> dict[str, Any]:
    try:
        for i in range(warmup):
            await life(i)
        walls: list[float] = []
        cpu0, child0 = time.process_time(), children_cpu()
        for i in range(warmup, warmup + n):
            t = time.perf_counter()
            await life(i)
            walls.append((time.perf_counter() - t) * 1e3)
        cpu, child = (time.process_time() - cpu0) * 1e3 / n, (children_cpu() - child0) * 1e3 / n
    except Exception as e:
        traceback.print_exc()
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": True, "median_ms": statistics.median(walls), "min_ms": min(walls), "max_ms": max(walls),
            "self_cpu_ms": cpu, "children_cpu_ms": child, "wall_ms": walls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=int(os.environ.get("RUNS", 50)))
    ap.add_argument("--warmup", type=int, default=int(os.environ.get("WARMUP", 5)))
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/bench"))
    ap.add_argument("--json", help="write the results here")
    o = ap.parse_args()

    bundle = os.path.join(o.base, "bundle")
    spec = supervisor.ContainerSpec.from_bundle(bundle)
    unshare = shutil.which("unshare") or "unshare"
    argv = [unshare, "--pid", "--net", "--ipc", "--uts", "--mount", "--fork",
            "chroot", os.path.join(bundle, "rootfs"), "/bin/true"]
    tag = f"api-{os.getpid()}"

    async def api(i: int) -> None:
        status = await supervisor.run(spec, name=f"{tag}-{i}")
        if status.code != 0:
            raise RuntimeError(f"container {tag}-{i} {status}")

    # like unshare: no cgroup, hence no device rules either (runc's default config has one)
    no_cgroup = supervisor.spec.attrs.evolve(spec, annotations={**spec.annotations, "supervisor.cgroup": "false"},
                                             resources=None)

    async def api_no_cgroup(i: int) -> None:
        status = await supervisor.run(no_cgroup, name=f"{tag}-n{i}")
        if status.code != 0:
            raise RuntimeError(f"container {tag}-n{i} {status}")

    # no linux.resources at all: the container still gets runc's default device rules
    no_resources = supervisor.spec.attrs.evolve(spec, resources=None)

    async def api_no_resources(i: int) -> None:
        status = await supervisor.run(no_resources, name=f"{tag}-r{i}")
        if status.code != 0:
            raise RuntimeError(f"container {tag}-r{i} {status}")

    async def api_cold(i: int) -> None:
        # the same life with the encoder's caches emptied: what a container never seen before costs
        supervisor.bootstrap._encode.cache_clear()
        supervisor.bootstrap._nested.cache_clear()
        await api(i)

    async def via_subprocess(_: int) -> None:
        subprocess.run(argv, check=True)

    async def via_posix_spawn(_: int) -> None:
        pid = os.posix_spawn(unshare, argv, os.environ)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code:
            raise RuntimeError(f"exit {code}: {' '.join(argv)}")

    lives: dict[str, tuple[str, Life]] = {
        "api": ("supervisor.run() (trio API)", api),
        "api_no_cgroup": ("supervisor.run(), no cgroup (like unshare)", api_no_cgroup),
        "api_no_resources": ("supervisor.run(), no linux.resources", api_no_resources),
        "api_cold": ("supervisor.run(), encoder caches cleared", api_cold),
        "subprocess": ("unshare+chroot via subprocess.run", via_subprocess),
        "posix_spawn": ("unshare+chroot via posix_spawn+waitpid", via_posix_spawn),
    }
    rows: dict[str, dict[str, Any]] = {}

    async def all_rows() -> None:
        for key, (label, life) in lives.items():
            rows[key] = {"label": label, **await measure(life, o.n, o.warmup)}

    trio.run(all_rows)

    print(f"\n{o.n} sequential lives per row after {o.warmup} warm-ups, one warm {sys.executable} (ms per life)")
    print(f"{'row':40} {'median':>7} {'min':>7} {'max':>7} {'own cpu':>8} {'child cpu':>9}")
    for r in rows.values():
        if r["ok"]:
            print(f"{r['label']:40} {r['median_ms']:7.2f} {r['min_ms']:7.2f} {r['max_ms']:7.2f} "
                  f"{r['self_cpu_ms']:8.2f} {r['children_cpu_ms']:9.2f}")
        else:
            print(f"{r['label']:40} FAILED: {r['error']}")
    ratios: dict[str, float] = {}
    for ref in ("posix_spawn", "subprocess"):
        if rows["api"]["ok"] and rows[ref]["ok"]:
            ratios[f"api/{ref}"] = rows["api"]["median_ms"] / rows[ref]["median_ms"]
            print(f"ratio API / unshare+chroot ({ref}), medians: {ratios[f'api/{ref}']:.2f}x")
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"n": o.n, "warmup": o.warmup, "python": sys.executable, "bundle": bundle,
                       "unshare_argv": argv, "rows": rows, "ratios": ratios}, f, indent=1)
    return 0 if all(r["ok"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
