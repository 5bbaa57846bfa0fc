#!/usr/bin/env bash
# The cross-architecture check (README, "Determinism"; run it for every release): builds the
# `tidepool` binary for x86-64 and for aarch64, runs every example and test guest with both
# (aarch64 under Debian's qemu-user), checks that both made the same receipt, and verifies each
# receipt with the other architecture's binary. Also runs the FMA probe under
# `qemu-x86_64 -cpu Nehalem` (an x86-64 CPU without FMA) and verifies its receipt natively.
#
# Too slow for CI's budget (two release builds of wasmtime, one of them cross, and everything
# under emulation: 20-40 minutes on 2 cores); `cargo test` covers its rules narrowly instead
# (runtime/tests/sandbox/determinism.rs: no host facts in the engine hash, identical depth and
# fuel across native stack sizes and CPU features, the FMA test).
#
# Usage: scripts/cross-arch.sh [--keep DIR]. Exit status 0 when every receipt matched and
# verified both ways; 1 otherwise, with each failure listed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

keep=""
if [ "${1:-}" = "--keep" ]; then
    keep=$2
fi
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

target=${CARGO_TARGET_DIR:-target}
arm_triple=aarch64-unknown-linux-gnu
step "setup, with the cross toolchain" scripts/setup.sh --cross
step "build tidepool for x86-64 (release)" cargo build --locked --release -p tidepool-provider
step "build tidepool for aarch64 (release, cross)" env \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    cargo build --locked --release -p tidepool-provider --target "$arm_triple"
step "build the guests and examples (wasm32-wasip1)" cargo build --locked -p tidepool-test-artifacts

x86="$target/release/tidepool"
arm_bin="$target/$arm_triple/release/tidepool"
# Each runs `tidepool SUBCOMMAND ARGS...` with its own compile cache (a module is compiled once
# per architecture, for its run and its verification).
arm() {
    local sub=$1
    shift
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm_bin" "$sub" --cache-dir "$work/cache-aarch64" "$@"
}
nehalem() {
    local sub=$1
    shift
    qemu-x86_64 -cpu Nehalem "$x86" "$sub" --cache-dir "$work/cache-nehalem" "$@"
}
native() {
    local sub=$1
    shift
    "$x86" "$sub" --cache-dir "$work/cache-x86_64" "$@"
}
guests="$target/wasm-guests/wasm32-wasip1/release"

data="$work/data"
mkdir -p "$data/docs/sub" "$data/more"
printf alpha >"$data/docs/a.txt"
printf beta >"$data/docs/sub/b.txt"
ln -sf sub/b.txt "$data/docs/inside"
printf gamma >"$data/more/c.txt"

# name | module (a test guest's name, or a path: the Python examples) | run arguments (limits,
# inputs) | guest arguments
cases=(
    "wordfreq|wordfreq|--input books=examples/data/books|--top 5"
    "csv-stats|csv-stats|--input weather=examples/data/weather|"
    "mandelbrot|mandelbrot||--width 64 --height 48 --max-iter 200"
    "fs_dirs|fs_dirs||"
    "fs_open|fs_open||"
    "fs_rw|fs_rw||"
    "fs_links|fs_links||"
    "fs_meta|fs_meta||"
    "fs_inputs|fs_inputs|--input docs=$data/docs --input more=$data/more|SIZE"
    "misc|misc||one two"
    "noop|noop||"
    "read_all|read_all|--input docs=$data/docs|"
    "observe|observe|--input docs=$data/docs|"
    "observe-memory|observe|--memory 4MiB|memory"
    "observe-stack|observe||stack"
    "observe-fma|observe||fma"
    "spin-out-of-fuel|misbehave|--fuel 5000000|spin"
    "memory-limit|misbehave|--memory 16MiB|alloc"
    "output-quota|misbehave|--output-quota 1MiB|file"
    "exit-3|misbehave||exit 3"
    "panic|misbehave||panic"
    "out-of-bounds|misbehave||oob"
    "stdout-flood|misbehave|--stdout-cap 4KiB --fuel 20000000|stdout"
    "files-flood|misbehave|--output-quota 64KiB --fuel 50000000|files"
    "sparse-file|misbehave|--output-quota 1MiB|sparse"
    "sleep|misbehave||sleep"
    "clock-spin|misbehave|--fuel 200000000|clock-spin"
    "hold|hold|--memory 64MiB|2 2"
    "python-wordfreq|examples/python/wordfreq|--input books=examples/data/books|--top 5"
    "python-csv-stats|examples/python/csv-stats|--input weather=examples/data/weather|"
)
# A case's algorithm: a test guest's module, or the path it names.
algorithm_of() {
    case $1 in
    */*) printf '%s' "$1" ;;
    *) printf '%s' "$guests/$1.wasm" ;;
    esac
}

failures=()
checked=0
run_case() {
    local who=$1 name=$2 module=$3 opts=$4 args=$5 out=$6
    local wasm
    wasm=$(algorithm_of "$module")
    [ "$args" = SIZE ] && args=$(stat -c %s "$wasm")
    # shellcheck disable=SC2086
    $who run "$wasm" $opts --output "$out/outputs" --receipt "$out/receipt.json" --quiet -- $args >"$out/stdout" 2>"$out/stderr" || true
    [ -s "$out/receipt.json" ] || failures+=("$name: no receipt from $who ($(tail -n 3 "$out/stderr" | tr '\n' ' '))")
}
hash_of() { sed -n 's/.*"receipt_hash": *"\(0x[0-9a-f]*\)".*/\1/p' "$1" | head -n 1; }

for case in "${cases[@]}"; do
    IFS='|' read -r name module opts args <<<"$case"
    printf '\n--- %s\n' "$name" >&2
    dx="$work/$name/x86_64" da="$work/$name/aarch64"
    mkdir -p "$dx" "$da"
    run_case native "$name" "$module" "$opts" "$args" "$dx"
    run_case arm "$name" "$module" "$opts" "$args" "$da"
    [ -s "$dx/receipt.json" ] && [ -s "$da/receipt.json" ] || continue
    checked=$((checked + 1))
    hx=$(hash_of "$dx/receipt.json") ha=$(hash_of "$da/receipt.json")
    if [ "$hx" != "$ha" ]; then
        failures+=("$name: receipts differ (x86-64 $hx, aarch64 $ha)")
    fi
    wasm=$(algorithm_of "$module")
    inputs=$(printf '%s' "$opts" | grep -o -- '--input [^ ]*' | tr '\n' ' ' || true)
    # shellcheck disable=SC2086
    arm verify "$dx/receipt.json" --algorithm "$wasm" $inputs >"$dx/verified-on-aarch64" 2>&1 ||
        failures+=("$name: the x86-64 receipt does not verify on aarch64: $(tail -n 5 "$dx/verified-on-aarch64" | tr '\n' ' ')")
    # shellcheck disable=SC2086
    native verify "$da/receipt.json" --algorithm "$wasm" $inputs >"$da/verified-on-x86_64" 2>&1 ||
        failures+=("$name: the aarch64 receipt does not verify on x86-64: $(tail -n 5 "$da/verified-on-x86_64" | tr '\n' ' ')")
done

printf '\n--- FMA probe on a CPU without FMA (qemu-x86_64 -cpu Nehalem)\n' >&2
dn="$work/fma-nehalem"
mkdir -p "$dn"
run_case nehalem observe-fma-nehalem observe "" fma "$dn"
if [ -s "$dn/receipt.json" ]; then
    checked=$((checked + 1))
    [ "$(hash_of "$dn/receipt.json")" = "$(hash_of "$work/observe-fma/x86_64/receipt.json")" ] ||
        failures+=("observe-fma: the receipt under Nehalem differs from the native one")
    native verify "$dn/receipt.json" --algorithm "$guests/observe.wasm" >"$dn/verified-natively" 2>&1 ||
        failures+=("observe-fma: the Nehalem receipt does not verify natively")
fi

printf '\n%s cases run on both architectures; %s failures\n' "$checked" "${#failures[@]}"
for f in "${failures[@]}"; do
    printf '  FAIL %s\n' "$f"
done
[ "${#failures[@]}" -eq 0 ] && [ "$checked" -eq $((${#cases[@]} + 1)) ]
