#!/usr/bin/env bash
# The demo: runs the example algorithms on the bundled sample datasets with `tidepool run`,
# then re-executes each receipt with `tidepool verify`, as an auditor would.
#
# A cold build compiles wasmtime and cranelift: expect 10-20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

step "setup" scripts/setup.sh
step "build tidepool" cargo build --locked -p tidepool-provider
step "build the example algorithms (wasm32-wasip1)" cargo build --locked --release --target wasm32-wasip1 \
    -p tidepool-example-wordfreq -p tidepool-example-csv-stats -p tidepool-example-mandelbrot

tidepool=target/debug/tidepool
wasm=target/wasm32-wasip1/release
work=$(mktemp -d "${TMPDIR:-/tmp}/tidepool-demo.XXXXXX")

demo_job() {
    local name=$1
    shift
    echo
    echo "--- $name ---------------------------------------------------------------"
    "$tidepool" run "$wasm/$name.wasm" --output "$work/$name/outputs" --receipt "$work/$name/receipt.json" "$@"
    echo
    echo "auditor: tidepool verify $work/$name/receipt.json ..."
}

demo_job wordfreq --input books=examples/data/books -- --top 10
"$tidepool" verify "$work/wordfreq/receipt.json" --algorithm "$wasm/wordfreq.wasm" \
    --input books=examples/data/books --outputs "$work/wordfreq/outputs"
head -n 6 "$work/wordfreq/outputs/wordfreq.csv"

demo_job csv-stats --input weather=examples/data/weather
"$tidepool" verify "$work/csv-stats/receipt.json" --algorithm "$wasm/csv-stats.wasm" \
    --input weather=examples/data/weather --outputs "$work/csv-stats/outputs"
column -s, -t < "$work/csv-stats/outputs/stats.csv" | cut -c1-150

demo_job mandelbrot -- --width 400 --height 300
"$tidepool" verify "$work/mandelbrot/receipt.json" --algorithm "$wasm/mandelbrot.wasm" \
    --outputs "$work/mandelbrot/outputs"

echo
echo "Everything is in $work (outputs, receipts)."
