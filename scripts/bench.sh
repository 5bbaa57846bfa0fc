#!/usr/bin/env bash
# The benchmarks (README, "Benchmarks"): builds what they need in release mode, then prints
# the table of figures, each against its baseline measured in the same run, and writes it to
# target/bench/results.md. The run itself takes about 3 minutes on 2 cores; `--quick` takes
# seconds (fewer repetitions, for trying things out), `--only GROUP` runs one group.
#
# A cold release build compiles wasmtime and cranelift: expect 10-20 minutes on 2 cores the
# first time. Cargo prints each crate as it compiles; the steps below are timed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step "setup" scripts/setup.sh
step "build the benchmarks, the daemon and the native kernels (release)" cargo build --locked --release \
    -p tidepool-bench -p tidepool-provider -p tidepool-example-wordfreq -p tidepool-bench-kernels
step "benchmarks" target/release/tidepool-bench "$@"
