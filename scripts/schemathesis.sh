#!/usr/bin/env bash
# The OpenAPI check: schemathesis fuzzes a real `tidepool serve` with requests generated from the
# document it serves (/api/v1/openapi.json), signed as the client signs them
# (tests/schemathesis/hooks.py), and fails on any 5xx and on any response the document does not
# describe (status code, content type, headers, body schema).
#
# The daemon runs on a loopback port with a temporary data directory, its rate limit raised so
# the run is not all 429s. Before fuzzing, a dataset is published and computed on, so the DIDs,
# agreement, job, results and upload session the fuzzer may name exist (the hook puts them in
# path parameters some of the time).
#
# Usage: scripts/schemathesis.sh [SCHEMATHESIS-RUN-OPTIONS...]
#   TIDEPOOL_BIN                   the binary [default: $CARGO_TARGET_DIR/debug/tidepool]
#   TIDEPOOL_SCHEMATHESIS_SECONDS  how long to fuzz [default: 60]
# Extra options go to `schemathesis run` (e.g. --seed N to replay a run, --max-examples N).
# Needs scripts/setup.sh (schemathesis), and `cargo test` before it (the debug binary, the
# wordfreq example module and a warm compile cache in the target directory).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

target=${CARGO_TARGET_DIR:-target}
binary=${TIDEPOOL_BIN:-$target/debug/tidepool}
algorithm=$target/wasm-guests/wasm32-wasip1/release/wordfreq.wasm
seconds=${TIDEPOOL_SCHEMATHESIS_SECONDS:-60}
venv=$(schemathesis_venv)
for need in "$binary" "$algorithm" "$venv/bin/schemathesis"; do
    if [ ! -e "$need" ]; then
        echo "error: $need is missing: run scripts/setup.sh and cargo test first" >&2
        exit 1
    fi
done

work=$(mktemp -d)
daemon=
cleanup() {
    if [ -n "$daemon" ]; then
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The daemon: its first line on stdout says where it listens.
TIDEPOOL_CACHE_DIR=${TIDEPOOL_CACHE_DIR:-$target/tmp/compile-cache} "$binary" serve --data-dir "$work/data" \
    --listen 127.0.0.1:0 --dev-faucet --rate-limit 10000 --rate-burst 10000 >"$work/stdout" 2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 600); do
    grep -q "listening on" "$work/stdout" 2>/dev/null && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; echo "error: the daemon exited" >&2; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/.* listening on \(http[^ ]*\) .*/\1/p' "$work/stdout")
[ -n "$url" ] || { echo "error: the daemon did not say where it listens" >&2; exit 1; }
echo "daemon at $url" >&2

# What exists before fuzzing: a dataset (published by the operator), and two agreements of one
# consumer on it: one still active (the consumer had no tokens to lock), one whose job finished
# (its results, its output asset). The consumer is whom the hook signs as.
tidepool() { "$binary" "$@" --provider "$url"; }
"$binary" keygen --out "$work/consumer.key" >/dev/null 2>&1
mkdir -p "$work/books"
printf 'the tide comes in\nthe tide goes out\n' >"$work/books/tides.txt"
did=$(tidepool publish --key "$work/data/provider.key" --name fuzzed --dataset "books=$work/books" --price 1 2>&1 \
    | grep -o 'did:op:[0-9a-f]*' | head -n1)
compute() {
    tidepool compute --key "$work/consumer.key" --did "$did" --algorithm "$algorithm" --output "$work/$1" \
        >"$work/$1.log" 2>&1
}
if compute unpaid; then
    echo "error: a consumer without tokens could compute" >&2
    exit 1
fi
active=$(grep -o 'agreement 0x[0-9a-f]*' "$work/unpaid.log" | head -n1 | cut -d' ' -f2)
tidepool faucet --key "$work/consumer.key" >/dev/null 2>&1
compute paid || { cat "$work/paid.log" >&2; exit 1; }
released=$(grep -o 'agreement 0x[0-9a-f]*' "$work/paid.log" | head -n1 | cut -d' ' -f2)
job=$(grep -o 'job [0-9a-f]*' "$work/paid.log" | head -n1 | cut -d' ' -f2)
output_did=$(grep -o 'did:op:[0-9a-f]*' "$work/paid.log" | tail -n1)
if [ -z "$active" ] || [ -z "$released" ] || [ -z "$job" ] || [ -z "$output_did" ]; then
    cat "$work/unpaid.log" "$work/paid.log" >&2
    echo "error: the flows before fuzzing did not give an agreement, a job and an output" >&2
    exit 1
fi

export TIDEPOOL_FUZZ_URL=$url TIDEPOOL_FUZZ_KEY=$work/consumer.key TIDEPOOL_FUZZ_FIXTURES=$work/fixtures.json
export PYTHONPATH=$PWD/tests/schemathesis SCHEMATHESIS_HOOKS=hooks PYTHONDONTWRITEBYTECODE=1
"$venv/bin/python" -m hooks fixtures "$TIDEPOOL_FUZZ_FIXTURES" \
    --did "$did" --did "$output_did" --agreement "$active" --agreement "$released" --job "$job"

checks=not_a_server_error,status_code_conformance,content_type_conformance
checks=$checks,response_headers_conformance,response_schema_conformance
status=0
(cd "$work" && "$venv/bin/schemathesis" run "$url/api/v1/openapi.json" --url "$url" --checks "$checks" \
    --max-time "$seconds" --workers 1 --request-timeout 35 --generation-database none --no-color "$@") || status=$?
if [ "$status" -ne 0 ]; then
    echo "schemathesis failed (exit $status); the end of the daemon's log:" >&2
    tail -n 50 "$work/daemon.log" >&2
fi
exit "$status"
