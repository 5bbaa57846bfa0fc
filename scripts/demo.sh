#!/usr/bin/env bash
# The demo: `tidepool demo` starts an embedded provider on a loopback port, publishes the
# bundled sample dataset, runs the word-frequency example on it through the real HTTP
# Service Execution Agreement flow as a consumer, prints the outcome, the signed receipt and
# the payment split, and re-executes the receipt as an auditor.
#
# A cold build compiles wasmtime and cranelift: expect 10-20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step "setup" scripts/setup.sh
step "build tidepool" cargo build --locked -p tidepool-provider
step "build the example algorithms (wasm32-wasip1)" cargo build --locked --release --target wasm32-wasip1 \
    -p tidepool-example-wordfreq -p tidepool-example-csv-stats -p tidepool-example-mandelbrot
step "tidepool demo" target/debug/tidepool demo --algorithm target/wasm32-wasip1/release/wordfreq.wasm "$@"
