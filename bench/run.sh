#!/bin/bash
# run.sh - the whole benchmark in order: bundles (if missing), single.sh, api_loop.py, report.
# Env: RUNS (default 50), WARMUP (5), BASE (/tmp/bench), RESULTS (bench/results), SUP, PY.
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

sleep 0.2   # let init reap anything orphaned before counting
{ check_leaks; echo "zombies: before=$z0 after=$(zombies)"; uptime; } | tee -a "$RESULTS/env.txt"
echo
"$PY" "$BENCH/report.py" "$RESULTS" | tee "$RESULTS/report.md"
exit "$rc"
