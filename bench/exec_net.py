#!/usr/bin/env python3
"""exec_net.py [-n N] [--warmup W] [--base DIR] [--json PATH]

(a) exec latency: ``/bin/true`` run inside a container that runs ``/bin/sleep 3600``
(``BASE/bundle-sleep``, as idle.py writes it: ``bundle-sh``'s config with those args; pid,net,ipc,uts,mount
namespaces), each timed from start to reaped exit:

  ours            N x ``await c.exec(["/bin/true"])`` into ``async with open_container(spec, name=...) as c``
                  (its cgroup: the default; the exec'd process joins it)
  ours, no cgroup the same into a container planned without one (isolation.py's ``no_cgroup_plan``)
  runc exec       N x ``runc --root BASE/runc-root exec ID /bin/true`` into ``runc ... run -d --bundle
                  BASE/bundle-sleep ID`` (then ``runc kill ID KILL`` and ``runc delete -f ID``)
  crun exec       the same with crun (``crun ... run --detach``)
  nsenter --all   N x ``nsenter --target PID --all /bin/true``, PID: our (cgroup) container's init
  nsenter -pmuin  the same with ``-p -m -u -i -n`` instead of ``--all``
  The peers are started with ``os.posix_spawn`` (stdio: /dev/null, stderr to a temporary file shown
  on failure) + ``os.waitpid``. Each row is its own phase: W warm-ups, then N timed.

(b) what a veth costs a container's start: whole lives of ``BASE/bundle`` (``/bin/true``) through one
``Supervisor``: ``h = await sup.start(Service(unique_name, spec, network=...))`` then
``await h.wait_for(State.EXITED, State.FAILED, State.STOPPED)`` (must end EXITED, code 0). Each row is a
phase of W + N lives, in this order (not interleaved: a life after a veth life was measured about 2x slower,
see the README). Per row: the whole life, and the start alone (``sup.start`` returns once RUNNING):

  no network           ``network=None``: the bundle's own (empty) network namespace
  veth, bridge kept    ``NetworkConfig(bridge="svbench0", gateway="10.213.9.1/24")``; a keeper container
                       (``bundle-sleep`` on the same bridge) holds the bridge, so a life makes one veth pair,
                       an address, a default route, and deletes the pair
  veth, bridge per life ``NetworkConfig(bridge="svbench1", gateway="10.213.10.1/24")``, no keeper: every life
                       also makes the bridge (address, up) and removes it
  A Supervisor whose block raises (seen once: pyroute2's NetlinkError ENODEV out of network._detach, which
  catches only OSError) is recorded with its innermost exception, what it left (interfaces) is deleted and
  reported, and the row goes on in a new Supervisor (the life is not counted), at most 5 times a row.
  For information: the same host-side work by hand with ip(8), into the keeper's namespace
  (``ip link add svbmh type veth peer name svbmc netns PID``; ``ip link set svbmh master svbench0 up``;
  ``nsenter -t PID -n ip addr add 10.213.9.250/24 dev svbmc``; ``nsenter -t PID -n ip link set svbmc up``;
  then ``ip link del svbmh``), and the cost of one ``pyroute2.IPRoute()`` opened and closed (our attach opens
  two, our detach one).
Ratios: each exec row ÷ ours; each network row ÷ no network, and the added ms.
Re-executes itself under ../shared/bench/in-bench-ns.sh when the cgroup2 mount is visible (crun needs it).
Exits 1 if a row failed (the other rows are still measured and written).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from typing import Any

import trio

import supervisor
from supervisor.service import NetworkConfig, Service
from supervisor.states import State
from supervisor.supervise import Supervisor

from idle import make_bundle  # BASE/bundle-sleep
from isolation import Life, children_cpu, no_cgroup_plan, reexec_in_bench_ns, rounds, row_stats
from peers import Peers  # bench/peers.py: the scripts run from bench/

BRIDGE, GATEWAY = "svbench0", "10.213.9.1/24"
BRIDGE1, GATEWAY1 = "svbench1", "10.213.10.1/24"
OUR_PREFIXES = ("svh", "svc", "svbench", "svbm")  # our veths (svh<pid>/svc<pid>), the bridges, the manual pair
MAX_CRASHES = 5  # per network row: a Supervisor whose block raised is replaced at most this often


def leaf(e: BaseException) -> str:
    """The first innermost exception of a (nested) group, with the frame that raised it."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (in {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} {frames[-1].name}" if frames else ""
    ours = [f for f in frames if "/supervisor/" in f.filename]
    if ours:
        where += f", from {os.path.basename(ours[-1].filename)}:{ours[-1].lineno} {ours[-1].name}"
    return f"{type(e).__name__}: {e}{where + ')' if where else ''}"


def links() -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(OUR_PREFIXES))


def which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found in PATH")
    return path


def summary(rows: dict[str, dict[str, Any]], labels: dict[str, str], ref: str) -> None:
    r0 = rows.get(ref, {})
    for key, r in rows.items():
        r["label"] = labels[key]
        if r.get("ok") and r0.get("ok"):
            r["added_ms"] = r["median_ms"] - r0["median_ms"]
            r["ratio"] = r["median_ms"] / r0["median_ms"]


def table(rows: dict[str, dict[str, Any]], ratio_name: str) -> None:
    starts = any("start_median_ms" in r for r in rows.values())
    print(f"{'row':48} {'median':>7} {'min':>7} {'max':>7} {'own cpu':>8} {'child cpu':>9} {'+ms':>7}"
          f" {ratio_name:>8}" + (f" {'start':>7} {'+ms':>7}" if starts else ""))
    s0 = next(iter(rows.values()), {}).get("start_median_ms")
    for r in rows.values():
        if r.get("ok"):
            extra = ""
            if starts and "start_median_ms" in r:
                extra = f" {r['start_median_ms']:7.2f} {r['start_median_ms'] - (s0 or 0):7.2f}"
            print(f"{r['label']:48} {r['median_ms']:7.2f} {r['min_ms']:7.2f} {r['max_ms']:7.2f}"
                  f" {r['self_cpu_ms']:8.2f} {r['children_cpu_ms']:9.2f} {r.get('added_ms', 0):7.2f}"
                  f" {r.get('ratio', 0):8.2f}{extra}")
        else:
            print(f"{r['label']:48} FAILED: {r.get('error')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=int(os.environ.get("RUNS", 50)), help="timed runs (env RUNS)")
    ap.add_argument("--warmup", type=int, default=int(os.environ.get("WARMUP", 5)))
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/bench"))
    ap.add_argument("--json", help="write the results here")
    o = ap.parse_args()
    reexec_in_bench_ns()
    started = time.time()
    links0 = links()
    if links0:
        print(f"interfaces of ours present before the run: {links0}", file=sys.stderr)

    sleep_bundle = make_bundle(o.base)
    sleep_spec = supervisor.ContainerSpec.from_bundle(sleep_bundle)
    true_spec = supervisor.ContainerSpec.from_bundle(os.path.join(o.base, "bundle"))
    tag = f"xn-{os.getpid()}"
    peers = Peers()
    spawn_wait = peers.run

    def peer(argv: list[str]) -> Life:
        async def life(_: int) -> None:
            spawn_wait(argv)
        return life

    exec_rows: dict[str, dict[str, Any]] = {}
    net_rows: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    argvs: dict[str, list[str]] = {}
    problems: list[str] = []

    async def phase(rows: dict[str, dict[str, Any]], key: str, life: Life) -> None:
        t = time.perf_counter()
        rows[key] = (await rounds({key: life}, o.n, o.warmup))[key]
        print(f"  {key}: {o.warmup}+{o.n}, {time.perf_counter() - t:.1f} s", file=sys.stderr)

    async def exec_part() -> None:
        async def our_exec(c: supervisor.Container) -> Life:
            async def life(_: int) -> None:
                status = await c.exec(["/bin/true"])
                if status.code != 0:
                    raise RuntimeError(f"exec into {c.name}: {status}")
            return life

        async with supervisor.open_container(sleep_spec, name=f"{tag}-exec") as c:
            await phase(exec_rows, "ours", await our_exec(c))
            async with supervisor.open_container(sleep_spec, name=f"{tag}-exec-nocg",
                                                 plan=no_cgroup_plan(sleep_spec, f"{tag}-exec-nocg")) as c2:
                await phase(exec_rows, "ours_nocg", await our_exec(c2))
            argvs["nsenter_all"] = [which("nsenter"), "--target", str(c.pid), "--all", "/bin/true"]
            argvs["nsenter_pmuin"] = [which("nsenter"), "--target", str(c.pid), "-p", "-m", "-u", "-i", "-n",
                                      "/bin/true"]
            for key in ("nsenter_all", "nsenter_pmuin"):
                await phase(exec_rows, key, peer(argvs[key]))
        for tool, detach in (("runc", "-d"), ("crun", "--detach")):
            cid = f"b-{tag}-{tool}"
            exe = which(tool)
            root = os.path.join(o.base, f"{tool}-root")
            try:
                spawn_wait([exe, "--root", root, "run", detach, "--bundle", sleep_bundle, cid])
            except Exception as e:
                traceback.print_exc()
                exec_rows[f"{tool}_exec"] = {"ok": False, "error": f"{tool} run {detach}: {e}"}
                continue
            try:
                argvs[f"{tool}_exec"] = [exe, "--root", root, "exec", cid, "/bin/true"]
                await phase(exec_rows, f"{tool}_exec", peer(argvs[f"{tool}_exec"]))
            finally:
                for argv in ([exe, "--root", root, "kill", cid, "KILL"], [exe, "--root", root, "delete", "-f", cid]):
                    done = subprocess.run(argv, stdin=peers.devnull, capture_output=True, text=True)
                    if done.returncode and "kill" not in argv:
                        problems.append(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")

    async def net_part() -> None:
        seq = 0
        ip, nsenter = which("ip"), which("nsenter")

        async def keeper_of(sup: Supervisor) -> int:
            keeper = await sup.start(Service(f"{tag}-keeper-{seq}", sleep_spec,
                                             network=NetworkConfig(bridge=BRIDGE, gateway=GATEWAY)))
            if keeper.state != State.RUNNING or keeper.pid is None:
                raise RuntimeError(f"keeper: {keeper.state.value}: {keeper.last_error}")
            return keeper.pid

        async def row(key: str, network: NetworkConfig | None, keeper: bool) -> None:
            """W + N lives in a row; a Supervisor that crashes is recorded and replaced by a new one (its
            life is not counted), at most MAX_CRASHES times."""
            nonlocal seq
            walls: list[float] = []
            starts: list[float] = []
            own = child = 0.0
            crashes: list[str] = []
            done = 0
            t0 = time.perf_counter()
            while done < o.warmup + o.n and len(crashes) < MAX_CRASHES:
                before = set(links())
                try:
                    async with Supervisor() as sup:
                        if keeper:
                            await keeper_of(sup)
                        while done < o.warmup + o.n:
                            seq += 1
                            c0, ch0, t = time.process_time(), children_cpu(), time.perf_counter()
                            h = await sup.start(Service(f"{tag}-{seq}", true_spec, network=network))
                            t1 = time.perf_counter()
                            state = await h.wait_for(State.EXITED, State.FAILED, State.STOPPED)
                            wall = (time.perf_counter() - t) * 1e3
                            if state != State.EXITED or h.last_exit is None or h.last_exit.code != 0:
                                raise RuntimeError(f"{h.name}: {state.value}: {h.last_exit or h.last_error}")
                            if done >= o.warmup:
                                walls.append(wall)
                                starts.append((t1 - t) * 1e3)
                                own += time.process_time() - c0
                                child += children_cpu() - ch0
                            done += 1
                        sup.kill_all()
                except Exception as e:
                    traceback.print_exc()
                    crashes.append(leaf(e))
                    left = sorted(set(links()) - before)
                    for name in left:  # what the crashed Supervisor left: removed, and reported
                        subprocess.run([ip, "link", "del", name], capture_output=True)
                    if left:
                        problems.append(f"{key}: the crashed Supervisor left {', '.join(left)} (deleted)")
            print(f"  {key}: {o.warmup}+{o.n}, {time.perf_counter() - t0:.1f} s, {len(crashes)} crashes",
                  file=sys.stderr)
            if len(walls) == o.n:
                net_rows[key] = {**row_stats(walls, own, child), "start_median_ms": statistics.median(starts)}
            else:
                net_rows[key] = {"ok": False, "error": f"gave up after {len(crashes)} crashes: {crashes[-1]}"}
            net_rows[key]["crashes"] = crashes
            if crashes:
                problems.append(f"{key}: the Supervisor crashed {len(crashes)} times in {done + len(crashes)}"
                                f" lives: {crashes[0]}")

        await row("none", None, keeper=False)
        await row("veth_kept", NetworkConfig(bridge=BRIDGE, gateway=GATEWAY), keeper=True)
        await row("veth_bridge", NetworkConfig(bridge=BRIDGE1, gateway=GATEWAY1), keeper=False)

        # by hand with ip(8), into a keeper's network namespace
        async with Supervisor() as sup:
            pid = str(await keeper_of(sup))
            setup = [[ip, "link", "add", "svbmh", "type", "veth", "peer", "name", "svbmc", "netns", pid],
                     [ip, "link", "set", "svbmh", "master", BRIDGE, "up"],
                     [nsenter, "-t", pid, "-n", ip, "addr", "add", "10.213.9.250/24", "dev", "svbmc"],
                     [nsenter, "-t", pid, "-n", ip, "link", "set", "svbmc", "up"]]
            argvs["by_hand_setup"] = [" ".join(a) for a in setup]
            argvs["by_hand_teardown"] = [ip, "link", "del", "svbmh"]
            ups: list[float] = []
            downs: list[float] = []
            try:
                for i in range(o.warmup + o.n):
                    t = time.perf_counter()
                    for argv in setup:
                        spawn_wait(argv)
                    t1 = time.perf_counter()
                    spawn_wait(argvs["by_hand_teardown"])
                    t2 = time.perf_counter()
                    if i >= o.warmup:
                        ups.append((t1 - t) * 1e3)
                        downs.append((t2 - t1) * 1e3)
                info["by_hand"] = {"ok": True, "setup_median_ms": statistics.median(ups),
                                   "teardown_median_ms": statistics.median(downs),
                                   "total_median_ms": statistics.median(u + d for u, d in zip(ups, downs, strict=True))}
            except Exception as e:
                traceback.print_exc()
                info["by_hand"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                subprocess.run([ip, "link", "del", "svbmh"], capture_output=True)

            from pyroute2 import IPRoute

            times = []
            for _ in range(o.warmup + max(o.n, 20)):
                t = time.perf_counter()
                with IPRoute():
                    pass
                times.append((time.perf_counter() - t) * 1e3)
            info["iproute_open_close_ms"] = statistics.median(times[o.warmup:])
            sup.kill_all()
        info["links_after_block"] = links()

    async def everything() -> None:
        for part in (exec_part, net_part):
            try:
                await part()
            except Exception as e:
                traceback.print_exc()
                problems.append(f"{part.__name__}: {type(e).__name__}: {e}")

    trio.run(everything)

    summary(exec_rows, {"ours": "ours: await c.exec(['/bin/true'])",
                        "ours_nocg": "ours, container without a cgroup: c.exec(...)",
                        "nsenter_all": "nsenter --target PID --all /bin/true",
                        "nsenter_pmuin": "nsenter --target PID -p -m -u -i -n /bin/true",
                        "runc_exec": "runc exec ID /bin/true (runc run -d)",
                        "crun_exec": "crun exec ID /bin/true (crun run --detach)"}, "ours")
    summary(net_rows, {"none": "Supervisor life, no network",
                       "veth_kept": f"+ veth on {BRIDGE} (bridge kept by a keeper)",
                       "veth_bridge": f"+ veth on {BRIDGE1}, bridge made+removed per life"}, "none")

    peers.report()
    print(f"\n(a) exec /bin/true into a running /bin/sleep 3600 container, {o.n} runs after {o.warmup} warm-ups,"
          f" one warm {sys.executable} (ms)")
    table(exec_rows, "÷ ours")
    print(f"\n(b) one whole life (/bin/true) through Supervisor.start + wait_for(EXITED), each row {o.n} lives"
          f" after {o.warmup} warm-ups (ms; start: until sup.start returned, RUNNING)")
    table(net_rows, "÷ none")
    crashed = {r["label"]: len(r["crashes"]) for r in net_rows.values() if r.get("crashes")}
    print("Supervisor crashes (its block raised; replaced, the life not counted): "
          + (", ".join(f"{k}: {v}" for k, v in crashed.items()) if crashed else "none"))
    h = info.get("by_hand", {})
    if h.get("ok"):
        print(f"by hand with ip(8) into the keeper's netns: setup {h['setup_median_ms']:.2f} ms (4 commands),"
              f" teardown {h['teardown_median_ms']:.2f} ms, total {h['total_median_ms']:.2f} ms (medians)")
    elif h:
        print(f"by hand with ip(8): FAILED: {h.get('error')}")
    if "iproute_open_close_ms" in info:
        print(f"pyroute2 IPRoute() opened and closed: {info['iproute_open_close_ms']:.2f} ms median"
              " (attach opens 2, detach 1)")
    time.sleep(0.2)
    info["links_after"] = links()
    print(f"our interfaces after: {info['links_after'] or 'none'} (before: {links0 or 'none'})")
    for p in problems:
        print(f"PROBLEM: {p}")
    print(f"{time.time() - started:.0f} s")

    if o.json:
        with open(o.json, "w") as fh:
            json.dump({"n": o.n, "warmup": o.warmup, "python": sys.executable, "base": o.base, "nproc": os.cpu_count(),
                       "sleep_bundle": sleep_bundle, "argv": argvs, "exec": exec_rows, "net": net_rows,
                       "info": info, "links_before": links0, "problems": problems,
                       "peer_stderr": peers.stderr_text()[:2000],
                       "seconds": time.time() - started}, fh, indent=1)
    rows = list(exec_rows.values()) + list(net_rows.values())
    return 0 if rows and all(r.get("ok") for r in rows) and not problems and not info["links_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
