# Shared by the scripts: timed, announced steps.
# shellcheck shell=bash

step() {
    local name=$1
    shift
    local start=$SECONDS
    printf '\n==> %s\n' "$name" >&2
    "$@"
    printf '==> %s: done in %ds\n' "$name" $((SECONDS - start)) >&2
}

# The virtual environment scripts/setup.sh installs schemathesis into (scripts/schemathesis.sh).
schemathesis_venv() {
    printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/tidepool/schemathesis-venv"
}
