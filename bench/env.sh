# env.sh - sourced by single.sh and run.sh: settings, the shared common.sh, and the real
# supervisor console script + its interpreter (never the pyenv shims: pyenv exec costs tens of ms).
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARED=${SHARED:-$(cd "$BENCH/../../shared/bench" && pwd)}   # the team's shared/ beside the project
export RESULTS=${RESULTS:-$BENCH/results} RUNS=${RUNS:-50} WARMUP=${WARMUP:-5} BASE=${BASE:-/tmp/bench}
source "$SHARED/common.sh"          # RF, RUNC, CRUN, BWRAP1, UNSHARE, check_leaks (RESULTS set above)
if [ -z "${SUP:-}" ]; then
    SUP=$(command -v supervisor)
    if [[ $SUP == */shims/* ]] && command -v pyenv >/dev/null; then SUP=$(pyenv which supervisor); fi
fi
PY=${PY:-$(head -1 "$SUP" | sed -E 's/^#! *//; s/ .*//')}   # the console script's shebang interpreter
export SUP PY
