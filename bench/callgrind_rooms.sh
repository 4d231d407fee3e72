#!/bin/bash
# User-space instructions per delivery of whole servers in small rooms,
# counted by callgrind: the same count on a busy machine, so two builds (or
# roomcast and the floor) compare without interleaved rounds.
#
# Each server runs under `valgrind --tool=callgrind` with counting off; the
# load generator (`loadgen rooms`, 100 rooms x 10, every room's sender in
# phase, 200 messages/s = 2 000 deliveries/s) connects, and once all 1 000
# connections are up and their joins have settled, counting runs for 8 s of
# steady traffic: 16 000 deliveries. At this rate nearly every delivery is
# its own write, so the count is the cost of one delivery with no batching.
# The kernel's share (the system calls themselves) is not counted.
#
#   cargo build --release --all-features --bin roomcast --examples
#   bench/callgrind_rooms.sh                       # roomcast (memory store) and the floor
#   bench/callgrind_rooms.sh new=target/release/roomcast old=/tmp/roomcast-before
#
# Prints one line per server: instructions per delivery, and deliveries
# expected and received over the whole run (they must be equal). Keeps
# each profile as callgrind-NAME.out in the current directory for
# `callgrind_annotate`.
#
# Note: valgrind counts each iteration of a `rep stos`/`rep movs` as an
# instruction, so a large memset or memcpy counts far more than it costs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=${CARGO_TARGET_DIR:-$ROOT/target}/release
RATE=200      # messages/s, 10 deliveries each
WINDOW=8      # seconds counted
DURATION=16   # seconds of traffic: settling, the window, and a margin
ROOMCAST_FLAGS="--rate 0 --max-connections 20000 --max-connections-per-address 0 \
--max-http-per-address 0 --joins-per-minute 0 --store memory"

if [ $# -eq 0 ]; then
    set -- "roomcast=$RELEASE/roomcast" "floor=$RELEASE/examples/baseline_floor"
fi

for spec in "$@"; do
    name=${spec%%=*}
    bin=${spec#*=}
    dir=$(mktemp -d)
    flags=""
    case "$bin" in
        *baseline_floor*) ;;
        *) flags="$ROOMCAST_FLAGS --uploads-dir $dir/uploads" ;;
    esac
    # shellcheck disable=SC2086
    taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$dir/cg.out" "$bin" $flags --port 0 >"$dir/out" 2>"$dir/valgrind" &
    server=$!
    addr=""
    for _ in $(seq 300); do
        addr=$(grep -o 'http://[0-9.:]*' "$dir/out" | head -1 | sed 's#http://##' || true)
        [ -n "$addr" ] && break
        sleep 0.2
    done
    [ -n "$addr" ] || { echo "$name did not start" >&2; kill $server; exit 1; }
    taskset -c 1 "$RELEASE/examples/loadgen" rooms --addr "$addr" --rooms 100 --clients 10 \
        --senders 100 --size 64 --duration $DURATION --rate $RATE --burst --concurrency 16 \
        >"$dir/loadgen" 2>&1 &
    loadgen=$!
    port=${addr##*:}
    for _ in $(seq 600); do
        [ "$(ss -Htn state established "( sport = :$port )" | wc -l)" -ge 1000 ] && break
        sleep 0.2
    done
    sleep 3
    callgrind_control -i on $server >/dev/null 2>&1
    sleep $WINDOW
    callgrind_control -i off $server >/dev/null 2>&1
    wait $loadgen
    callgrind_control -d $server >/dev/null 2>&1
    sleep 1
    kill $server
    wait $server 2>/dev/null || true
    ir=$(cat "$dir"/cg.out* | awk '/^totals:/ {s += $2} END {print s + 0}')
    deliveries=$((RATE * 10 * WINDOW))
    counts=$(grep -E '^\| [0-9]' "$dir/loadgen" | awk -F'|' '{print "expected", $4 + 0, "received", $5 + 0}')
    echo "$name: $((ir / deliveries)) instructions per delivery ($counts)"
    cat "$dir"/cg.out.* > "callgrind-$name.out" 2>/dev/null || cp "$dir/cg.out" "callgrind-$name.out"
    rm -rf "$dir"
done
