#!/usr/bin/env bash
# The test command (README, and CI through .ci/run): formatting, lints, then every test.
#
# A cold build compiles wasmtime and cranelift: expect 10-20 minutes on 2 cores. Cargo prints
# each crate as it compiles; the steps below are timed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step "setup" scripts/setup.sh
step "format (cargo fmt --check)" cargo fmt --all -- --check
step "contracts (committed artifacts match a fresh compile)" scripts/compile-contracts.sh --check
step "lints (cargo clippy --workspace --all-targets -D warnings)" \
    cargo clippy --workspace --all-targets --locked -- -D warnings
step "tests (cargo test)" cargo test --locked --no-fail-fast
step "fuzz (each target for a bounded time, scripts/fuzz.sh --quick)" scripts/fuzz.sh --quick
# After the tests: it runs the debug binary, the example module and the compile cache they built.
step "OpenAPI document against the daemon (schemathesis)" scripts/schemathesis.sh
