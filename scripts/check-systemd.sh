#!/usr/bin/env bash
# Check systemd/forwarder.service: `systemd-analyze verify` must pass and
# `systemd-analyze security --offline=true` must rate the exposure at most 2.0
# (override with MAX_EXPOSURE=N.N; check another unit file with UNIT=PATH). Prints the
# score; exits non-zero on failure. VERBOSE=1 prints the whole security table.
#
# The unit's ExecStart binary (/opt/forwarder/bin/forwarder) is not installed on a
# build machine, and verify rejects a missing binary. So both checks run on a copy of
# the unit in a temporary directory whose ExecStart program is replaced by a stub
# script; every other line is checked as written.
#
# systemd-analyze comes from Debian's `systemd` package; when it is missing and the
# script runs as root with apt-get available, the package is installed.
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
unit="${UNIT:-${root}/systemd/forwarder.service}"
max_exposure="${MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ ${EUID} -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "systemd-analyze not found: installing Debian package systemd" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
    else
        echo "error: systemd-analyze not found (install the systemd package)" >&2
        exit 2
    fi
fi

echo "systemd-analyze: $(systemd-analyze --version | head -n 1)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-systemd.XXXXXX")
trap 'rm -rf -- "${tmp}"' EXIT

stub="${tmp}/bin/forwarder"
mkdir -p -- "${tmp}/bin"
printf '#!/bin/sh\nexit 0\n' >"${stub}"
chmod 0755 -- "${stub}"

# Replace the program of ExecStart= (keeping any prefix like "-" or "+" and the arguments).
copy="${tmp}/forwarder.service"
sed -E "s#^(ExecStart=[-@:+!]*)[^[:space:]]+#\\1${stub}#" -- "${unit}" >"${copy}"
if [[ $(grep -c "^ExecStart=[-@:+!]*${stub}" -- "${copy}") -ne 1 ]]; then
    echo "error: expected exactly one ExecStart= line in ${unit}" >&2
    exit 1
fi

status=0

echo "== systemd-analyze verify ${unit#"${root}"/}"
# verify exits 0 when it merely ignores a bad line ("Unknown key ...", "Failed to parse
# ..."), so any message about our unit fails the check too; messages about other units
# (noise from the build host) are shown but do not count.
verify_rc=0
verify_out=$(systemd-analyze verify --man=no -- "${copy}" 2>&1) || verify_rc=$?
if [[ -n ${verify_out} ]]; then
    printf '%s\n' "${verify_out//${tmp}\//}"
fi
if [[ ${verify_rc} -ne 0 ]] || grep -q 'forwarder\.service' <<<"${verify_out}"; then
    echo "verify: FAILED" >&2
    status=1
else
    echo "verify: OK"
fi

echo "== systemd-analyze security --offline=true ${unit#"${root}"/}"
security_out=$(systemd-analyze security --no-pager --offline=true -- "${copy}" 2>&1) || true
if [[ ${VERBOSE:-0} == 1 ]]; then
    printf '%s\n' "${security_out}"
else
    # The findings that cost exposure, then the summary line.
    grep -E '^✗' <<<"${security_out}" || true
fi
score=$(sed -nE 's/.*Overall exposure level for [^:]+: ([0-9]+(\.[0-9]+)?).*/\1/p' <<<"${security_out}")
if [[ -z ${score} ]]; then
    printf '%s\n' "${security_out}" >&2
    echo "security: could not read the exposure score" >&2
    exit 1
fi
echo "exposure score: ${score} (maximum ${max_exposure})"
if awk -v s="${score}" -v m="${max_exposure}" 'BEGIN { exit !(s > m) }'; then
    echo "security: FAILED (exposure ${score} > ${max_exposure})" >&2
    status=1
else
    echo "security: OK"
fi

exit "${status}"
