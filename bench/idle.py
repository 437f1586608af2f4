#!/usr/bin/env python3
"""idle.py [-n N] [--window S] [--stop kill|stop] [--base DIR] [--json PATH]

What N idle containers cost the supervisor process. N (default 1000) containers of ``BASE/bundle-sleep``
(``BASE/bundle-sh``'s config.json with args ``/bin/sleep 3600``; written here if missing or different)
are added to one ``Supervisor`` at once; once every handle is RUNNING (``await h.wait_for(...)``),
after a 1 s settle, this process's own footprint is read and it sits idle for a window of S seconds
(default 10):

  rss        VmRSS and VmHWM of this process (/proc/self/status), before the Supervisor, idle, and at the end
  cpu        this process's CPU over the window (``time.process_time`` and ``os.times`` user/sys), and its
             context switches (voluntary + involuntary, /proc/self/status): how often it woke up
  fds        open fds of this process, before, idle, and after the block is left
  tasks      trio tasks alive while idle (walked from the root task)
  containers their inits' CPU over the window and their summed Pss (smaps_rollup), for information

Then every container is stopped (``--stop kill``: ``sup.kill_all()``, the default; ``--stop stop``:
``await sup.stop_all()`` with ``Policy(stop_timeout=0.5)``: sleep as pid 1 ignores SIGTERM) and the block is
left. Checks: every container ended STOPPED (killed by SIGKILL), fds back to where they were, no process with
argv ``/bin/sleep 3600`` left, no new zombies, the host's mount table (/proc/1/mountinfo) unchanged.
Targets: idle VmRSS < 100 MB, idle CPU ~0 (here: < 1 % of one core over the window).
Before starting it checks pid_max, threads-max and RLIMIT_NPROC against N (root ignores RLIMIT_NPROC).
Exits 1 if a container failed to start, a target was missed or a check failed.
"""

import argparse
import json
import os
import resource
import sys
import time
from typing import Any

import trio

import supervisor
from supervisor.service import Policy, Service
from supervisor.states import TERMINAL, State
from supervisor.supervise import Supervisor

TARGET_RSS_MB = 100.0
TARGET_CPU_SHARE = 0.01  # of one core, over the idle window
SLEEP_ARGV = ["/bin/sleep", "3600"]


def status() -> dict[str, int]:
    """The numeric lines of /proc/self/status we use (kB for the Vm* ones)."""
    keys = ("VmRSS", "VmHWM", "Threads", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0])
    return out


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def procs() -> tuple[int, int, int]:
    """(processes, zombies, processes whose argv is exactly SLEEP_ARGV) on the host."""
    n = zombies = sleeps = 0
    want = b"\0".join(a.encode() for a in SLEEP_ARGV) + b"\0"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        n += 1
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombies += f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                sleeps += f.read() == want
        except (OSError, IndexError):
            pass
    return n, zombies, sleeps


def mount_count(pid: str) -> int:
    with open(f"/proc/{pid}/mountinfo") as f:
        return sum(1 for _ in f)


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def container_cpu_ticks(pids: list[int]) -> int:
    """utime+stime of the containers' init processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total


def pss_of(pid: int) -> int:
    """Pss (kB: RSS with shared pages divided among their users) of another process; 0 if gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    return walk(root) if root is not None else 0


def make_bundle(base: str) -> str:
    """BASE/bundle-sleep/config.json = BASE/bundle-sh's with args SLEEP_ARGV (root.path made absolute)."""
    with open(os.path.join(base, "bundle-sh", "config.json")) as f:
        config = json.load(f)
    config["process"]["args"] = SLEEP_ARGV
    root = config["root"]["path"]
    if not os.path.isabs(root):
        config["root"]["path"] = os.path.join(base, "bundle-sh", root)
    bundle = os.path.join(base, "bundle-sleep")
    text = json.dumps(config, indent=1) + "\n"
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as f:
            if f.read() == text:
                return bundle
    except OSError:
        pass
    os.makedirs(bundle, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return bundle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=int(os.environ.get("IDLE_N", 1000)))
    ap.add_argument("--window", type=float, default=float(os.environ.get("IDLE_WINDOW", 10)))
    ap.add_argument("--stop", choices=("kill", "stop"), default="kill")
    ap.add_argument("--timeout", type=float, default=120.0, help="for all N to be running (s)")
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/bench"))
    ap.add_argument("--json", help="write the results here")
    o = ap.parse_args()

    bundle = make_bundle(o.base)
    spec = supervisor.ContainerSpec.from_bundle(bundle)
    policy = Policy(stop_timeout=0.5)
    limits = {"pid_max": read_int("/proc/sys/kernel/pid_max"), "threads_max": read_int("/proc/sys/kernel/threads-max"),
              "rlimit_nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
              "rlimit_nofile_before": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "euid": os.geteuid()}
    n_procs0, z0, sleeps0 = procs()
    limits["processes_before"] = n_procs0
    # each container is one process (sleep as pid 1); while it starts, two (the bootstrap's stage 0 and the init)
    room = min(limits["pid_max"], limits["threads_max"]) - n_procs0
    if room < 2 * o.n:
        print(f"not enough pids for {o.n} containers: {limits}", file=sys.stderr)
        return 1
    if os.geteuid() != 0 and 0 <= limits["rlimit_nproc"] < n_procs0 + 2 * o.n:
        print(f"RLIMIT_NPROC too low for {o.n} containers: {limits}", file=sys.stderr)
        return 1
    r: dict[str, Any] = {"n": o.n, "window_s": o.window, "stop": o.stop, "bundle": bundle, "argv": SLEEP_ARGV,
                         "python": sys.executable, "nproc": os.cpu_count(), "limits": limits,
                         "host_mounts_before": mount_count("1"), "own_mounts_before": mount_count("self"),
                         "zombies_before": z0, "sleep_procs_before": sleeps0}
    problems: list[str] = []
    fds_outside = fd_count()  # before and after trio.run (inside it, trio's own fds add a few)

    async def run() -> None:
        r["before"] = {**status(), "fds": fd_count(), "tasks": count_tasks()}
        t0 = time.perf_counter()
        async with Supervisor() as sup:
            r["limits"]["rlimit_nofile_in_supervisor"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            handles = [sup.add(Service(f"idle-{i}", spec, policy)) for i in range(o.n)]
            try:
                with trio.fail_after(o.timeout):
                    for h in handles:
                        await h.wait_for(State.RUNNING, *TERMINAL)
            except trio.TooSlowError:
                problems.append(f"not all running after {o.timeout} s")
            r["start_s"] = time.perf_counter() - t0
            states: dict[str, int] = {}
            for h in handles:
                key = h.state.value if h.state == State.RUNNING else f"{h.state.value}: {h.last_error or h.last_exit}"
                states[key] = states.get(key, 0) + 1
            r["states_started"] = states
            running = [h.pid for h in handles if h.state == State.RUNNING and h.pid is not None]
            if len(running) != o.n:
                problems.append(f"{len(running)} of {o.n} running: {states}")
            if running:
                await trio.sleep(1.0)  # settle: the last starts' transients end
                fds, tasks = fd_count(), count_tasks()
                ticks0 = container_cpu_ticks(running)  # the window's own reads kept outside it
                s0, w0, c0, t0s = status(), time.monotonic(), time.process_time(), os.times()
                await trio.sleep(o.window)
                c1, t1s, w1, s1 = time.process_time(), os.times(), time.monotonic(), status()
                ticks1 = container_cpu_ticks(running)
                pss_kb = sum(pss_of(pid) for pid in running)
                hz = os.sysconf("SC_CLK_TCK")
                r["idle"] = {"seconds": w1 - w0, "cpu_s": c1 - c0, "user_s": t1s.user - t0s.user,
                             "sys_s": t1s.system - t0s.system,
                             "cpu_share": (c1 - c0) / (w1 - w0),
                             "wakeups": (s1["voluntary_ctxt_switches"] + s1["nonvoluntary_ctxt_switches"]
                                         - s0["voluntary_ctxt_switches"] - s0["nonvoluntary_ctxt_switches"]),
                             "containers_cpu_s": (ticks1 - ticks0) / hz,
                             "containers_pss_sum_kb": pss_kb,
                             "VmRSS_start_kb": s0["VmRSS"], "VmRSS_kb": s1["VmRSS"], "VmHWM_kb": s1["VmHWM"],
                             "Threads": s1["Threads"], "fds": fds, "tasks": tasks, "running": len(running)}
            t1 = time.perf_counter()
            if o.stop == "kill":
                sup.kill_all()
            else:
                await sup.stop_all()
        r["stop_s"] = time.perf_counter() - t1
        r["fds_after_block"] = fd_count()
        ends: dict[str, int] = {}
        for h in handles:
            key = f"{h.state.value}: {h.last_exit or h.last_error}"
            ends[key] = ends.get(key, 0) + 1
        r["states_end"] = ends
        ok_end = f"{State.STOPPED.value}: killed by SIGKILL"
        if ends.get(ok_end, 0) != o.n:
            problems.append(f"not all {ok_end}: {ends}")

    try:
        trio.run(run)
    except BaseException as e:  # report the exact error (EMFILE, EAGAIN, ...) and still check for leftovers
        if isinstance(e, KeyboardInterrupt):
            raise
        import traceback

        traceback.print_exc()
        problems.append(f"{type(e).__name__}: {e}")
    time.sleep(0.2)  # let init reap anything orphaned
    after = {**status(), "fds": fd_count()}
    n_procs1, z1, sleeps1 = procs()
    r.update(after=after, fds_outside_before=fds_outside, zombies_after=z1, sleep_procs_after=sleeps1,
             processes_after=n_procs1, host_mounts_after=mount_count("1"), own_mounts_after=mount_count("self"))
    if after["fds"] != fds_outside or r.get("fds_after_block") != r.get("before", {}).get("fds"):
        problems.append(f"fds: {r.get('before', {}).get('fds')} before the Supervisor, {r.get('fds_after_block')} after"
                        f" it; {fds_outside} before trio.run, {after['fds']} after")
    if sleeps1 != sleeps0:
        problems.append(f"'{' '.join(SLEEP_ARGV)}' processes: {sleeps0} before, {sleeps1} after")
    if z1 > z0:
        problems.append(f"zombies: {z0} before, {z1} after")
    if r["host_mounts_after"] != r["host_mounts_before"] or r["own_mounts_after"] != r["own_mounts_before"]:
        problems.append(f"mounts changed: host {r['host_mounts_before']} -> {r['host_mounts_after']}, "
                        f"own {r['own_mounts_before']} -> {r['own_mounts_after']}")

    idle = r.get("idle")
    targets: dict[str, Any] = {}
    if idle:
        mb = idle["VmRSS_kb"] / 1024
        targets = {"rss_mb": mb, "rss_target_mb": TARGET_RSS_MB, "rss_met": mb < TARGET_RSS_MB,
                   "cpu_share": idle["cpu_share"], "cpu_target_share": TARGET_CPU_SHARE,
                   "cpu_met": idle["cpu_share"] < TARGET_CPU_SHARE}
        b = r["before"]
        print(f"\n{idle['running']} idle containers ({' '.join(SLEEP_ARGV)}) in one Supervisor, {sys.executable}")
        print(f"  started (all RUNNING) in {r['start_s']:.2f} s ({o.n / r['start_s']:.0f}/s); "
              f"stopped ({o.stop}) and reaped in {r['stop_s']:.2f} s")
        print(f"  RSS: {b['VmRSS'] / 1024:.1f} MB before the Supervisor, {idle['VmRSS_start_kb'] / 1024:.1f} MB idle"
              f" at the window's start, {mb:.1f} MB at its end "
              f"(+{(idle['VmRSS_kb'] - b['VmRSS']) / o.n:.1f} kB per container); VmHWM {idle['VmHWM_kb'] / 1024:.1f} MB"
              f" (end: {after['VmHWM'] / 1024:.1f} MB); after: {after['VmRSS'] / 1024:.1f} MB")
        print(f"  CPU over {idle['seconds']:.1f} s idle: {idle['cpu_s'] * 1e3:.1f} ms (user {idle['user_s'] * 1e3:.0f},"
              f" sys {idle['sys_s'] * 1e3:.0f}) = {idle['cpu_share'] * 100:.3f} % of a core; {idle['wakeups']} context"
              f" switches; containers' own CPU {idle['containers_cpu_s'] * 1e3:.0f} ms")
        print(f"  while idle: {idle['fds']} fds ({b['fds']} before), {idle['tasks']} trio tasks, {idle['Threads']}"
              f" threads; containers' summed Pss {idle['containers_pss_sum_kb'] / 1024:.1f} MB")
        print(f"  targets: RSS < {TARGET_RSS_MB:.0f} MB: {'yes' if targets['rss_met'] else 'NO'};"
              f" CPU < {TARGET_CPU_SHARE * 100:.0f} % of a core: {'yes' if targets['cpu_met'] else 'NO'}")
        if not (targets["rss_met"] and targets["cpu_met"]):
            problems.append("target missed")
    print(f"  after: fds {r.get('fds_after_block')} (before: {r.get('before', {}).get('fds')}),"
          f" '{' '.join(SLEEP_ARGV)}' processes {sleeps1}, zombies {z0} -> {z1},"
          f" host mounts {r['host_mounts_before']} -> {r['host_mounts_after']}; end states {r.get('states_end')}")
    print("  checks: " + ("all passed" if not problems else "; ".join(problems)))
    r.update(targets=targets, problems=problems, ok=not problems)
    if o.json:
        with open(o.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
