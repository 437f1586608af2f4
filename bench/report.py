#!/usr/bin/env python3
"""report.py [RESULTS_DIR] - markdown report from single.json (hyperfine, single.sh) and
api_loop.json (api_loop.py): medians, the two targets, and every peer against us; plus, when they
exist, concurrency.json (concurrency.py: N at once, containers/s), idle.json (idle.py: what 1000 idle
containers cost the supervisor), isolation.json (isolation.py: what a cgroup, seccomp and a user namespace
add to a life) and exec_net.json (exec_net.py: exec latency, what a veth adds). Stdlib only."""

import json
import os
import sys
from typing import Any

TARGETS = {"cli": 1.5, "api": 1.2, "concurrency": 1.0}


def load(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError) as e:
        print(f"> missing or unreadable: `{path}` ({e})\n")
        return None


def load_optional(path: str) -> dict[str, Any] | None:
    return load(path) if os.path.exists(path) else None


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def isolation_section(iso: dict[str, Any]) -> None:
    res: dict[str, dict[str, dict[str, Any]]] = iso["results"]
    how = "each row's lives in a row" if iso.get("order") == "blocks" else "a tool's rows in turn, shuffled"
    print(f"### What a cgroup, seccomp (default profile) and a user namespace add to one life (`isolation.json`,"
          f" {iso['n']} per row after {iso['warmup']}, {how}, ms per life)\n")
    print("| row | median | min | max | own cpu | children cpu | + ms vs base | × base | + ms vs default |"
          " × default |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows in res.values():
        for r in rows.values():
            if r.get("ok"):
                print(f"| {r['label']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} |"
                      f" {r['self_cpu_ms']:.2f} | {r['children_cpu_ms']:.2f} | {fmt(r.get('added_vs_base_ms'))} |"
                      f" {fmt(r.get('ratio_vs_base'))} | {fmt(r.get('added_vs_default_ms'))} |"
                      f" {fmt(r.get('ratio_vs_default'))} |")
            else:
                print(f"| {r['label']} | FAILED: {r.get('error')} | | | | | | | | |")
    print("\n(base: ours and crun without a cgroup, runc its default, which has one. default: with a cgroup.)\n")
    marginal: dict[str, dict[str, dict[str, float | None]]] = iso["marginal"]
    tools = list(marginal)
    print("| added ms (difference of medians) | " + " | ".join(f"{t} alone | {t} over default" for t in tools) + " |")
    print("|---|" + "---:|---:|" * len(tools))
    for feat in ("cgroup", "seccomp", "userns", "all three"):
        cells = []
        for t in tools:
            m = marginal[t][feat]
            cells += [fmt(m.get("alone")), fmt(m.get("over_default", m.get("with_the_rest")))]
        print(f"| {feat} | " + " | ".join(cells) + " |")
    print("\n(alone: over the base; over default: on top of a cgroup; for the cgroup row: on top of seccomp+userns.)\n")
    print("| features | ours | crun | runc | ours ÷ crun | ours ÷ runc |")
    print("|---|---:|---:|---:|---:|---:|")
    def med(tool: str, key: str) -> float | None:
        r = res.get(tool, {}).get(key, {})
        return r["median_ms"] if r.get("ok") else None

    for key in res.get("ours", {}):
        ours, crun, runc = med("ours", key), med("crun", key), med("runc", key)
        print(f"| {key} | {fmt(ours)} | {fmt(crun)} | {fmt(runc)} | {fmt(ratio(ours, crun))} |"
              f" {fmt(ratio(ours, runc))} |")
    lit = iso.get("literal_no_cgroup_plan") or {}
    print(f"\n`compile_seccomp(DEFAULT_PROFILE)` (in `plan()`, every `supervisor.run`):"
          f" {fmt(iso.get('compile_seccomp_ms'))} ms median. The OCI JSON given to crun/runc parses back to"
          f" `DEFAULT_PROFILE`: {'yes' if iso.get('seccomp_json_equivalent') else 'NO'}. The plain no-cgroup plan"
          f" (`attrs.evolve(plan(spec, name), cgroup=None, resources=None)`): "
          + ("ran" if lit.get("ok") else f"failed: `{lit.get('error')}`") + ".\n")


def exec_net_section(x: dict[str, Any]) -> None:
    print(f"### exec into a running container (`exec_net.json`, {x['n']} runs after {x['warmup']}, ms)\n")
    print("| row | median | min | max | own cpu | children cpu | + ms vs ours | ÷ ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in x["exec"].values():
        if r.get("ok"):
            print(f"| {r['label']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} |"
                  f" {r['self_cpu_ms']:.2f} | {r['children_cpu_ms']:.2f} | {fmt(r.get('added_ms'))} |"
                  f" {fmt(r.get('ratio'))} |")
        else:
            print(f"| {r.get('label', '?')} | FAILED: {r.get('error')} | | | | | | |")
    print(f"\n### What a veth adds to a life through the Supervisor (`exec_net.json`, {x['n']} lives per row after"
          f" {x['warmup']}, ms)\n")
    print("| row | life median | min | max | own cpu | children cpu | + ms | ÷ no network | start median |"
          " Supervisor crashes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in x["net"].values():
        if r.get("ok"):
            print(f"| {r['label']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} |"
                  f" {r['self_cpu_ms']:.2f} | {r['children_cpu_ms']:.2f} | {fmt(r.get('added_ms'))} |"
                  f" {fmt(r.get('ratio'))} | {fmt(r.get('start_median_ms'))} | {len(r.get('crashes', []))} |")
        else:
            print(f"| {r.get('label', '?')} | FAILED: {r.get('error')} | | | | | | | | |")
    info = x.get("info", {})
    h = info.get("by_hand", {})
    notes = []
    if h.get("ok"):
        notes.append(f"by hand with ip(8): setup {h['setup_median_ms']:.2f} ms (4 commands), teardown"
                     f" {h['teardown_median_ms']:.2f} ms")
    if "iproute_open_close_ms" in info:
        notes.append(f"one pyroute2 `IPRoute()` opened and closed: {info['iproute_open_close_ms']:.2f} ms")
    notes.append(f"our interfaces left after the run: {', '.join(info.get('links_after') or []) or 'none'}")
    notes += [f"PROBLEM: {p}" for p in x.get("problems", [])]
    print("\n" + "; ".join(notes) + ".\n")


def main() -> int:
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    single, api = load(os.path.join(d, "single.json")), load(os.path.join(d, "api_loop.json"))

    rows: dict[str, dict[str, Any]] = {}  # hyperfine label -> result, in seconds
    for r in (single or {}).get("results", []):
        rows[r["command"]] = r

    def median(prefix: str) -> float | None:  # ms, by label prefix
        hit = [r for label, r in rows.items() if label.startswith(prefix)]
        return hit[0]["median"] * 1e3 if hit else None

    arows: dict[str, dict[str, Any]] = (api or {}).get("rows", {})
    conc, idle = load_optional(os.path.join(d, "concurrency.json")), load_optional(os.path.join(d, "idle.json"))

    def amedian(key: str) -> float | None:
        r = arows.get(key, {})
        return r["median_ms"] if r.get("ok") else None

    cli, pyc, api_ms = median("supervisor run"), median("python3 -c pass"), amedian("api")

    if single:
        n = len(single["results"][0]["times"]) if single["results"] else 0
        print(f"### One life per tool, hyperfine, one invocation (`single.json`, {n} runs each, wall ms)\n")
        print("| row | median | min | max | cpu (user+sys, mean) | peer ÷ CLI | peer ÷ API |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, r in rows.items():
            m = r["median"] * 1e3
            print(f"| {label} | {m:.2f} | {r['min'] * 1e3:.2f} | {r['max'] * 1e3:.2f} | "
                  f"{(r['user'] + r['system']) * 1e3:.2f} | {fmt(ratio(m, cli))} | {fmt(ratio(m, api_ms))} |")
        print("\n(peer ÷ API compares hyperfine's shell-corrected one-shot rows with a life started from a warm"
              " Python process: indicative only.)\n")

    if api:
        print(f"### From one warm Python process (`api_loop.json`, {api['n']} lives each after {api['warmup']}"
              " warm-ups, ms per life)\n")
        print("| row | median | min | max | own cpu | children cpu |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in arows.values():
            if r.get("ok"):
                print(f"| {r['label']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['max_ms']:.2f} | "
                      f"{r['self_cpu_ms']:.2f} | {r['children_cpu_ms']:.2f} |")
            else:
                print(f"| {r['label']} | FAILED: {r.get('error')} | | | | |")
        print()

    if conc:
        print(f"### N containers at once, `/bin/sh -c 'exit 0'` (`concurrency.json`; peers: {conc['method']})\n")
        print("| row | N | reps | median s | min–max s | containers/s | cpu ms per container (own) | rate ÷ unshare |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for n, rows in conc["results"].items():
            for r in rows.values():
                if r.get("ok"):
                    print(f"| {r['label']} | {n} | {r['reps']} | {r['median_s']:.3f} |"
                          f" {r['min_s']:.3f}–{r['max_s']:.3f} | {r['rate']:.0f} |"
                          f" {r['cpu_ms']:.2f} ({r['own_cpu_ms']:.2f}) | {fmt(r.get('rate_vs_unshare'))} |")
                else:
                    print(f"| {r['label']} | {n} | FAILED: {r.get('error')} | | | | | |")
        print(f"\n(cpu: this process's own + its reaped children's; own: the Python process alone. Load average"
              f" {conc['loadavg_before']} before, {conc['loadavg_after']} after; {conc['nproc']} CPUs. fds leaked by"
              f" the Supervisor batches: {conc['fd_leaks_supervisor']}; host zombies {conc['zombies_before']} before,"
              f" {conc['zombies_after']} after.)\n")

    if idle:
        i = idle.get("idle")
        print(f"### {idle['n']} idle containers in one Supervisor (`idle.json`, `{' '.join(idle['argv'])}`)\n")
        if i:
            b, a = idle["before"], idle["after"]
            print("| measure | value |")
            print("|---|---:|")
            for what, value in (
                    ("all RUNNING after (s)", f"{idle['start_s']:.2f}"),
                    ("VmRSS before the Supervisor (MB)", f"{b['VmRSS'] / 1024:.1f}"),
                    ("VmRSS idle (MB)", f"{i['VmRSS_kb'] / 1024:.1f}"),
                    ("VmRSS per container (kB)", f"{(i['VmRSS_kb'] - b['VmRSS']) / idle['n']:.1f}"),
                    ("VmHWM, end of the idle window (MB)", f"{i['VmHWM_kb'] / 1024:.1f}"),
                    (f"own CPU over {i['seconds']:.1f} s idle (ms)", f"{i['cpu_s'] * 1e3:.1f}"),
                    ("context switches over the window", f"{i['wakeups']}"),
                    ("fds / trio tasks / threads while idle", f"{i['fds']} / {i['tasks']} / {i['Threads']}"),
                    (f"stopped ({idle['stop']}) and reaped in (s)", f"{idle['stop_s']:.2f}"),
                    ("fds before / after the Supervisor", f"{b['fds']} / {idle.get('fds_after_block')}"),
                    ("`sleep 3600` processes / host zombies after",
                     f"{idle['sleep_procs_after']} / {idle['zombies_after']}"),
                    ("VmRSS after the block (MB)", f"{a['VmRSS'] / 1024:.1f}")):
                print(f"| {what} | {value} |")
            t = idle["targets"]
            print("\n| target | measured | limit | met |")
            print("|---|---:|---:|---|")
            print(f"| idle VmRSS | {t['rss_mb']:.1f} MB | < {t['rss_target_mb']:.0f} MB |"
                  f" {'yes' if t['rss_met'] else 'NO'} |")
            print(f"| idle CPU, share of one core | {t['cpu_share'] * 100:.3f} % |"
                  f" < {t['cpu_target_share'] * 100:.0f} % | {'yes' if t['cpu_met'] else 'NO'} |")
        print(f"\nChecks: {'all passed' if idle.get('ok') else '; '.join(idle.get('problems', []))}\n")

    iso, xnet = load_optional(os.path.join(d, "isolation.json")), load_optional(os.path.join(d, "exec_net.json"))
    if iso:
        isolation_section(iso)
    if xnet:
        exec_net_section(xnet)

    print("### Targets (ratio of medians)\n")
    print("| comparison | ours ms | reference ms | ratio | target | met |")
    print("|---|---:|---:|---:|---:|---|")
    checks = [("CLI one-shot vs `python3 -c pass` (hyperfine)", cli, pyc, TARGETS["cli"]),
              ("API life vs unshare+chroot, posix_spawn+waitpid (warm Python)", api_ms, amedian("posix_spawn"),
               TARGETS["api"]),
              ("API life vs unshare+chroot, subprocess.run (warm Python)", api_ms, amedian("subprocess"),
               TARGETS["api"]),
              ("API life without a cgroup (as unshare has none) vs unshare+chroot, posix_spawn+waitpid",
               amedian("api_no_cgroup"), amedian("posix_spawn"), TARGETS["api"])]
    for n, rows in (conc or {}).get("results", {}).items():
        sup, uns = rows.get("supervisor", {}), rows.get("unshare", {})
        checks.append((f"{n} containers at once, Supervisor vs unshare+chroot via posix_spawn (wall; ≤ 1× is our rate"
                       " ≥ theirs)", sup["median_s"] * 1e3 if sup.get("ok") else None,
                       uns["median_s"] * 1e3 if uns.get("ok") else None, TARGETS["concurrency"]))
    for what, ours, ref, target in checks:
        q = ratio(ours, ref)
        met = "n/a" if q is None else ("yes" if q <= target else "NO")
        print(f"| {what} | {fmt(ours)} | {fmt(ref)} | {fmt(q)} | ≤ {target}× | {met} |")
    if cli is not None and pyc is not None:
        print(f"\nCLI median minus interpreter start-up (`python3 -c pass`): {cli - pyc:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
