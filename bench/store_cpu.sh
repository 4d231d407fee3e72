#!/bin/bash
# The history store's CPU per committed change while rooms fan out: runs a
# roomcast binary on CPU 0 with its SQLite store in a scratch directory,
# drives it with the load generator on CPU 1 (ROOMS rooms x 10 members, one
# sender per room, in phase), and reads the store's threads' CPU time
# (/proc/PID/task/*/schedstat) and the committed changes (/metrics) over 4 s in
# the middle of an 8 s step. Everything on 127.0.0.1, bounded in time.
#
#   cargo build --release --all-features --bin roomcast --examples
#   bench/store_cpu.sh 10000                       # posts/s, this build
#   bench/store_cpu.sh 10000 /path/to/other/roomcast
set -eu
RATE=${1:?posts per second}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=${CARGO_TARGET_DIR:-$ROOT/target}/release
BIN=${2:-$RELEASE/roomcast}
ROOMS=${ROOMS:-100}
SCRATCH=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && { kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; }; rm -rf "$SCRATCH"' EXIT

taskset -c 0 "$BIN" --port 0 --rate 0 --max-connections 20000 --max-connections-per-address 0 \
    --max-http-per-address 0 --joins-per-minute 0 --uploads-dir "$SCRATCH/uploads" \
    --data-dir "$SCRATCH/data" >"$SCRATCH/out" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q listening "$SCRATCH/out" && break; sleep 0.1; done
ADDR=$(grep -o 'listening on http://[^ ]*' "$SCRATCH/out" | sed 's|listening on http://||' || true)
[ -n "$ADDR" ] || { cat "$SCRATCH/out"; echo "store_cpu: the server did not start"; exit 1; }

taskset -c 1 "$RELEASE/examples/loadgen" rooms --addr "$ADDR" --server-pid $SERVER --rooms "$ROOMS" \
    --clients 10 --senders "$ROOMS" --size 64 --duration 8 --rate "$RATE" --burst >"$SCRATCH/load" 2>&1 &
LOAD=$!
sleep 3

# The store's threads' time on a CPU in nanoseconds: its writer and its
# checkpoint thread, which copies the log into the file (schedstat; the
# clock ticks of /proc/PID/task/TID/stat count in 10 ms and could not show
# a change of a tenth).
cpu_ns() {
    for t in /proc/$SERVER/task/*; do
        case "$(cat "$t/comm")" in
            roomcast-store | roomcast-checkp*) awk '{print $1}' "$t/schedstat" ;;
        esac
    done | awk '{ns += $1} END {print ns + 0}'
}
metric() { curl -s "http://$ADDR/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

t0=$(cpu_ns); c0=$(metric roomcast_store_changes_total); k0=$(metric roomcast_store_commits_total)
sleep 4
t1=$(cpu_ns); c1=$(metric roomcast_store_changes_total); k1=$(metric roomcast_store_commits_total)
wait $LOAD
python3 - "$t0" "$t1" "$c0" "$c1" "$k0" "$k1" <<'EOF'
import sys
t0, t1, c0, c1, k0, k1 = (float(x) for x in sys.argv[1:])
changes, commits = c1 - c0, max(k1 - k0, 1)
us = (t1 - t0) / 1e3
print(f"store threads: {us / max(changes, 1):.2f} us of CPU per change "
      f"({changes:.0f} changes in {commits:.0f} commits, {changes / commits:.0f} per commit)")
EOF
grep -E '^\| [0-9]' "$SCRATCH/load" | awk -F'|' '{print "fan-out: p99", $10, "ms, server CPU", $13, "%, lost", $6}'
