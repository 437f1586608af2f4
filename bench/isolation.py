#!/usr/bin/env python3
"""isolation.py [-n N] [--warmup W] [--order shuffle|blocks] [--tools ...] [--base DIR] [--json PATH]

What a cgroup, a user namespace and the default seccomp profile each add to one container life
(``/bin/true``, pid,net,ipc,uts,mount namespaces), through our API and for crun and runc, every row
from this one warm Python process. All 8 combinations of the three features are measured per tool
(runc: the 4 with a cgroup, it always makes one):

  ours   ``supervisor.run(spec, name=...)``: ``BASE/bundle`` (cgroup: the default), the same with
         ``attrs.evolve(spec, seccomp=DEFAULT_PROFILE)``, ``BASE/bundle-userns`` (0->100000 x65536).
         No cgroup: ``open_container(spec, name=..., plan=p)`` + ``wait()`` with
         ``p = attrs.evolve(plan(attrs.evolve(spec, cgroups_path="."), name), cgroup=None, resources=None)``
         (planned every life, as ``run`` does): no cgroup made, limited, joined or removed, but the same
         mounts: the bundle's ``/sys/fs/cgroup`` mount binds the supervisor's own (existing) cgroup
         directories instead of the container's. The brief's plain ``attrs.evolve(plan(spec, name),
         cgroup=None, resources=None)`` is tried once first and its outcome recorded (it still binds
         the container's cgroup directories, which then do not exist).
         Every life of ours adds ``BENCH_LIFE=<i>`` to the spec's env: a plan with a cgroup differs per
         container (the cgroup's path), so its bootstrap message is never in ``bootstrap.encode``'s cache,
         while the no-cgroup plan would be the same every life and hit it (about 1.5-2.5 ms less here), which
         is no cost of the cgroup. The informational row ``base_cached`` runs the plain base spec, whose
         message then comes from the cache.
  crun   ``crun --root BASE/crun-root [--cgroup-manager=disabled] run --bundle B ID``
  runc   ``runc --root BASE/runc-root run --bundle B ID``
         B: ``bundle``, ``bundle-userns``, and ``bundle-seccomp`` / ``bundle-userns-seccomp`` written here:
         the same config.json with ``linux.seccomp`` = DEFAULT_PROFILE as OCI JSON (checked: our own
         ``parse_seccomp`` of it gives DEFAULT_PROFILE back).

The peers are started with ``os.posix_spawn`` (stdin/stdout on /dev/null, stderr to a temporary file,
shown on failure) + ``os.waitpid``; ids ``b-iso-<pid>-<i>`` (so check_leaks sees leftovers). Each tool
is one phase (the shared README: wall time depends on which tool ran just before); within a phase its
rows take turns, one life each, in W warm-up rounds then N timed ones, each round in a seeded random
order (``--order shuffle``, the default: with a fixed rotation every row always followed the same other
row, and a life with a cgroup measured ~3-5 ms slower after one without); ``--order blocks`` runs each
row's W + N lives in a row instead, as api_loop.py does.
Per row: median/min/max wall ms, own and reaped children's CPU per life, and the added ms and ratio
against the tool's own base (ours and crun: no cgroup; runc: its default) and against its default
(with a cgroup). Also: the median time of ``compile_seccomp(DEFAULT_PROFILE)``, which ``plan()`` does on
every ``supervisor.run`` of a spec with seccomp.
Re-executes itself under ../shared/bench/in-bench-ns.sh when the cgroup2 mount is visible (crun needs it).
Exits 1 if a row failed (the other rows are still measured and written).
"""

import argparse
import itertools
import json
import os
import random
import resource
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

import supervisor
from supervisor.plan import Plan, plan
from supervisor.seccomp import DEFAULT_PROFILE, Seccomp, compile_seccomp, parse_seccomp
from peers import Peers  # bench/peers.py: the scripts run from bench/

BENCH = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SHARED") or os.path.join(BENCH, "..", "..", "shared", "bench")
FEATURES = ("cgroup", "seccomp", "userns")
TOOLS = ("ours", "crun", "runc")
LABELS = {"ours": "supervisor.run() (trio API)", "crun": "crun run", "runc": "runc run"}


def key_of(combo: tuple[bool, ...]) -> str:
    names = [f for f, on in zip(FEATURES, combo, strict=True) if on]
    return "+".join(names) if names else "base"


# base, cgroup, seccomp, userns, then the pairs, then all three
COMBOS = {key_of(c): c for c in sorted(itertools.product((False, True), repeat=3),
                                       key=lambda c: (sum(c), c[::-1]))}


def cgroup2_visible() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/sys/fs/cgroup/unified" and line.split(" - ", 1)[1].startswith("cgroup2 ")
                   for line in f)


def reexec_in_bench_ns() -> None:
    if cgroup2_visible() and not os.environ.get("BENCH_IN_NS"):
        script = os.path.join(SHARED, "in-bench-ns.sh")
        os.execve(script, [script, sys.executable, *sys.argv], {**os.environ, "BENCH_IN_NS": "1"})


def oci_seccomp(p: Seccomp) -> dict[str, Any]:
    """``p`` as an OCI ``linux.seccomp`` object."""
    d: dict[str, Any] = {"defaultAction": p.default_action}
    if p.default_errno_ret is not None:
        d["defaultErrnoRet"] = p.default_errno_ret
    if p.architectures:
        d["architectures"] = list(p.architectures)
    if p.flags:
        d["flags"] = list(p.flags)
    rules = []
    for r in p.syscalls:
        rule: dict[str, Any] = {"names": list(r.names), "action": r.action}
        if r.errno_ret is not None:
            rule["errnoRet"] = r.errno_ret
        if r.args:
            rule["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op} for a in r.args]
        rules.append(rule)
    d["syscalls"] = rules
    return d


def write_seccomp_bundle(base: str, src: str, dst: str) -> str:
    """BASE/dst/config.json = BASE/src's with linux.seccomp = DEFAULT_PROFILE (root.path made absolute)."""
    with open(os.path.join(base, src, "config.json")) as f:
        config = json.load(f)
    if not os.path.isabs(config["root"]["path"]):
        config["root"]["path"] = os.path.join(base, src, config["root"]["path"])
    config["linux"]["seccomp"] = oci_seccomp(DEFAULT_PROFILE)
    bundle = os.path.join(base, dst)
    os.makedirs(bundle, exist_ok=True)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
        f.write("\n")
    return bundle


def no_cgroup_plan(spec: supervisor.ContainerSpec, name: str) -> Plan:
    """A plan without a cgroup (annotation supervisor.cgroup=false; the device rule goes too): its
    /sys/fs/cgroup mount binds the supervisor's own cgroup directories, the same mounts otherwise."""
    return plan(attrs.evolve(spec, annotations={**spec.annotations, "supervisor.cgroup": "false"}, resources=None),
                name)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


Life = Callable[[int], Awaitable[None]]


def schedule(keys: list[str], n: int, warmup: int, order: str, seed: int = 1) -> list[tuple[str, bool]]:
    """(row, timed) in the order the lives run. ``shuffle``: W + N rounds, every row once per round, the
    order of each round shuffled (seeded), so no row always follows the same other row; ``blocks``: each
    row's W + N lives in a row, one row after the other (like api_loop.py)."""
    if order == "blocks":
        return [(k, i >= warmup) for k in keys for i in range(warmup + n)]
    rng = random.Random(seed)
    out = []
    for rnd in range(warmup + n):
        perm = list(keys)
        rng.shuffle(perm)
        out += [(k, rnd >= warmup) for k in perm]
    return out


async def rounds(lives: dict[str, Life], n: int, warmup: int, order: str = "shuffle") -> dict[str, dict[str, Any]]:
    """Every row W + N lives (see ``schedule``), the first W untimed. A row that raises is dropped (its
    error kept), the others go on."""
    keys = list(lives)
    walls: dict[str, list[float]] = {k: [] for k in keys}
    own: dict[str, float] = dict.fromkeys(keys, 0.0)
    child: dict[str, float] = dict.fromkeys(keys, 0.0)
    errors: dict[str, str] = {}
    seq = 0
    for key, timed in schedule(keys, n, warmup, order):
        if key in errors:
            continue
        seq += 1
        c0, ch0, t = time.process_time(), children_cpu(), time.perf_counter()
        try:
            await lives[key](seq)
        except Exception as e:
            traceback.print_exc()
            errors[key] = f"{type(e).__name__}: {e}"
            continue
        wall = (time.perf_counter() - t) * 1e3
        if timed:
            walls[key].append(wall)
            own[key] += time.process_time() - c0
            child[key] += children_cpu() - ch0
    return {key: {"ok": False, "error": errors[key]} if key in errors else row_stats(walls[key], own[key], child[key])
            for key in keys}


def row_stats(walls: list[float], own_s: float, child_s: float) -> dict[str, Any]:
    """A row from its timed walls (ms) and its summed own and children's CPU (s)."""
    n = len(walls)
    return {"ok": True, "median_ms": statistics.median(walls), "min_ms": min(walls), "max_ms": max(walls),
            "self_cpu_ms": own_s * 1e3 / n, "children_cpu_ms": child_s * 1e3 / n, "wall_ms": walls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=int(os.environ.get("RUNS", 50)), help="timed rounds (env RUNS)")
    ap.add_argument("--warmup", type=int, default=int(os.environ.get("WARMUP", 5)))
    ap.add_argument("--order", choices=("shuffle", "blocks"), default="shuffle",
                    help="shuffle (default): a tool's rows in turn, each round in a seeded random order; blocks:"
                         " each row's lives in a row")
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--base", default=os.environ.get("BASE", "/tmp/bench"))
    ap.add_argument("--json", help="write the results here")
    o = ap.parse_args()
    reexec_in_bench_ns()
    started = time.time()

    base = o.base
    bundles = {(False, False): os.path.join(base, "bundle"), (False, True): os.path.join(base, "bundle-userns"),
               (True, False): write_seccomp_bundle(base, "bundle", "bundle-seccomp"),
               (True, True): write_seccomp_bundle(base, "bundle-userns", "bundle-userns-seccomp")}
    with open(os.path.join(bundles[True, False], "config.json")) as f:
        equivalent = parse_seccomp(json.load(f)["linux"]["seccomp"]) == DEFAULT_PROFILE
    if not equivalent:
        print("the OCI seccomp JSON written does not parse back to DEFAULT_PROFILE", file=sys.stderr)

    plain = supervisor.ContainerSpec.from_bundle(bundles[False, False])
    userns = supervisor.ContainerSpec.from_bundle(bundles[False, True])
    specs = {(s, u): attrs.evolve(userns if u else plain, seccomp=DEFAULT_PROFILE if s else None)
             for s in (False, True) for u in (False, True)}
    tag = f"iso-{os.getpid()}"

    def our_life(cgroup: bool, seccomp: bool, user: bool, cached: bool = False) -> Life:
        spec = specs[seccomp, user]

        async def life(i: int) -> None:
            name = f"{tag}-{i}"
            spec_i = spec
            if not cached:
                # A plan with a cgroup names it, so every container's message is new; one without would
                # be the same every life and come from encode's cache. One env variable more makes every
                # life's plan new in every row (the cache is left alone: the other rows keep theirs).
                spec_i = attrs.evolve(spec, process=attrs.evolve(spec.process,
                                                                 env=(*spec.process.env, f"BENCH_LIFE={i}")))
            if cgroup:
                status = await supervisor.run(spec_i, name=name)
            else:
                p = no_cgroup_plan(spec_i, name)
                async with supervisor.open_container(spec_i, name=name, plan=p) as c:
                    status = await c.wait()
            if status.code != 0:
                raise RuntimeError(f"container {name} {status}")
        return life

    async def literal_recipe() -> dict[str, Any]:
        """The brief's no-cgroup plan, as written: once, outcome recorded."""
        name = f"{tag}-literal"
        try:
            p = attrs.evolve(plan(plain, name), cgroup=None, resources=None)
            async with supervisor.open_container(plain, name=name, plan=p) as c:
                status = await c.wait()
            return {"ok": status.code == 0, "status": str(status)}
        except Exception as e:
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    peers = Peers()
    roots = {"crun": os.path.join(base, "crun-root"), "runc": os.path.join(base, "runc-root")}
    argvs: dict[str, dict[str, list[str]]] = {}

    def peer_argv(tool: str, cgroup: bool, seccomp: bool, user: bool) -> list[str]:
        exe = shutil.which(tool)
        if exe is None:
            raise FileNotFoundError(f"{tool} not found in PATH")
        opts = [] if cgroup else ["--cgroup-manager=disabled"]
        return [exe, "--root", roots[tool], *opts, "run", "--bundle", bundles[seccomp, user]]

    def peer_life(argv: list[str]) -> Life:
        async def life(i: int) -> None:
            peers.run([*argv, f"b-{tag}-{i}"])
        return life

    results: dict[str, dict[str, dict[str, Any]]] = {}
    literal: dict[str, Any] = {}
    compile_ms: float | None = None

    async def everything() -> None:
        nonlocal compile_ms
        for tool in o.tools:
            lives: dict[str, Life] = {}
            for key, (cg, sc, us) in COMBOS.items():
                if tool == "ours":
                    lives[key] = our_life(cg, sc, us)
                    if key == "base":
                        lives["base_cached"] = our_life(cg, sc, us, cached=True)
                elif tool == "crun" or cg:  # runc always makes a cgroup
                    argvs.setdefault(tool, {})[key] = peer_argv(tool, cg, sc, us)
                    lives[key] = peer_life(argvs[tool][key])
            if tool == "ours":
                literal.update(await literal_recipe())
            t = time.perf_counter()
            results[tool] = await rounds(lives, o.n, o.warmup, o.order)
            print(f"  {tool}: {len(lives)} rows x {o.warmup}+{o.n} lives, {time.perf_counter() - t:.1f} s",
                  file=sys.stderr)
        if "ours" in o.tools:
            times = []
            for _ in range(max(o.n, 20)):
                t = time.perf_counter()
                compile_seccomp(DEFAULT_PROFILE)
                times.append((time.perf_counter() - t) * 1e3)
            compile_ms = statistics.median(times)

    trio.run(everything)

    # added ms and ratios: against the tool's own base (no cgroup; runc: its default) and its default
    def ref_key(tool: str) -> str:
        return "cgroup" if tool == "runc" else "base"

    for tool, rows in results.items():
        for key, r in rows.items():
            r["label"] = f"{LABELS[tool]}: {key}" if key != "base_cached" else \
                f"{LABELS[tool]}: base, message from encode's cache"
            if not r["ok"]:
                continue
            for name, ref in (("base", ref_key(tool)), ("default", "cgroup")):
                q = rows.get(ref, {})
                if q.get("ok"):
                    r[f"added_vs_{name}_ms"] = r["median_ms"] - q["median_ms"]
                    r[f"ratio_vs_{name}"] = r["median_ms"] / q["median_ms"]

    # each feature's cost: alone (over the base) and on top of the default (a cgroup)
    def diff(rows: dict[str, dict[str, Any]], a: str, b: str) -> float | None:
        x, y = rows.get(a, {}), rows.get(b, {})
        return x["median_ms"] - y["median_ms"] if x.get("ok") and y.get("ok") else None

    marginal: dict[str, dict[str, dict[str, float | None]]] = {}
    for tool, rows in results.items():
        marginal[tool] = {
            "cgroup": {"alone": diff(rows, "cgroup", "base"),
                       "with_the_rest": diff(rows, "cgroup+seccomp+userns", "seccomp+userns")},
            "seccomp": {"alone": diff(rows, "seccomp", "base"), "over_default": diff(rows, "cgroup+seccomp", "cgroup")},
            "userns": {"alone": diff(rows, "userns", "base"), "over_default": diff(rows, "cgroup+userns", "cgroup")},
            "all three": {"alone": diff(rows, "cgroup+seccomp+userns", "base"),
                          "over_default": diff(rows, "cgroup+seccomp+userns", "cgroup")},
        }
    cross: dict[str, dict[str, float]] = {}
    for key in COMBOS:
        ours = results.get("ours", {}).get(key, {})
        if not ours.get("ok"):
            continue
        for peer in ("crun", "runc"):
            p = results.get(peer, {}).get(key, {})
            if p.get("ok"):
                cross.setdefault(key, {})[f"ours/{peer}"] = ours["median_ms"] / p["median_ms"]

    errors = peers.stderr_text()
    how = "a tool's rows in turn, shuffled every round" if o.order == "shuffle" else "each row's lives in a row"
    print(f"\nOne life (/bin/true), {o.n} per row after {o.warmup} warm-ups, {how}; one warm"
          f" {sys.executable} (ms per life)")
    print(f"{'row':50} {'median':>7} {'min':>7} {'max':>7} {'own cpu':>8} {'child cpu':>9} {'+ms base':>8}"
          f" {'×base':>6} {'+ms dflt':>8} {'×dflt':>6}")

    def cell(x: float | None, spec: str = "8.2f") -> str:
        return "–".rjust(int(spec.split(".")[0])) if x is None else format(x, spec)

    for rows in results.values():
        for r in rows.values():
            if r["ok"]:
                print(f"{r['label']:50} {r['median_ms']:7.2f} {r['min_ms']:7.2f} {r['max_ms']:7.2f}"
                      f" {r['self_cpu_ms']:8.2f} {r['children_cpu_ms']:9.2f} {cell(r.get('added_vs_base_ms'))}"
                      f" {cell(r.get('ratio_vs_base'), '6.2f')} {cell(r.get('added_vs_default_ms'))}"
                      f" {cell(r.get('ratio_vs_default'), '6.2f')}")
            else:
                print(f"{r['label']:50} FAILED: {r['error']}")
    print("(base: ours and crun without a cgroup, runc its default, which has one; dflt: with a cgroup)")
    print("\nAdded ms per feature (difference of medians): alone = over the base; over dflt = on top of a cgroup"
          " (for the cgroup row: on top of seccomp+userns)")
    print(f"{'feature':12} " + " ".join(f"{t + ' alone':>12} {t + ' over dflt':>16}" for t in marginal))
    for feat in ("cgroup", "seccomp", "userns", "all three"):
        cells = []
        for t in marginal:
            m = marginal[t][feat]
            second = m.get("over_default", m.get("with_the_rest"))
            cells.append(f"{cell(m['alone'], '12.2f')} {cell(second, '16.2f')}")
        print(f"{feat:12} " + " ".join(cells))
    if cross:
        print("\nours ÷ peer, same features (medians): "
              + "; ".join(f"{k}: " + ", ".join(f"{p} {q:.2f}" for p, q in v.items()) for k, v in cross.items()))
    if compile_ms is not None:
        print(f"compile_seccomp(DEFAULT_PROFILE), done by plan() in every supervisor.run: {compile_ms:.2f} ms median")
    print(f"OCI seccomp JSON parses back to DEFAULT_PROFILE: {equivalent}")
    if literal:
        print("the brief's no-cgroup plan, attrs.evolve(plan(spec, name), cgroup=None, resources=None): "
              + (f"ran ({literal.get('status')})" if literal["ok"] else f"FAILED: {literal.get('error')}"))
    if errors.strip():
        print(f"peers' stderr (first 2000 chars):\n{errors[:2000]}", file=sys.stderr)
    print(f"{time.time() - started:.0f} s")

    if o.json:
        with open(o.json, "w") as fh:
            json.dump({"n": o.n, "warmup": o.warmup, "order": o.order, "python": sys.executable, "base": base,
                       "nproc": os.cpu_count(), "bundles": {key_of((False, s, u)): b for (s, u), b in bundles.items()},
                       "peer_argv": argvs, "seccomp_json_equivalent": equivalent, "compile_seccomp_ms": compile_ms,
                       "literal_no_cgroup_plan": literal, "results": results, "marginal": marginal,
                       "cross": cross, "peer_stderr": errors[:2000], "seconds": time.time() - started}, fh, indent=1)
    return 0 if all(r["ok"] for rows in results.values() for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
