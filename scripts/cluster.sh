#!/usr/bin/env bash
# A whole cluster on this machine, for trying cluster mode out (README, "Running on several
# machines"): a throwaway PostgreSQL and SeaweedFS, two API nodes sharing one provider key,
# and N workers (default 2), all on loopback, in a temporary directory removed on exit.
#
#   scripts/cluster.sh [WORKERS]      # Ctrl-C stops everything
#
# Then point consumers at either API node (the URLs are printed), e.g.
#   tidepool faucet --provider http://127.0.0.1:8031 --key me.key
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

workers=${1:-2}
step "setup" scripts/setup.sh
step "build the tidepool binary" cargo build --locked -p tidepool-provider --bin tidepool
bin=$PWD/target/debug/tidepool

dir=$(mktemp -d /tmp/tidepool-cluster.XXXXXX)
pids=()
pg_data=$dir/pg
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    runuser -u postgres -- pg_ctl -D "$pg_data" -m immediate stop >/dev/null 2>&1 \
        || pg_ctl -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
pg_port=55432
as_pg "$pg_bin/initdb" -D "$pg_data" -U tidepool --auth=trust -E UTF8 --locale=C >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$dir/pg.log" -w \
    -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
database=postgres://tidepool@127.0.0.1:$pg_port/postgres

s3_port=18333
weed server -dir="$dir/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 -s3.port=$s3_port \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.port=19333 -volume.port=18080 -filer.port=18888 \
    -master.volumeSizeLimitMB=64 >"$dir/weed.log" 2>&1 &
pids+=($!)
mkdir -p "$dir/weed"
for _ in $(seq 300); do
    if curl -sf -X PUT "http://127.0.0.1:$s3_port/tidepool" -o /dev/null \
        && curl -sf -X PUT -d probe "http://127.0.0.1:$s3_port/tidepool/probe" -o /dev/null; then
        break
    fi
    sleep 0.2
done
blobs=http://127.0.0.1:$s3_port/tidepool

common=(--database "$database" --blobs "$blobs")
"$bin" serve --dev-faucet --data-dir "$dir/api1" --listen 127.0.0.1:8031 "${common[@]}" >"$dir/api1.out" 2>"$dir/api1.log" &
pids+=($!)
until grep -q "listening on" "$dir/api1.out" 2>/dev/null; do sleep 0.2; done
"$bin" serve --dev-faucet --data-dir "$dir/api2" --listen 127.0.0.1:8032 --key "$dir/api1/provider.key" \
    "${common[@]}" >"$dir/api2.out" 2>"$dir/api2.log" &
pids+=($!)
for i in $(seq "$workers"); do
    "$bin" worker --data-dir "$dir/worker$i" "${common[@]}" >"$dir/worker$i.out" 2>"$dir/worker$i.log" &
    pids+=($!)
done
until grep -q "listening on" "$dir/api2.out" 2>/dev/null; do sleep 0.2; done

cat <<EOF

A Tidepool cluster runs on this machine (logs in $dir):
  API nodes   http://127.0.0.1:8031  http://127.0.0.1:8032   (provider key: $dir/api1/provider.key)
  workers     $workers
  PostgreSQL  $database
  S3 (blobs)  $blobs
Press Ctrl-C to stop it and remove everything.
EOF
wait
