#!/usr/bin/env python3
"""concurrency.py [--n N ...] [--reps N:R,...] [--slow-reps R] [--base DIR] [--json PATH]

Containers started and reaped per second: N containers started at once, all waited for, every exit
code checked to be 0. Each runs ``/bin/sh -c 'exit 0'`` (``BASE/bundle-sh``, pid,net,ipc,uts,mount
namespaces), like the shared ``concurrent.sh``. Rows, all from this one process (shared conditions):

  supervisor   one ``trio.run``: ``async with Supervisor() as sup``, N ``sup.add(Service(f"c{i}", spec))``,
               timed until the block is left (every container reaped, every task done)
  unshare      N ``os.posix_spawn`` of ``unshare --pid --net --ipc --uts --mount --fork chroot RF /bin/sh -c
               'exit 0'``, then N ``os.waitpid`` (all started, then all waited, as concurrent.sh does)
  bwrap        the same with common.sh's BWRAP1 (``bwrap --as-pid-1 ...``)
  crun         the same with ``crun --root BASE/crun-root run --bundle BASE/bundle-sh c-<pid>-<N>-<rep>-<i>``
  shell        informational: the shared ``concurrent.sh unshare N`` itself (bash ``&`` + ``wait``), to tie these
               rows to the shared README's table

The peers get stdin and stdout on /dev/null and stderr in a temporary file (shown if a run fails).
One untimed warm-up of every row (N=20) first; then for each N the rows take turns, in an order
rotated every repetition, R repetitions each (crun at N >= 1000: at most --slow-reps). Per row: median
(min-max) wall s, containers/s = N / median, CPU per container (this process's own + its reaped
children's, ms), and the rate against unshare's. Target (the issue's): our rate >= unshare's.
Run it under ../shared/bench/in-bench-ns.sh (run.sh does): crun needs that cgroup view.
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
import tempfile
import time
import traceback
from typing import Any

import trio

import supervisor
from supervisor.service import Service
from supervisor.states import State
from supervisor.supervise import Supervisor

BENCH = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SHARED") or os.path.join(BENCH, "..", "..", "shared", "bench")
TOOLS = {"supervisor": "supervisor (trio API, Supervisor.add)", "unshare": "unshare+chroot",
         "bwrap": "bwrap --as-pid-1", "crun": "crun run", "shell": "unshare+chroot via shared concurrent.sh (bash)"}
WARMUP_N = 20


def cpu() -> tuple[float, float]:
    """(own, reaped children's) CPU seconds so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), ru.ru_utime + ru.ru_stime


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def zombies() -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    n += f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except (OSError, IndexError):
                pass
    return n


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Runner:
    """One batch of N containers per call; returns the number that failed (raises if it could not run)."""

    def __init__(self, base: str, err: int) -> None:
        self.base = base
        rf = os.path.join(base, "bundle", "rootfs")
        self.bundle_sh = os.path.join(base, "bundle-sh")
        self.spec = supervisor.ContainerSpec.from_bundle(self.bundle_sh)
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.err = err
        self.fd_leaks = 0
        sh = ["/bin/sh", "-c", "exit 0"]
        self.argv = {  # the exact commands of the shared common.sh, as argv
            "unshare": [self._which("unshare"), "--pid", "--net", "--ipc", "--uts", "--mount", "--fork",
                        "chroot", rf, *sh],
            "bwrap": [self._which("bwrap"), "--as-pid-1", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                      "--unshare-uts", "--bind", rf, "/", "--proc", "/proc", "--dev", "/dev", *sh],
            "crun": [self._which("crun"), "--root", os.path.join(base, "crun-root"), "run", "--bundle",
                     self.bundle_sh],
            "shell": [os.path.join(SHARED, "concurrent.sh"), "unshare"],
        }
        self.batch = 0

    @staticmethod
    def _which(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise FileNotFoundError(f"{name} not found in PATH")
        return path

    def run(self, tool: str, n: int) -> int:
        self.batch += 1
        if tool == "supervisor":
            return self.supervisor(n)
        if tool == "shell":
            done = subprocess.run([*self.argv["shell"], str(n)], stdin=self.devnull, stdout=self.devnull,
                                  stderr=self.err, env={**os.environ, "BASE": self.base})
            return 0 if done.returncode == 0 else n  # concurrent.sh only says that some failed
        argv = self.argv[tool]
        tag = f"c-{os.getpid()}-{self.batch}"
        argvs = [[*argv, f"{tag}-{i}"] if tool == "crun" else argv for i in range(n)]
        actions = [(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, self.devnull, 1),
                   (os.POSIX_SPAWN_DUP2, self.err, 2)]
        pids = []
        try:
            for a in argvs:
                pids.append(os.posix_spawn(a[0], a, os.environ, file_actions=actions))
        finally:  # all started (or as many as could be): now all waited for
            failed = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in pids)
        return failed

    def supervisor(self, n: int) -> int:
        fds = fd_count()

        async def batch() -> dict[str, int]:
            async with Supervisor() as sup:
                for i in range(n):
                    sup.add(Service(f"c{i}", self.spec))
            outcome: dict[str, int] = {}
            for h in sup.handles.values():
                ok = h.state == State.EXITED and h.last_exit is not None and h.last_exit.code == 0
                key = "ok" if ok else f"{h.state.value}: {h.last_exit or h.last_error}"
                outcome[key] = outcome.get(key, 0) + 1
            return outcome

        outcome = trio.run(batch)
        self.fd_leaks += fd_count() - fds
        bad = {k: v for k, v in outcome.items() if k != "ok"}
        if bad:
            print(f"supervisor x{n}: {bad}", file=sys.stderr)
        return sum(bad.values())


def measure(runner: Runner, tool: str, n: int) -> dict[str, Any]:
    (own0, ch0), t = cpu(), time.perf_counter()
    try:
        failed = runner.run(tool, n)
    except BaseException as e:  # an ExceptionGroup from trio, EMFILE, EAGAIN, ...
        if isinstance(e, KeyboardInterrupt):
            raise
        traceback.print_exc()
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    wall = time.perf_counter() - t
    own, ch = cpu()
    if failed:
        return {"ok": False, "error": f"{failed} of {n} failed", "wall_s": wall}
    return {"ok": True, "wall_s": wall, "own_cpu_s": own - own0, "children_cpu_s": ch - ch0}


def parse_reps(text: str) -> dict[int, int]:
    return {int(n): int(r) for n, r in (item.split(":") for item in text.split(","))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[200, 1000], help="batch sizes (default 200 1000)")
    ap.add_argument("--reps", type=parse_reps, default=parse_reps(os.environ.get("CREPS", "200:5,1000:3")),
                    help="repetitions per N, e.g. 200:5,1000:3 (the default; env CREPS); other N: 3")
    ap.add_argument("--slow-reps", type=int, default=int(os.environ.get("CSLOW", 2)),
                    help="at most this many repetitions of crun at N >= 1000 (default 2; env CSLOW)")
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/bench"))
    ap.add_argument("--json", help="write the results here")
    o = ap.parse_args()

    err = tempfile.TemporaryFile()
    runner = Runner(o.base, err.fileno())
    started, load0, z0, fd0 = time.time(), loadavg(), zombies(), fd_count()

    def reps(tool: str, n: int) -> int:
        r: int = o.reps.get(n, 3)
        return min(r, o.slow_reps) if tool == "crun" and n >= 1000 else r

    results: dict[int, dict[str, dict[str, Any]]] = {}
    broken: set[tuple[str, int]] = set()
    for tool in o.tools:  # warm-up, untimed: imports, page cache, trio's first run
        w = measure(runner, tool, WARMUP_N)
        if not w["ok"]:
            print(f"warm-up of {tool} x{WARMUP_N} failed: {w['error']}", file=sys.stderr)
    for n in o.n:
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in o.tools}
        for rep in range(max(reps(t, n) for t in o.tools)):
            order = o.tools[rep % len(o.tools):] + o.tools[:rep % len(o.tools)]
            for tool in order:
                if rep >= reps(tool, n) or (tool, n) in broken:
                    continue
                r = measure(runner, tool, n)
                runs[tool].append(r)
                note = f"{r['wall_s']:.3f} s" if r["ok"] else f"FAILED: {r['error']}"
                print(f"  N={n} rep {rep + 1} {tool}: {note}", file=sys.stderr)
                if not r["ok"]:
                    broken.add((tool, n))
        results[n] = {}
        for tool, rs in runs.items():
            row: dict[str, Any] = {"label": TOOLS[tool], "n": n, "runs": rs}
            if rs and all(r["ok"] for r in rs):
                walls = [r["wall_s"] for r in rs]
                med = statistics.median(walls)
                row.update(ok=True, reps=len(rs), median_s=med, min_s=min(walls), max_s=max(walls), rate=n / med,
                           cpu_ms=statistics.median((r["own_cpu_s"] + r["children_cpu_s"]) * 1e3 / n for r in rs),
                           own_cpu_ms=statistics.median(r["own_cpu_s"] * 1e3 / n for r in rs))
            else:
                row.update(ok=False, error=next((r["error"] for r in rs if not r["ok"]), "not run"))
            results[n][tool] = row

    err.seek(0)
    errors = err.read().decode(errors="replace")
    if errors.strip():
        print(f"peers' stderr (first 2000 chars):\n{errors[:2000]}", file=sys.stderr)

    print(f"\nN containers at once, each /bin/sh -c 'exit 0'; peers via posix_spawn, all started then all waited"
          f" (load before: {load0})")
    print(f"{'row':48} {'N':>5} {'reps':>4} {'median s':>9} {'min-max s':>13} {'cont/s':>7} {'cpu ms/c':>8}"
          f" {'own ms/c':>8} {'÷unshare':>8}")
    ratios: dict[str, float] = {}
    for n, rows in results.items():
        ref = rows.get("unshare", {}).get("rate") if rows.get("unshare", {}).get("ok") else None
        for tool, r in rows.items():
            if not r["ok"]:
                print(f"{r['label']:48} {n:5} FAILED: {r['error']}")
                continue
            q = r["rate"] / ref if ref else None
            r["rate_vs_unshare"] = q
            if q is not None:
                ratios[f"{tool}/unshare@{n}"] = q
            print(f"{r['label']:48} {n:5} {r['reps']:4} {r['median_s']:9.3f} {r['min_s']:6.3f}-{r['max_s']:6.3f}"
                  f" {r['rate']:7.0f} {r['cpu_ms']:8.2f} {r['own_cpu_ms']:8.2f} {'–' if q is None else f'{q:.2f}':>8}")
    fd1, z1 = fd_count(), zombies()
    print("target: supervisor rate ≥ unshare's: "
          + ", ".join(f"N={n}: {'–' if (q := ratios.get(f'supervisor/unshare@{n}')) is None else f'{q:.2f}x'}"
                      for n in results))
    print(f"fds: {fd0} before, {fd1} after (supervisor batches leaked {runner.fd_leaks}); "
          f"zombies on the host: {z0} before, {z1} after; load after: {loadavg()}; {time.time() - started:.0f} s")
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"n": o.n, "reps": {str(k): v for k, v in o.reps.items()}, "slow_reps": o.slow_reps,
                       "warmup_n": WARMUP_N, "python": sys.executable, "base": o.base, "nproc": os.cpu_count(),
                       "method": "posix_spawn, all started then all waited (shell row: the shared concurrent.sh)",
                       "argv": runner.argv, "loadavg_before": load0, "loadavg_after": loadavg(),
                       "fds_before": fd0, "fds_after": fd1, "fd_leaks_supervisor": runner.fd_leaks,
                       "zombies_before": z0, "zombies_after": z1, "seconds": time.time() - started,
                       "peer_stderr": errors[:2000], "results": {str(n): rows for n, rows in results.items()},
                       "ratios": ratios}, f, indent=1)
    return 0 if all(r["ok"] for rows in results.values() for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
