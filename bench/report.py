#!/usr/bin/env python3
"""report.py [RESULTS_DIR] - markdown report from single.json (hyperfine, single.sh) and
api_loop.json (api_loop.py): medians, the two targets, and every peer against us. Stdlib only."""

import json
import os
import sys
from typing import Any

TARGETS = {"cli": 1.5, "api": 1.2}


def load(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError) as e:
        print(f"> missing or unreadable: `{path}` ({e})\n")
        return None


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


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

    print("### Targets (ratio of medians)\n")
    print("| comparison | ours ms | reference ms | ratio | target | met |")
    print("|---|---:|---:|---:|---:|---|")
    checks = [("CLI one-shot vs `python3 -c pass` (hyperfine)", cli, pyc, TARGETS["cli"]),
              ("API life vs unshare+chroot, posix_spawn+waitpid (warm Python)", api_ms, amedian("posix_spawn"),
               TARGETS["api"]),
              ("API life vs unshare+chroot, subprocess.run (warm Python)", api_ms, amedian("subprocess"),
               TARGETS["api"])]
    for what, ours, ref, target in checks:
        q = ratio(ours, ref)
        met = "n/a" if q is None else ("yes" if q <= target else "NO")
        print(f"| {what} | {fmt(ours)} | {fmt(ref)} | {fmt(q)} | ≤ {target}× | {met} |")
    if cli is not None and pyc is not None:
        print(f"\nCLI median minus interpreter start-up (`python3 -c pass`): {cli - pyc:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
