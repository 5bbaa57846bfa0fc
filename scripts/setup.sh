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
