#!/bin/bash
# single.sh - ONE whole container life (/bin/true on the shared busybox bundle) per tool, all rows
# in one hyperfine invocation (shared conditions) -> $RESULTS/single.json.
# Re-executes itself under the shared in-bench-ns.sh (crun needs the cgroup2 mount hidden).
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ -z "${BENCH_IN_NS:-}" ]; then BENCH_IN_NS=1 exec "$SHARED/in-bench-ns.sh" "$0" "$@"; fi
[ -f "$BASE/bundle/config.json" ] || "$SHARED/make-bundles.sh" "$BASE"

# the planner service (supervisor-oci planner), for the row that offers it the call
PLANNER_ROOT=$BASE/planner-root
"$(dirname "$SUP")/supervisor-oci" --root "$PLANNER_ROOT" planner </dev/null &
planner=$!
trap 'kill $planner; wait $planner' EXIT
for _ in $(seq 200); do [ -S "$PLANNER_ROOT/planner.sock" ] && break; sleep 0.05; done

rows=(
  "supervisor run (CLI one-shot)"          "SUPERVISOR_PLANNER= $SUP run --bundle $BASE/bundle b-\$\$"
  "supervisor run, with a planner"         "SUPERVISOR_PLANNER=$PLANNER_ROOT/planner.sock $SUP run --bundle $BASE/bundle b-\$\$"
  "python3 -c pass ($PY)"                  "$PY -c pass"
  "python3 -S -c pass (no site, no .pth)"  "$PY -S -c pass"
  "unshare+chroot (pid,net,ipc,uts,mnt)"   "$UNSHARE /bin/true"
  "bwrap --as-pid-1 (pid,net,ipc,uts,mnt)" "$BWRAP1 /bin/true"
  "crun run (pid,net,ipc,uts,mnt)"         "$CRUN $BASE/bundle b-\$\$"
  "runc run (pid,net,ipc,uts,mnt)"         "$RUNC $BASE/bundle b-\$\$"
)
args=()   # a row that fails once is reported and left out, so the others are still measured
for ((i = 0; i < ${#rows[@]}; i += 2)); do
    if out=$(sh -c "${rows[i+1]}" 2>&1 </dev/null); then args+=(-n "${rows[i]}" "${rows[i+1]}")
    else echo "SKIPPED (fails): ${rows[i]}: ${rows[i+1]}: ${out:0:300}" >&2; fi
done
hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic --export-json "$RESULTS/single.json" "${args[@]}"
kill $planner; wait $planner; trap - EXIT
check_leaks
