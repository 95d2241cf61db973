#!/usr/bin/env bash
# Smoke-test the container build without a Docker engine.
#
# Repeats the Dockerfile's install steps in a fresh temporary directory DIR:
#   COPY . /src (minus .dockerignore)      -> DIR/src
#   python -m venv; pip install /src       -> DIR/venv
#   config at /etc/forwarder/forwarder.yaml -> DIR/etc/forwarder/forwarder.yaml
# then runs the image's command (`forwarder run -c .../forwarder.yaml`) in the
# background and checks that:
#   1. a DNS query over UDP and over TCP to 127.0.0.1:5353 gets a DNS reply (any rcode:
#      REFUSED/SERVFAIL prove the process serves),
#   2. the HEALTHCHECK's request (urllib GET http://127.0.0.1:9153/healthz) answers 200,
#   3. SIGTERM (what `docker stop` sends) makes it exit with status 0.
# Every wait is bounded by SMOKE_TIMEOUT seconds (default 20).
#
# The config used forwards "." to 127.0.0.1:1 (nothing listens there), so no query
# leaves the machine. The repository's config/forwarder.yaml (the image's default) is
# only validated with `forwarder check-config`.
#
# Environment:
#   SMOKE_SKIP_HEALTH=1   skip step 2 (while /healthz is being built)
#   SMOKE_DNS_PORT        DNS port (default 5353; another free port if 5353 is taken)
#   SMOKE_METRICS_PORT    metrics port (default 9153; likewise)
#   SMOKE_TIMEOUT         seconds for each wait (default 20)
#   SMOKE_KEEP=1          keep DIR (venv, config, server log) afterwards
#   SMOKE_PROJECT         project to install (default: this repository)
#   PYTHON                interpreter for the venv (default python3.11, else python3)
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
project="${SMOKE_PROJECT:-${root}}"
timeout="${SMOKE_TIMEOUT:-20}"

if [[ -z ${PYTHON:-} ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

log() { printf '[smoke] %s\n' "$*"; }
fail() {
    printf '[smoke] FAIL: %s\n' "$*" >&2
    if [[ -n ${dir:-} && -s ${dir}/server.log ]]; then
        printf '[smoke] ---- server log (last 60 lines) ----\n' >&2
        tail -n 60 -- "${dir}/server.log" >&2
    fi
    exit 1
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/forwarder-smoke.XXXXXX")
server_pid=""

cleanup() {
    if [[ -n ${server_pid} ]] && kill -0 "${server_pid}" 2>/dev/null; then
        kill -TERM "${server_pid}" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "${server_pid}" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "${server_pid}" 2>/dev/null || true
    fi
    if [[ ${SMOKE_KEEP:-0} == 1 ]]; then
        log "kept ${dir}"
    else
        rm -rf -- "${dir}"
    fi
}
trap cleanup EXIT

# True when the child with this PID has exited (gone, or a zombie waiting for `wait`).
exited() {
    local state
    state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ ${state} == Z || ${state} == X ]]
}

# ---- 1. the Dockerfile's install steps --------------------------------------------------

log "work dir ${dir}"
"${PYTHON}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "${PYTHON} is older than Python 3.11"

# COPY . /src, honouring the simple patterns in .dockerignore (not "!" exceptions).
excludes=()
if [[ -f ${project}/.dockerignore ]]; then
    while IFS= read -r pattern || [[ -n ${pattern} ]]; do
        pattern="${pattern%%#*}"
        pattern="${pattern%"${pattern##*[![:space:]]}"}"
        [[ -z ${pattern} || ${pattern} == '!'* ]] && continue
        pattern="${pattern#/}"
        if [[ ${pattern} == '**/'* ]]; then
            excludes+=("--exclude=${pattern#'**/'}") # at any depth
        else
            excludes+=("--exclude=./${pattern}") # relative to the context root, as Docker
        fi
    done <"${project}/.dockerignore"
fi
mkdir -p -- "${dir}/src"
tar -C "${project}" --warning=no-file-ignored "${excludes[@]}" -cf - . \
    | tar -C "${dir}/src" -xf -

log "python -m venv; pip install (this downloads the dependencies)"
"${PYTHON}" -m venv -- "${dir}/venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "${dir}/venv/bin/pip" install --quiet --no-cache-dir \
    -- "${dir}/src" || fail "pip install failed"
[[ -x ${dir}/venv/bin/forwarder ]] || fail "pip install did not create the forwarder script"
py="${dir}/venv/bin/python"

# Ports: the container's, unless taken on this machine (then any free one).
pick_port() {
    "${py}" - "$1" <<'PY'
import socket
import sys

def free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:  # as servers do: TIME_WAIT leftovers are fine
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True

port = int(sys.argv[1])
while not free(port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
print(port)
PY
}
dns_port=$(pick_port "${SMOKE_DNS_PORT:-5353}")
metrics_port=$(pick_port "${SMOKE_METRICS_PORT:-9153}")
[[ ${dns_port} == "${SMOKE_DNS_PORT:-5353}" ]] || log "port 5353 is taken: DNS on ${dns_port}"
[[ ${metrics_port} == "${SMOKE_METRICS_PORT:-9153}" ]] \
    || log "port 9153 is taken: metrics on ${metrics_port}"

mkdir -p -- "${dir}/etc/forwarder"
config="${dir}/etc/forwarder/forwarder.yaml"
cat >"${config}" <<EOF
# container-smoke.sh: serve on loopback; "." goes to 127.0.0.1:1, where nothing listens.
listen: [{address: 127.0.0.1, port: ${dns_port}}]
upstreams: {up: {servers: ["127.0.0.1:1"], timeout: 0.2, attempts: 1}}
zones: [{match: ".", upstream: up}]
metrics: {listen: "127.0.0.1:${metrics_port}"}
EOF

cd -- "${dir}" # nothing from the source tree on sys.path: the installed package runs

if [[ -f ${project}/config/forwarder.yaml ]]; then
    cp -- "${project}/config/forwarder.yaml" "${dir}/etc/forwarder/default.yaml"
    "${dir}/venv/bin/forwarder" check-config "${dir}/etc/forwarder/default.yaml" \
        || fail "the image's default config/forwarder.yaml does not pass check-config"
    log "config/forwarder.yaml (the image default) passes check-config"
fi

# ---- 2. the container's command ---------------------------------------------------------

# The image runs as a non-root user (USER 10053); so does this run when started as root.
as_user=()
if [[ $(id -u) -eq 0 ]]; then
    chmod -R a+rX -- "${dir}"
    as_user=(setpriv --reuid=10053 --regid=10053 --clear-groups --)
fi
log "starting: forwarder run -c ${config}${as_user:+ (as uid 10053)}"
env -u NOTIFY_SOCKET "${as_user[@]}" "${dir}/venv/bin/forwarder" run -c "${config}" \
    >"${dir}/server.log" 2>&1 &
server_pid=$!

# One DNS query; exit 0 on any well-formed reply to it. dnspython when the venv has
# it, else a hand-built query with the stdlib socket module.
probe=$(cat <<'PY'
import secrets, socket, struct, sys

proto, port = sys.argv[1], int(sys.argv[2])
name = "smoke.forwarder.test."
try:
    import dns.message, dns.query, dns.rcode
except ImportError:
    dns = None
if dns is not None:
    q = dns.message.make_query(name, "A")
    ask = dns.query.udp if proto == "udp" else dns.query.tcp
    r = ask(q, "127.0.0.1", port=port, timeout=1.0)  # checks ID and question itself
    print(f"{proto} reply: {dns.rcode.to_text(r.rcode())}")
    sys.exit(0)
qid = secrets.randbits(16)
question = b"".join(bytes([len(x)]) + x.encode() for x in name.rstrip(".").split("."))
question += b"\0" + struct.pack("!HH", 1, 1)  # A IN
query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question  # RD
if proto == "udp":
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(query, ("127.0.0.1", port))
        reply = s.recv(65535)
else:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = s.recv(65535)
            if not chunk:
                sys.exit("connection closed before a full reply")
            data += chunk
        reply = data[2:2 + struct.unpack("!H", data[:2])[0]]
rid, flags = struct.unpack("!HH", reply[:4])
if rid != qid or not flags & 0x8000:
    sys.exit(f"not a reply to our query: id {rid} flags {flags:#06x}")
if reply[12:12 + len(question)].lower() != question:
    sys.exit("reply question does not match")
rcodes = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
print(f"{proto} reply: {rcodes.get(flags & 0xF, flags & 0xF)}")
PY
)

# The Dockerfile's HEALTHCHECK command, with the port of this run.
health=$(cat <<'PY'
import sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz"
sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)
PY
)

# wait_for WHAT CMD...: run CMD until it succeeds; fail after ${timeout}s or if the
# server exits.
wait_for() {
    local what=$1 deadline=$((SECONDS + timeout)) out
    shift
    while true; do
        if exited "${server_pid}"; then
            local status=0
            wait "${server_pid}" || status=$?
            server_pid=""
            fail "forwarder exited (status ${status}) while waiting for ${what}"
        fi
        if out=$("$@" 2>&1); then
            log "${what}: ok${out:+ (${out})}"
            return 0
        fi
        ((SECONDS < deadline)) || fail "no ${what} within ${timeout}s; last error: ${out##*$'\n'}"
        sleep 0.5
    done
}

wait_for "DNS reply over UDP on 127.0.0.1:${dns_port}" "${py}" -c "${probe}" udp "${dns_port}"
wait_for "DNS reply over TCP on 127.0.0.1:${dns_port}" "${py}" -c "${probe}" tcp "${dns_port}"
if [[ ${SMOKE_SKIP_HEALTH:-0} == 1 ]]; then
    log "healthz: skipped (SMOKE_SKIP_HEALTH=1)"
else
    wait_for "healthz 200 on 127.0.0.1:${metrics_port}" "${py}" -c "${health}" "${metrics_port}"
fi

# ---- 3. docker stop: SIGTERM, then the exit status -------------------------------------

log "sending SIGTERM to ${server_pid}"
kill -TERM "${server_pid}"
deadline=$((SECONDS + timeout))
until exited "${server_pid}"; do
    if ((SECONDS >= deadline)); then
        kill -KILL "${server_pid}" 2>/dev/null || true
        fail "forwarder did not exit within ${timeout}s of SIGTERM"
    fi
    sleep 0.2
done
status=0
wait "${server_pid}" || status=$?
server_pid=""
((status == 0)) || fail "forwarder exited with status ${status} on SIGTERM (expected 0)"
log "exited 0 on SIGTERM"
if grep -q Traceback -- "${dir}/server.log"; then
    log "warning: the server log contains a traceback:"
    cat -- "${dir}/server.log"
fi
log "PASS"
