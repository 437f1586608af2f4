#!/bin/bash
# run.sh - the whole benchmark in order: bundles (if missing), single.sh, api_loop.py, concurrency.py,
# idle.py, isolation.py, exec_net.py, report.
# Env: RUNS (default 50), WARMUP (5), BASE (/tmp/bench), RESULTS (bench/results), SUP, PY;
# concurrency.py: CREPS (repetitions per N, "200:5,1000:3"), CSLOW (crun's at N=1000, 2); idle.py: IDLE_N (1000),
# IDLE_WINDOW (10 s).
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ -f "$BASE/bundle/config.json" ] || "$SHARED/make-bundles.sh" "$BASE"
zombies() { ps -eo stat= | grep -c '^Z' || true; }
z0=$(zombies)
{ date -u; uname -r; nproc; uptime; echo "supervisor: $SUP"; echo "python: $PY"; env | grep '^PYTHON' || true
  git -C "$BENCH/.." rev-parse --short HEAD; git -C "$BENCH/.." status --short | head -20 || true
  runc --version | head -1 || true; crun --version | head -1 || true; bwrap --version; hyperfine --version
} > "$RESULTS/env.txt"

# This VM sets PYTHONDONTWRITEBYTECODE=1: an editable install would recompile its modules on every
# CLI run (a wheel install has its .pyc from pip). Give the tree its bytecode once, as pip would.
PYTHONDONTWRITEBYTECODE= "$PY" -m compileall -q "$BENCH/../supervisor" >/dev/null

rc=0
"$BENCH/single.sh" || { rc=$?; echo "single.sh failed (exit $rc)" >&2; }
"$SHARED/in-bench-ns.sh" "$PY" "$BENCH/api_loop.py" -n "$RUNS" --warmup "$WARMUP" --base "$BASE" \
    --json "$RESULTS/api_loop.json" || { rc=$?; echo "api_loop.py failed (exit $rc)" >&2; }
"$SHARED/in-bench-ns.sh" "$PY" "$BENCH/concurrency.py" --base "$BASE" --json "$RESULTS/concurrency.json" \
    || { rc=$?; echo "concurrency.py failed (exit $rc)" >&2; }
"$SHARED/in-bench-ns.sh" "$PY" "$BENCH/idle.py" --base "$BASE" --json "$RESULTS/idle.json" \
    || { rc=$?; echo "idle.py failed (exit $rc)" >&2; }
"$SHARED/in-bench-ns.sh" "$PY" "$BENCH/isolation.py" -n "$RUNS" --warmup "$WARMUP" --base "$BASE" \
    --json "$RESULTS/isolation.json" || { rc=$?; echo "isolation.py failed (exit $rc)" >&2; }
"$SHARED/in-bench-ns.sh" "$PY" "$BENCH/exec_net.py" -n "$RUNS" --warmup "$WARMUP" --base "$BASE" \
    --json "$RESULTS/exec_net.json" || { rc=$?; echo "exec_net.py failed (exit $rc)" >&2; }

sleep 0.2   # let init reap anything orphaned before counting
{ check_leaks; echo "zombies: before=$z0 after=$(zombies)" \
      "'/bin/sleep 3600' processes: $(pgrep -cxf '/bin/sleep 3600' || true)"
  echo "our interfaces (svh*, svc*, svbench*, svbm*): $(ip -o link | grep -cE ': (svh|svc|svbench|svbm)' || true)" \
      "supervisor-* cgroups: $(ls -d /sys/fs/cgroup/*/supervisor-* 2>/dev/null | wc -l)"; uptime
} | tee -a "$RESULTS/env.txt"
echo
"$PY" "$BENCH/report.py" "$RESULTS" | tee "$RESULTS/report.md"
exit "$rc"
