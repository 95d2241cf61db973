#!/usr/bin/env bash
# Smoke-test the container build without a Docker engine.
#
# Repeats the Dockerfile's install steps in a fresh temporary directory DIR:
#   COPY . /src (minus .dockerignore)        -> DIR/src
#   python -m venv; pip install --require-hashes -r requirements.lock;
#   pip install --no-deps --no-build-isolation /src   -> DIR/venv
#   config/container.yaml at /etc/forwarder/forwarder.yaml -> DIR/etc/forwarder/default.yaml
# then runs the image's CMD and HEALTHCHECK commands, read from the Dockerfile (with the
# config path of this run), as the image's user (uid 10053) when started as root:
#   A. on loopback with a config of its own (any user, any machine):
#      1. a DNS query over UDP and over TCP gets a DNS reply (REFUSED: the config
#         refuses every name, so nothing leaves the machine),
#      2. the HEALTHCHECK command exits 0 while it serves,
#      3. SIGTERM (what `docker stop` sends) makes it exit with status 0, after which
#         the HEALTHCHECK command exits 1;
#   B. the image's default config as it is (0.0.0.0:53, metrics 0.0.0.0:9153), in a
#      network namespace of its own where net.ipv4.ip_unprivileged_port_start=53, as
#      Docker sets it: uid 10053 binds port 53 without a capability, answers over UDP
#      and TCP on port 53 (forwarding to a stand-in resolver on [::1]:53 that the
#      namespace's resolv.conf names), the HEALTHCHECK command finds /readyz and exits 0,
#      and SIGTERM ends it with status 0. Needs root and `ip netns`; skipped otherwise
#      (SMOKE_NETNS=0 skips it too).
# Every wait is bounded by SMOKE_TIMEOUT seconds (default 20).
#
# Environment:
#   SMOKE_DNS_PORT        phase A's DNS port (default 5353; another free port if taken)
#   SMOKE_METRICS_PORT    phase A's metrics port (default 9153; likewise)
#   SMOKE_TIMEOUT         seconds for each wait (default 20)
#   SMOKE_NETNS=0         skip phase B
#   SMOKE_KEEP=1          keep DIR (venv, config, server logs) afterwards
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
resolver_pid=""
netns=""

stop_pid() {
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL "$1" 2>/dev/null || true
}

cleanup() {
    stop_pid "${server_pid}"
    stop_pid "${resolver_pid}"
    [[ -z ${netns} ]] || ip netns delete "${netns}" 2>/dev/null || true
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

log "python -m venv; pip install --require-hashes -r requirements.lock; pip install --no-deps /src"
[[ -f ${dir}/src/requirements.lock ]] || fail "requirements.lock is not in the build context"
"${PYTHON}" -m venv -- "${dir}/venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"${dir}/venv/bin/pip" install --quiet --no-cache-dir --require-hashes \
    -r "${dir}/src/requirements.lock" || fail "pip install --require-hashes failed"
"${dir}/venv/bin/pip" install --quiet --no-cache-dir --no-deps --no-build-isolation \
    -- "${dir}/src" || fail "pip install of the project failed"
[[ -x ${dir}/venv/bin/forwarder ]] || fail "pip install did not create the forwarder script"
py="${dir}/venv/bin/python"
export PATH="${dir}/venv/bin:${PATH}" # the image's ENV PATH: CMD and HEALTHCHECK find forwarder

# The Dockerfile's CMD and HEALTHCHECK commands (exec form), one word a line.
dockerfile_command() {
    "${py}" - "${project}/Dockerfile" "$1" <<'PY'
import json
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read().replace("\\\n", " ")
lines = [line.strip() for line in text.splitlines()]
if sys.argv[2] == "HEALTHCHECK":
    found = [line for line in lines if line.startswith("HEALTHCHECK ")]
    command = re.search(r"\bCMD\s+(\[.*\])", found[-1]).group(1)
else:
    found = [line for line in lines if line.startswith("CMD ")]
    command = found[-1][4:]
print("\n".join(json.loads(command)))
PY
}
mapfile -t image_cmd < <(dockerfile_command CMD)
mapfile -t image_health < <(dockerfile_command HEALTHCHECK)
[[ ${#image_cmd[@]} -gt 0 && ${#image_health[@]} -gt 0 ]] \
    || fail "no CMD or HEALTHCHECK in exec form in the Dockerfile"
image_config=/etc/forwarder/forwarder.yaml
log "image CMD: ${image_cmd[*]}"
log "image HEALTHCHECK: ${image_health[*]}"
# with_config CONFIG WORDS...: WORDS, one a line, with the image's config path made CONFIG
with_config() {
    local config=$1 word
    shift
    for word in "$@"; do printf '%s\n' "${word//${image_config}/${config}}"; done
}

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
printf '%s\n' \
    "# container-smoke.sh: serve on loopback; every name is refused, so nothing leaves." \
    "listen: [{address: 127.0.0.1, port: ${dns_port}}]" \
    "zones: [{match: \".\", action: refuse}]" \
    "metrics: {listen: \"127.0.0.1:${metrics_port}\"}" >"${config}"

cd -- "${dir}" # nothing from the source tree on sys.path: the installed package runs

default="${dir}/etc/forwarder/default.yaml"
cp -- "${project}/config/container.yaml" "${default}"
resolv="${dir}/etc/resolv.conf"
echo "nameserver ::1" >"${resolv}" # phase B's stand-in resolver; check-config reads it too
FORWARDER_RESOLV_CONF="${resolv}" forwarder check-config "${default}" \
    || fail "the image's default config/container.yaml does not pass check-config"
log "config/container.yaml (the image default) passes check-config"

# The image runs as a non-root user (USER 10053); so does this run when started as root.
as_user=()
if [[ $(id -u) -eq 0 ]]; then
    chmod -R a+rX -- "${dir}"
    as_user=(setpriv --reuid=10053 --regid=10053 --clear-groups --)
fi

# One DNS query to 127.0.0.1:PORT; exit 0 on a well-formed reply to it (with RCODE when
# given), its rcode printed. dnspython when the venv has it, else a hand-built query.
probe=$(
    cat <<'PY'
import secrets, socket, struct, sys

proto, port = sys.argv[1], int(sys.argv[2])
expect = sys.argv[3] if len(sys.argv) > 3 else None
name = "smoke.forwarder.test."
try:
    import dns.message, dns.query, dns.rcode
except ImportError:
    dns = None
if dns is not None:
    q = dns.message.make_query(name, "A")
    ask = dns.query.udp if proto == "udp" else dns.query.tcp
    r = ask(q, "127.0.0.1", port=port, timeout=1.0)  # checks ID and question itself
    got = dns.rcode.to_text(r.rcode())
    print(f"{proto} reply: {got}")
    sys.exit(0 if expect in (None, got) else f"expected {expect}, got {got}")
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
got = rcodes.get(flags & 0xF, str(flags & 0xF))
print(f"{proto} reply: {got}")
sys.exit(0 if expect in (None, got) else f"expected {expect}, got {got}")
PY
)

# The stand-in for a container's resolver (phase B): NOERROR to every query over UDP and
# TCP on [::1]:53, IPv6 only, so that the forwarder's 0.0.0.0:53 stays free.
resolver=$(
    cat <<'PY'
import socket
import threading

def reply(query):
    return query[:2] + bytes([0x84 | (query[2] & 0x01), 0x80]) + query[4:]

def serve_udp(sock):
    while True:
        data, peer = sock.recvfrom(65535)
        if len(data) >= 12:
            sock.sendto(reply(data), peer)

def serve_tcp(conn):
    with conn:
        while len(head := conn.recv(2, socket.MSG_WAITALL)) == 2:
            data = conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
            out = reply(data)
            conn.sendall(len(out).to_bytes(2, "big") + out)

udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
for s in (udp, tcp):
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::1", 53))
tcp.listen()
threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
print("resolver on [::1]:53", flush=True)
while True:
    threading.Thread(target=serve_tcp, args=(tcp.accept()[0],), daemon=True).start()
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
            log "${what}: ok${out:+ (${out//$'\n'/ })}"
            return 0
        fi
        ((SECONDS < deadline)) || fail "no ${what} within ${timeout}s; last error: ${out##*$'\n'}"
        sleep 0.5
    done
}

# stop_server: SIGTERM (what `docker stop` sends); the exit status must be 0.
stop_server() {
    log "sending SIGTERM to ${server_pid}"
    kill -TERM "${server_pid}"
    local deadline=$((SECONDS + timeout)) status=0
    until exited "${server_pid}"; do
        if ((SECONDS >= deadline)); then
            kill -KILL "${server_pid}" 2>/dev/null || true
            fail "forwarder did not exit within ${timeout}s of SIGTERM"
        fi
        sleep 0.2
    done
    wait "${server_pid}" || status=$?
    server_pid=""
    ((status == 0)) || fail "forwarder exited with status ${status} on SIGTERM (expected 0)"
    log "exited 0 on SIGTERM"
    if grep -q Traceback -- "${dir}/server.log"; then
        log "warning: the server log contains a traceback:"
        cat -- "${dir}/server.log"
    fi
}

# ---- A. the image's command and health check, on loopback ------------------------------

mapfile -t run_a < <(with_config "${config}" "${image_cmd[@]}")
mapfile -t health_a < <(with_config "${config}" "${image_health[@]}")
log "A: starting: ${run_a[*]}${as_user:+ (as uid 10053)}"
env -u NOTIFY_SOCKET "${as_user[@]}" "${run_a[@]}" >"${dir}/server.log" 2>&1 &
server_pid=$!

wait_for "REFUSED over UDP on 127.0.0.1:${dns_port}" "${py}" -c "${probe}" udp "${dns_port}" REFUSED
wait_for "REFUSED over TCP on 127.0.0.1:${dns_port}" "${py}" -c "${probe}" tcp "${dns_port}" REFUSED
wait_for "HEALTHCHECK exits 0" "${as_user[@]}" "${health_a[@]}"
stop_server
if out=$("${as_user[@]}" "${health_a[@]}" --timeout 1 2>&1); then
    fail "the HEALTHCHECK command still exits 0 after the forwarder stopped: ${out}"
fi
log "HEALTHCHECK exits 1 once stopped (${out//$'\n'/ })"

# ---- B. the image's default config on port 53, unprivileged, in a namespace of its own --

if [[ ${SMOKE_NETNS:-1} == 0 ]]; then
    log "B: skipped (SMOKE_NETNS=0)"
elif [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null 2>&1; then
    log "B: skipped (needs root and \`ip netns\`)"
else
    netns="forwarder-smoke-$$"
    ip netns add "${netns}" || fail "cannot create network namespace ${netns}"
    inns=(ip netns exec "${netns}")
    "${inns[@]}" ip link set lo up
    # what Docker 20.10+ does in a container's namespace (it sets 0; 53 is enough)
    "${inns[@]}" sysctl -q -w net.ipv4.ip_unprivileged_port_start=53 \
        || fail "cannot set net.ipv4.ip_unprivileged_port_start in ${netns}"
    "${inns[@]}" "${py}" -c "${resolver}" >"${dir}/resolver.log" 2>&1 &
    resolver_pid=$!

    mapfile -t run_b < <(with_config "${default}" "${image_cmd[@]}")
    mapfile -t health_b < <(with_config "${default}" "${image_health[@]}")
    log "B: in namespace ${netns}: ${run_b[*]} (as uid 10053, no capabilities)"
    env -u NOTIFY_SOCKET FORWARDER_RESOLV_CONF="${resolv}" "${inns[@]}" "${as_user[@]}" \
        "${run_b[@]}" >"${dir}/server.log" 2>&1 &
    server_pid=$!
    wait_for "NOERROR over UDP on 127.0.0.1:53 (forwarded)" \
        "${inns[@]}" "${py}" -c "${probe}" udp 53 NOERROR
    wait_for "NOERROR over TCP on 127.0.0.1:53 (forwarded)" \
        "${inns[@]}" "${py}" -c "${probe}" tcp 53 NOERROR
    wait_for "HEALTHCHECK exits 0 (default config)" \
        "${inns[@]}" "${as_user[@]}" "${health_b[@]}"
    grep -q "serving on udp 0.0.0.0:53" -- "${dir}/server.log" \
        || fail "the default config did not serve on 0.0.0.0:53"
    stop_server
fi
log "PASS"
