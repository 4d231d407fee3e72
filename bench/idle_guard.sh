#!/bin/bash
# CI's idle-memory guard: the release server's resident memory per idle
# WebSocket connection, 10 000 of them (100 rooms x 100), must stay within
# LIMIT_KIB. Memory, unlike time, does not depend on how busy the machine
# is, but the allocator's page use moves it by about 0.4 KiB from run to
# run (5.4-6.1 KiB measured, issue 15's target being 6): the limit sits
# above that spread, low enough to catch a buffer every connection keeps
# (the 4 KiB one that went unnoticed for a day, docs/BENCHMARKS.md).
# What moved it more was how many handshakes were in flight at once
# (loadgen's default, 256): the allocator keeps that peak, and a busy or
# slow machine piles them up; the unchanged build read 6.3-7.2 KiB from
# run to run that way. With 16 in flight both builds read 5.3-5.4 every
# run. It also measures twice, each on a fresh server, and judges the
# lower figure: a buffer every connection keeps shows in both.
# Everything on 127.0.0.1, bounded.
#
#   cargo build --release --bin roomcast --example loadgen
#   bench/idle_guard.sh
set -euo pipefail
LIMIT_KIB=${LIMIT_KIB:-7.0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=${CARGO_TARGET_DIR:-$ROOT/target}/release
SCRATCH=$(mktemp -d)
SERVER=
stop_server() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    SERVER=
}
cleanup() {
    stop_server
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
# 10 000 sockets on each side: as many open files as allowed, up to 65 536.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# One fresh server, 10 000 idle connections: sets CONNS and RUN_KIB (KiB
# per idle connection), then stops the server.
measure() {
    "$RELEASE/roomcast" --port 0 --store memory --uploads-dir "$SCRATCH/uploads" --rate 0 \
        --max-connections 20000 --max-connections-per-address 0 --max-http-per-address 0 \
        --joins-per-minute 0 >"$SCRATCH/out" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do grep -q listening "$SCRATCH/out" && break; sleep 0.1; done
    ADDR=$(grep -o 'listening on http://[^ ]*' "$SCRATCH/out" | sed 's|listening on http://||' || true)
    [ -n "$ADDR" ] || { cat "$SCRATCH/out"; echo "idle guard: the server did not start"; exit 1; }
    if ! timeout 120 "$RELEASE/examples/loadgen" idle --addr "$ADDR" --server-pid $SERVER \
        --rooms 100 --clients 100 --duration 2 --concurrency 16 >"$SCRATCH/load" 2>&1; then
        cat "$SCRATCH/load"
        echo "idle guard: the load generator failed"
        exit 1
    fi
    cat "$SCRATCH/load"
    stop_server
    CONNS=0 RUN_KIB=
    # | connections | KiB/conn (connected) | KiB/conn (after idle) | ...
    read -r CONNS RUN_KIB < <(awk -F'|' '/^\| [0-9]/ {print $2, $4}' "$SCRATCH/load") || true
    [ "${CONNS:-0}" -ge 10000 ] || { echo "idle guard: only ${CONNS:-0} of 10000 connected"; exit 1; }
}

KIB=
for run in 1 2; do
    measure
    echo "idle guard: run $run: $RUN_KIB KiB per idle connection"
    KIB=$(python3 -c "print(min(float(x) for x in '$KIB $RUN_KIB'.split()))")
done
if python3 -c "import sys; sys.exit(0 if float('$KIB') <= float('$LIMIT_KIB') else 1)"; then
    echo "idle guard: $KIB KiB per idle connection (limit $LIMIT_KIB)"
else
    echo "idle guard: $KIB KiB per idle connection, over the limit of $LIMIT_KIB KiB"
    exit 1
fi
