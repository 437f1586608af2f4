"""containerd's calls for one container, timed through supervisor-oci, runc and crun on one bundle.

Rows: ``supervisor-oci`` (the Python command), ``native`` (its native front end, ``supervisor-oci
install-fast``, which answers start, state, kill and delete itself and execs the Python command for
create), ``planner`` (the native front end with ``supervisor-oci planner`` serving its root, which
plans each create in a warm process), runc, crun. What the shim runs for ``ctr run`` then ``ctr task
kill`` and ``delete``: ``create --pid-file``, ``start``, ``state``, ``kill ID 9``, ``delete --force``;
each call is a new process, spawned with ``os.posix_spawn`` and waited for, its wall time taken
around that. This process is a child subreaper
(as the shim is), so every runtime's init passes to it after ``create``; it reaps the init after
``kill`` (untimed, as the shim does on SIGCHLD) before ``delete --force``.

The bundle is ``$BASE/bundle`` (built by ``../shared/bench/make-bundles.sh``) with ``/bin/sleep 3600``
as its workload, written to ``$BASE/bundle-oci``. The runtimes take turns, round by round, in a
rotating order, after W untimed warm-up rounds. Re-executes itself under ``in-bench-ns.sh`` where the
cgroup2 mount is visible (crun refuses this hybrid host otherwise), so every runtime sees the same
cgroups. Writes ``results/oci_calls.json`` and prints medians per call and the ratios to runc.

    python bench/oci_calls.py [--runs 30] [--warmup 3]
"""

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SHARED") or os.path.join(BENCH, "..", "..", "shared", "bench")
CALLS = ("create", "start", "state", "kill", "delete")
PR_SET_CHILD_SUBREAPER = 36


def cgroup2_visible() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/sys/fs/cgroup/unified" and line.split(" - ", 1)[1].startswith("cgroup2 ")
                   for line in f)


def spawn_wait(argv: list[str], devnull: int) -> float:
    """Run argv with stdio on /dev/null; its wall ms. A failure stops the bench."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - t0) * 1000
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)} (exit {os.waitstatus_to_exitcode(status)})")
    return elapsed


def one_life(binary: str, root: str, bundle: str, cid: str, devnull: int) -> dict[str, float]:
    g = [binary, "--root", root]
    pid_file = os.path.join(root, f"{cid}.pid")
    times = {"create": spawn_wait([*g, "create", "--bundle", bundle, "--pid-file", pid_file, cid], devnull)}
    with open(pid_file) as f:
        init = int(f.read())
    os.unlink(pid_file)
    times["start"] = spawn_wait([*g, "start", cid], devnull)
    times["state"] = spawn_wait([*g, "state", cid], devnull)
    times["kill"] = spawn_wait([*g, "kill", cid, "9"], devnull)
    os.waitpid(init, 0)  # the shim reaps on SIGCHLD; untimed
    times["delete"] = spawn_wait([*g, "delete", "--force", cid], devnull)
    times["total"] = sum(times[c] for c in CALLS)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", 30)))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/bench"))
    ap.add_argument("--results", default=os.environ.get("RESULTS", os.path.join(BENCH, "results")))
    args = ap.parse_args()
    if cgroup2_visible() and not os.environ.get("BENCH_IN_NS"):
        script = os.path.join(SHARED, "in-bench-ns.sh")
        os.execve(script, [script, sys.executable, *sys.argv], {**os.environ, "BENCH_IN_NS": "1"})

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    bundle = os.path.join(args.base, "bundle-oci")
    with open(os.path.join(args.base, "bundle", "config.json")) as f:
        config = json.load(f)
    config["process"]["args"] = ["/bin/sleep", "3600"]
    config["root"]["path"] = os.path.join(args.base, "bundle", config["root"]["path"])
    os.makedirs(bundle, exist_ok=True)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)

    ours = os.path.join(os.path.dirname(sys.executable), "supervisor-oci")
    native = os.path.join(args.base, "supervisor-oci-native")
    if os.path.exists(native):
        os.unlink(native)
    spawn_wait([ours, "install-fast", native], os.open(os.devnull, os.O_RDWR))
    tools = {"supervisor-oci": ours, "native": native, "planner": native, "runc": shutil.which("runc"),
             "crun": shutil.which("crun")}
    roots = {name: os.path.join(args.base, f"oci-root-{name}") for name in tools}
    devnull = os.open(os.devnull, os.O_RDWR)
    planner = start_planner(ours, roots["planner"], devnull)
    try:
        results = measure(tools, roots, bundle, args.warmup, args.runs, devnull)
    finally:
        planner.terminate()
        planner.wait()
    report(results, tools, args)
    return 0


def start_planner(ours: str, root: str, devnull: int) -> subprocess.Popen[bytes]:
    """``supervisor-oci planner`` on ``root``, once its socket answers."""
    import socket

    planner = subprocess.Popen([ours, "--root", root, "planner"], stdin=devnull, stdout=devnull)
    path = os.path.join(root, "planner.sock")
    for _ in range(200):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(path)
            return planner
        except OSError:
            time.sleep(0.05)
    planner.kill()
    raise SystemExit("the planner did not start")


def measure(tools: dict[str, str | None], roots: dict[str, str], bundle: str, warmup: int, runs: int,
            devnull: int) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
    names = [n for n, b in tools.items() if b]
    for i in range(warmup + runs):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            binary = tools[name]
            assert binary is not None
            life = one_life(binary, roots[name], bundle, f"oci-{os.getpid()}-{i}", devnull)
            if i >= warmup:
                results[name].append(life)
    return results


#: the ratios printed beside the medians
RATIOS = (("supervisor-oci", "runc"), ("native", "runc"), ("planner", "runc"), ("planner", "crun"))


def report(results: dict[str, list[dict[str, float]]], tools: dict[str, str | None],
           args: argparse.Namespace) -> None:
    medians = {name: {c: statistics.median(r[c] for r in lives) for c in (*CALLS, "total")}
               for name, lives in results.items() if lives}
    print(f"{'call':<10}" + "".join(f"{n:>16}" for n in medians)
          + "".join(f"{o.replace('supervisor-oci', 'ours') + '/' + p:>15}" for o, p in RATIOS))
    for c in (*CALLS, "total"):
        row = "".join(f"{medians[n][c]:>14.1f}ms" for n in medians)
        ratios = "".join(f"{medians[o][c] / medians[p][c]:>14.2f}x" if p in medians else f"{'-':>15}"
                         for o, p in RATIOS)
        print(f"{c:<10}{row}{ratios}")
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "oci_calls.json"), "w") as f:
        json.dump({"runs": args.runs, "warmup": args.warmup, "medians_ms": medians, "tools": tools,
                   "lives": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
