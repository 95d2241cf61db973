#!/usr/bin/env bash
# Benchmark our forwarder against dnsmasq / unbound / dnsdist / py-echo-rd with the
# shared DNS benchmark harness (loopback only, every load run bounded in time).
#
#   bench/run.sh                       # full bench: peers + fwd, hit+miss, sat1+rate (~5 min)
#   bench/run.sh --workers2            # also fwd2 (config `workers: 2`) on port 15331
#   bench/run.sh --targets fwd --workloads hit --modes sat1 --duration 5   # override defaults
#   bench/run.sh --no-fwd --duration 5 # the peers only
#   bench/run.sh --setup-only          # refresh the harness copy, install, build venv + gen/
#   bench/run.sh --python /usr/bin/python3.11   # fwd (and an echo) on that interpreter
#   bench/run.sh --encrypted --targets fwd --workloads miss   # fwd over UDP, TLS and HTTPS
#   bench/run.sh --report RUN_DIR      # re-render RUN_DIR/results.md from results.json
#   bench/run.sh --help                # this text + the harness's options
#
# What it does: copies the harness ($BENCH_HARNESS, default <repo>/../shared/bench,
# which may be read-only) into bench/.harness/ (refreshed on every run; .venv/, gen/,
# runs/ and smoke/ are kept), runs its setup.sh (idempotent: apt packages dnsperf knot
# dnsdist unbound dnsmasq, its own .venv), then its run.sh with these defaults:
#     --targets dnsmasq,unbound,dnsdist,py-echo-rd --workloads hit,miss --modes sat1,rate
#     --target-cmd fwd=15330=<bench/forwarder-target.sh {port} {upstream} {workdir}>
#     (--workers2: --target-cmd fwd2=15331=<... {workdir} 2>)
# followed by the arguments given here, which win (argparse keeps the last value;
# --target-cmd is additive).
# --python PY runs the forwarder on interpreter PY (from bench/.venv-<PY path>, built on
# first use with the project installed editable) and adds the target py-echo-rd.fwd: the
# batched-read echo on that same interpreter, so the hit path is compared with the socket
# ceiling of the Python it runs on. Results: bench/.harness/runs/<UTC stamp>/results.md,
# also reachable as bench/.harness/runs/latest. Exit status: the harness's, or 3 if
# any measured row ended in an error (the harness itself records those and goes on).
#
# Environment:
#   FORWARDER         forwarder command (default <repo>/.venv/bin/forwarder), run as
#                     `$FORWARDER run -c CONFIG` from the repo root
#   BENCH_MINIMAL=1   config with listen/upstreams/zones only (no policy, no cache)
#   BENCH_CONFIG_EXTRA  YAML appended to the generated config
#   BENCH_TARGET_CMD  replaces the whole fwd (and fwd2) command, harness placeholders
#                     allowed, run in the harness dir; e.g. the reference forwarder:
#                     BENCH_TARGET_CMD='exec {python} ref/dnslib_fwd.py --port {port} --upstream {upstream}'
#   BENCH_HARNESS     harness source directory (default <repo>/../shared/bench)
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd -- "$here/.." && pwd -P)"
H="$here/.harness"
FWD_PORT=15330
FWD2_PORT=15331

die() { echo "bench/run.sh: $*" >&2; exit 2; }
# single-quote for /bin/sh
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# --encrypted also measures the forwarder with its upstream over DNS over TLS (fwd-tls,
# port 15332) and DNS over HTTPS (fwd-https, port 15333): an Unbound started here (not by
# the harness, so its CPU shows in the "other" column, not the target's) terminates TLS
# on 127.0.0.1:15343 and HTTP/2 on 15344 with a certificate made on first use
# (bench/.harness/tls/) and forwards to the harness's Knot upstream; the forwarder
# verifies that certificate. Ratios are then also taken against fwd.
#
# ------------------------------------------------------------------ arguments
encrypted=0 workers2=0 no_fwd=0 setup_only=0 help=0 report="" python=""
out=""
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --workers2) workers2=1 ;;
    --encrypted) encrypted=1 ;;
    --no-fwd) no_fwd=1 ;;
    --setup-only) setup_only=1 ;;
    -h|--help) help=1 ;;
    --report)
      [ $# -ge 2 ] || die "--report needs a run directory"
      report="$2"; shift ;;
    --out)
      [ $# -ge 2 ] || die "--out needs a directory"
      out="$2"; pass+=("$1" "$2"); shift ;;
    --out=*) out="${1#--out=}"; pass+=("$1") ;;
    --python)
      [ $# -ge 2 ] || die "--python needs an interpreter"
      python="$2"; shift ;;
    --python=*) python="${1#--python=}" ;;
    *) pass+=("$1") ;;
  esac
  shift
done

if [ "$help" = 1 ]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
  src="${BENCH_HARNESS:-$repo/../shared/bench}"
  if [ -f "$src/run.py" ]; then
    echo; echo "----- harness options ($src/run.py --help) -----"
    python3 "$src/run.py" --help
  fi
  exit 0
fi

# ------------------------------------------------------------------ the interpreter
ECHO_PORT=15313
tcmds=()
compare=()
if [ -n "$python" ] && [ -z "$report" ]; then
  py="$(command -v -- "$python")" || die "--python $python: not found"
  py="$(readlink -f -- "$py")"
  pyvenv="$here/.venv-$(printf '%s' "$py" | tr -c 'A-Za-z0-9.' '-')"
  if ! "$pyvenv/bin/python" -c 'import forwarder, uvloop' 2>/dev/null; then
    echo "bench/run.sh: building $pyvenv from $py"
    rm -rf -- "$pyvenv"
    "$py" -m venv "$pyvenv" || die "--python $py: cannot build a venv (Debian: python3-venv)"
    "$pyvenv/bin/pip" install --quiet --disable-pip-version-check -e "$repo" \
      || die "--python $py: installing the project into $pyvenv failed"
  fi
  echo "bench/run.sh: fwd and py-echo-rd.fwd run on $("$pyvenv/bin/python" -VV | head -1)"
  export FORWARDER="${FORWARDER:-$pyvenv/bin/forwarder}"
  if [ "$setup_only" = 0 ]; then
    tcmds+=(--target-cmd "py-echo-rd.fwd=$ECHO_PORT=exec $(shq "$pyvenv/bin/python") \
{bench}/ref/echo_udp.py --port {port} --reader")
    compare=(--compare-to "dnsmasq,unbound,dnsdist,py-echo-rd,py-echo-rd.fwd")
  fi
fi

# ------------------------------------------------------------------ the fwd target(s)
if [ "$setup_only" = 0 ] && [ -z "$report" ] && [ "$no_fwd" = 0 ]; then
  if [ -n "${BENCH_TARGET_CMD:-}" ]; then
    cmd1="$BENCH_TARGET_CMD"
    cmd2="$BENCH_TARGET_CMD"
  else
    if [ -n "${FORWARDER:-}" ]; then
      first="${FORWARDER%% *}"
      (cd "$repo" && command -v "$first" >/dev/null 2>&1) \
        || die "FORWARDER='$FORWARDER': '$first' not found (it runs from $repo)"
    elif [ ! -x "$repo/.venv/bin/forwarder" ]; then
      die "$repo/.venv/bin/forwarder not found: install the project into .venv" \
          "(.venv/bin/pip install -e .), or set FORWARDER or BENCH_TARGET_CMD"
    fi
    w="exec /bin/sh $(shq "$here/forwarder-target.sh") {port} {upstream} {workdir}"
    cmd1="$w"
    cmd2="$w 2"
  fi
  tcmds+=(--target-cmd "fwd=$FWD_PORT=$cmd1")
  if [ "$workers2" = 1 ]; then tcmds+=(--target-cmd "fwd2=$FWD2_PORT=$cmd2"); fi
fi

# ------------------------------------------------------------------ refresh the harness copy
src="${BENCH_HARNESS:-$repo/../shared/bench}"
if ! [ -f "$src/run.py" ] || ! [ -f "$src/run.sh" ] || ! [ -f "$src/setup.sh" ]; then
  die "no benchmark harness at $src (set BENCH_HARNESS)"
fi
src="$(cd -- "$src" && pwd -P)"
[ "$src" != "$H" ] || die "BENCH_HARNESS must not be $H itself"
mkdir -p "$H"
exec 9>"$H/.lock"
flock -n 9 || die "another bench/run.sh is using $H (lock $H/.lock)"

keep=(! -name .venv ! -name gen ! -name runs ! -name smoke ! -name .lock ! -name .gen-stamp)
find "$H" -mindepth 1 -maxdepth 1 "${keep[@]}" -exec rm -rf -- {} +
tar -C "$src" --exclude=./.venv --exclude=./gen --exclude=./runs -cf - . | tar -C "$H" -xf -
# the source may be read-only; the copy must stay writable (and removable next time)
chmod u+w "$H"
find "$H" -mindepth 1 -maxdepth 1 "${keep[@]}" -exec chmod -R u+w -- {} +

# gen/ (zones + 2M-line miss file, ~20 s to build) is kept across runs; rebuild it
# when the generator changed
gen_sum="$(sha256sum "$H/gen_zones.py" | cut -d' ' -f1)"
if [ -d "$H/gen" ] && [ "$(cat "$H/.gen-stamp" 2>/dev/null || true)" != "$gen_sum" ]; then
  echo "bench/run.sh: gen_zones.py changed, regenerating gen/"
  rm -rf -- "$H/gen"
fi
stamp_gen() {
  if [ -f "$H/gen/queries/summary.json" ]; then echo "$gen_sum" > "$H/.gen-stamp"; fi
}

if [ -n "$report" ]; then
  [ -x "$H/.venv/bin/python" ] || die "no $H/.venv yet: run bench/run.sh --setup-only"
  exec "$H/.venv/bin/python" "$H/run.py" --report "$report"
fi

# ------------------------------------------------------------------ the TLS/HTTPS front
FRONT_TLS=15343 FRONT_HTTPS=15344 FRONT_PLAIN=15345
front_pid=""
stop_front() {
  if [ -n "$front_pid" ]; then kill "$front_pid" 2>/dev/null || true; wait "$front_pid" 2>/dev/null || true; fi
}
start_front() {
  local d="$H/tls"
  mkdir -p "$d"
  if [ ! -s "$d/cert.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj /CN=bench.test -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" \
      -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
  fi
  # Unbound, not dnsdist: dnsdist 1.7 sends what arrives over TLS on to its backend
  # over TCP, where Knot delayed some replies past the forwarder's 1 s timeout under
  # load; Unbound forwards over UDP, as the other targets do
  cat > "$d/unbound.conf" <<EOF2
# DoT and DoH in front of the harness's Knot upstream, for fwd-tls and fwd-https
server:
    interface: 127.0.0.1@$FRONT_PLAIN
    interface: 127.0.0.1@$FRONT_TLS
    interface: 127.0.0.1@$FRONT_HTTPS
    tls-port: $FRONT_TLS
    https-port: $FRONT_HTTPS
    tls-service-pem: "$d/cert.pem"
    tls-service-key: "$d/key.pem"
    http-endpoint: "/dns-query"
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$d"
    pidfile: ""
    use-syslog: no
    logfile: ""
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-ip6: no
    do-not-query-localhost: no
    qname-minimisation: no
    num-threads: 1
    msg-cache-size: 1m
    rrset-cache-size: 1m
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@15353
remote-control:
    control-enable: no
EOF2
  local unbound
  unbound="$(command -v unbound || command -v /usr/sbin/unbound)" \
    || die "--encrypted needs unbound (bench/run.sh --setup-only installs it)"
  "$unbound" -d -c "$d/unbound.conf" > "$d/unbound.log" 2>&1 &
  front_pid=$!
  trap stop_front EXIT
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$FRONT_HTTPS") 2>/dev/null; then break; fi
    kill -0 "$front_pid" 2>/dev/null || die "unbound (TLS front) exited: $(cat "$d/unbound.log")"
    sleep 0.1
  done
  echo "bench/run.sh: unbound TLS/HTTPS front (PID $front_pid) on 127.0.0.1:$FRONT_TLS, :$FRONT_HTTPS"
  local fwd="export BENCH_TLS_CA=$(shq "$d/cert.pem"); exec /bin/sh $(shq "$here/forwarder-target.sh")"
  tcmds+=(--target-cmd "fwd-tls=15332=$fwd {port} tls://127.0.0.1:$FRONT_TLS {workdir}")
  tcmds+=(--target-cmd "fwd-https=15333=$fwd {port} https://127.0.0.1:$FRONT_HTTPS/dns-query {workdir}")
  compare=(--compare-to "fwd,dnsmasq,unbound,dnsdist,py-echo-rd")
}

if [ "$setup_only" = 1 ]; then
  "$H/setup.sh"
  if [ ! -f "$H/gen/queries/summary.json" ]; then
    echo "bench/run.sh: generating $H/gen (zones + query files)"
    "$H/.venv/bin/python" "$H/gen_zones.py" --out "$H/gen"
  fi
  stamp_gen
  echo "bench/run.sh: harness ready in $H"
  exit 0
fi

# ------------------------------------------------------------------ run
if [ -z "$out" ]; then
  mkdir -p "$H/runs"
  while :; do
    stamp="$(date -u +%Y%m%dT%H%M%SZ)"
    [ -e "$H/runs/$stamp" ] || break
    sleep 1
  done
  out="$H/runs/$stamp"
  pass+=(--out "$out")
fi
run_dir="$(mkdir -p -- "$out" && cd -- "$out" && pwd -P)"
if [ "$encrypted" = 1 ]; then start_front; fi

defaults=(--targets "dnsmasq,unbound,dnsdist,py-echo-rd" --workloads "hit,miss"
          --modes "sat1,rate")
args=("${defaults[@]}" "${compare[@]}" "${tcmds[@]}" "${pass[@]}")
printf 'bench/run.sh: %s/run.sh' "$H"
printf ' %q' "${args[@]}"
echo

# in the background so that a SIGTERM/SIGINT to this script reaches the harness,
# which then stops everything it started (by PID) before exiting
"$H/run.sh" "${args[@]}" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT HUP
rc=0
while :; do
  wait "$child" && rc=0 || rc=$?
  kill -0 "$child" 2>/dev/null || break
done
trap - TERM INT HUP
stamp_gen

if [ -f "$run_dir/results.json" ] && [ -d "$H/runs" ] \
   && [ "$(dirname -- "$run_dir")" = "$(cd "$H/runs" && pwd -P)" ]; then
  ln -sfn "$(basename -- "$run_dir")" "$H/runs/latest"
fi
[ "$rc" = 0 ] || { echo "bench/run.sh: harness exited with status $rc" >&2; exit "$rc"; }
[ -f "$run_dir/results.json" ] || { echo "bench/run.sh: no $run_dir/results.json" >&2; exit 3; }

"$H/.venv/bin/python" - "$run_dir" <<'EOF'
import json, os, sys
rd = sys.argv[1]
rows = json.load(open(os.path.join(rd, "results.json")))["rows"]
bad = [r for r in rows if "error" in r]
dirty = [r for r in rows if r.get("contaminated")]
for r in bad:
    print(f"bench/run.sh: ERROR {r['target']} {r['workload']} {r['mode']}: {r['error']}",
          file=sys.stderr)
print(f"bench/run.sh: {len(rows)} rows, {len(bad)} errors, {len(dirty)} disturbed by other load"
      f"; results: {os.path.join(rd, 'results.md')}")
sys.exit(3 if bad or not rows else 0)
EOF
