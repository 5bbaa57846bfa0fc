#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (README, "Security").
#
#   scripts/fuzz.sh --quick [TARGET...]
#       The test command's step: builds the targets as a plain debug build (no coverage
#       instrumentation, so it reuses the test build's compiled dependencies) and runs each for
#       TIDEPOOL_FUZZ_SECONDS (default 20) from its committed seeds (fuzz/seeds/TARGET). Without
#       coverage, libFuzzer mutates the seeds at random: a smoke run, not a search.
#   scripts/fuzz.sh TARGET [SECONDS]
#       A coverage-guided run with cargo-fuzz (installed separately, see the README) for
#       SECONDS (default: until stopped). The corpus grows in fuzz/corpus/TARGET, crashes land
#       in fuzz/artifacts/TARGET.
#
# A crash prints the input's file; `TARGET_BINARY FILE` (or `cargo fuzz run TARGET FILE`)
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(signed_request ddo wasm_module)

if [ "${1:-}" != "--quick" ]; then
    target=${1:?usage: scripts/fuzz.sh --quick [TARGET...] | scripts/fuzz.sh TARGET [SECONDS]}
    seconds=${2:-0}
    mkdir -p "fuzz/corpus/$target"
    # `-s none`: coverage instrumentation (sancov) is stable rustc; AddressSanitizer is not
    # (`-Zsanitizer`: with RUSTC_BOOTSTRAP=1, `cargo fuzz run TARGET` on stable). Safe Rust
    # needs it little; wasmtime's unsafe code is fuzzed upstream under it.
    exec cargo fuzz run -s none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30
fi
shift
[ $# -eq 0 ] || targets=("$@")
seconds=${TIDEPOOL_FUZZ_SECONDS:-20}

cargo build --locked -p tidepool-fuzz --bins
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$work/$target" "$work/artifacts"
    echo "fuzzing $target for ${seconds}s (no coverage; seeds: fuzz/seeds/$target)" >&2
    # -keep_seed: without coverage nothing counts as new, and libFuzzer would otherwise
    # drop every seed and stop. The time and memory bounds are per input.
    if ! "$bin/$target" "$work/$target" "fuzz/seeds/$target" -keep_seed=1 -max_total_time="$seconds" \
        -timeout=20 -rss_limit_mb=2048 -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
        2>"$work/$target.log"; then
        cat "$work/$target.log" >&2
        mkdir -p fuzz/artifacts
        cp -r "$work/artifacts/." fuzz/artifacts/
        echo "error: fuzz target $target failed; its input is in fuzz/artifacts/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$work/$target.log" >&2 || true
done
