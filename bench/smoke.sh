#!/usr/bin/env bash
# Fast (~10-15 s once the harness is set up) end-to-end check of the bench plumbing:
# one 2-second saturating dnsperf run of cache hits against `fwd` only, through
# bench/run.sh (same harness copy, wrapper and config). Exit status 0 only if the
# forwarder started, answered NOERROR to the readiness probe and completed queries
# under load; 3 if the run recorded an error (see the log it names), else the
# harness's status. Extra arguments go to bench/run.sh and win, e.g.
#   bench/smoke.sh                     # our forwarder (<repo>/.venv/bin/forwarder)
#   BENCH_MINIMAL=1 bench/smoke.sh     # config without policy/cache
#   bench/smoke.sh --workers2          # also fwd2 (workers: 2)
#   BENCH_TARGET_CMD='exec {python} ref/dnslib_fwd.py --port {port} --upstream {upstream}' bench/smoke.sh
# Output: bench/.harness/smoke/ (replaced on every smoke run; results.md, logs/).
# The first run on a fresh box also installs packages and generates gen/ (~1 min);
# run `bench/run.sh --setup-only` beforehand to keep the smoke itself fast.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
out="$here/.harness/smoke"
rm -rf -- "$out"
t0=$(date +%s)
rc=0
"$here/run.sh" --targets fwd --workloads hit --modes sat1 --duration 2 --skip-micro \
  --quiet-wait 0 --retries 0 --ready-timeout 10 --out "$out" "$@" || rc=$?
echo "bench/smoke.sh: status $rc after $(( $(date +%s) - t0 )) s; logs: $out/logs/"
exit "$rc"
