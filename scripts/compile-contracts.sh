#!/usr/bin/env bash
# Compiles the Solidity contracts (contracts/src) with the pinned solcjs into the committed
# artifacts (contracts/artifacts: ABI and bytecode, which the Rust crate `tidepool-chain`
# binds). Needs `scripts/setup.sh` first (it installs the compiler with `npm ci`).
#
#   scripts/compile-contracts.sh          rewrite contracts/artifacts
#   scripts/compile-contracts.sh --check  compile into a temporary folder and fail if the
#                                         committed artifacts differ (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d contracts/node_modules/solc ]; then
    echo "error: the Solidity compiler is not installed; run scripts/setup.sh" >&2
    exit 1
fi

if [ "${1:-}" = "--check" ]; then
    fresh=$(mktemp -d)
    trap 'rm -rf "$fresh"' EXIT
    node contracts/compile.js "$fresh"
    if ! diff -r -q contracts/artifacts "$fresh" >/dev/null; then
        echo "error: contracts/artifacts is not what contracts/src compiles to:" >&2
        diff -r -q contracts/artifacts "$fresh" >&2 || true
        echo "run scripts/compile-contracts.sh and commit contracts/artifacts with the sources" >&2
        exit 1
    fi
    echo "contracts/artifacts match a fresh compile" >&2
else
    node contracts/compile.js contracts/artifacts
fi
