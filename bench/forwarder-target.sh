#!/bin/sh
# Harness target wrapper: writes a bench config for our forwarder into WORKDIR,
# then execs the forwarder, so the forwarder itself is the process the harness
# measures (CPU of its whole tree) and stops (SIGTERM by PID).
#
#   usage: forwarder-target.sh PORT UPSTREAM WORKDIR [WORKERS]
#     PORT      UDP port on 127.0.0.1 to listen on
#     UPSTREAM  host:port of the upstream (the harness passes 127.0.0.1:15353), or
#               tls://host:port (DNS over TLS) or https://host:port/path (DNS over
#               HTTPS), verified with server name bench.test and the CA in BENCH_TLS_CA
#     WORKDIR   scratch dir; the config goes to WORKDIR/bench.yaml
#     WORKERS   optional; adds top-level `workers: N` to the config
#
# Started by bench/run.sh as
#   --target-cmd 'fwd=15330=exec /bin/sh .../bench/forwarder-target.sh {port} {upstream} {workdir}'
#
# Environment:
#   FORWARDER           command to run instead of <repo>/.venv/bin/forwarder; may
#                       have arguments (e.g. '.venv/bin/python -m forwarder': it
#                       runs in the repo root). Called as: $FORWARDER run -c CONFIG
#   BENCH_MINIMAL=1     write only listen/upstreams/zones (no policy, no cache)
#   BENCH_CONFIG_EXTRA  YAML text appended to the config (top-level keys)
#   BENCH_TLS_CA        CA file for a tls:// or https:// UPSTREAM
set -eu

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: $0 PORT UPSTREAM WORKDIR [WORKERS]" >&2
  exit 2
fi
port=$1
upstream=$2
workdir=$3
workers=${4:-}
case "$port" in ''|*[!0-9]*) echo "$0: bad PORT '$port'" >&2; exit 2 ;; esac
case "$workers" in *[!0-9]*) echo "$0: bad WORKERS '$workers'" >&2; exit 2 ;; esac

here=$(cd -- "$(dirname -- "$0")" && pwd -P)
repo=$(dirname -- "$here")
conf="$workdir/bench.yaml"
mkdir -p -- "$workdir"

case "$upstream" in
  tls://*)
    group="{transport: tls, servers: [\"${upstream#tls://}\"], tls: {server_name: bench.test, ca_file: \"${BENCH_TLS_CA:?}\"}}" ;;
  https://*)
    group="{transport: https, servers: [\"$upstream\"], tls: {server_name: bench.test, ca_file: \"${BENCH_TLS_CA:?}\"}}" ;;
  *)
    group="{servers: [\"$upstream\"]}" ;;
esac
config="listen: [{address: 127.0.0.1, port: $port}]
upstreams: {up: $group}
allow_root: true
metrics: {enabled: false}
"
if [ "${BENCH_MINIMAL:-0}" = 1 ]; then
  config="${config}zones: [{match: \".\", upstream: up}]
"
else
  config="${config}zones: [{match: \".\", upstream: up, policy: private-only}]
policies: {private-only: {allowed: [default, 0.0.0.0/0, \"::/0\"]}}
cache: {max_entries: 1000000}
"
fi
if [ -n "$workers" ]; then
  config="${config}workers: $workers
"
fi
if [ -n "${BENCH_CONFIG_EXTRA:-}" ]; then
  config="${config}${BENCH_CONFIG_EXTRA}
"
fi
printf '%s' "$config" > "$conf"

# goes to the harness log (runs/<stamp>/logs/NAME.log)
echo "forwarder-target.sh: $conf"
sed 's/^/  /' "$conf"

cd -- "$repo"
if [ -n "${FORWARDER:-}" ]; then
  # shellcheck disable=SC2086  # FORWARDER may be a command with arguments
  exec $FORWARDER run -c "$conf"
fi
exec "$repo/.venv/bin/forwarder" run -c "$conf"
