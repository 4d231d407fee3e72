#!/usr/bin/env python3
"""Roomcast against the floor and the naive broadcast server, in one sitting.

Runs every scenario below on each server in interleaved rounds (the order of
the servers rotates every round: A B C, B C A, C A B, ...), each server
started fresh per scenario on its own CPUs and the load generator on others
(`taskset`, as docs/BENCHMARKS.md does, and `nice -n -20` when run as
root: other work on this machine runs as high as -8), then prints the tables:

- the highest rate with p99 <= 50 ms and no delivery lost, per round, and
  roomcast's ratio to each baseline taken round by round (min-max): up to
  the ladder's first step over the bound, then up to its highest step
  within it (one late step lower down, noise on a shared machine, does not
  end the second), then capacity (p99 <= 1 s);
- server CPU per delivery at one load;
- p99 at fixed loads (0.8, 1.6 and 2.4 M deliveries/s in 1 room x 1000).

Everything is on 127.0.0.1 with ports the servers pick (`--port 0`); every
step is bounded (`--duration` seconds plus at most 5 s of drain), a ladder
stops at its first step over `STOP_P99_MS` or with a loss, and a server that
does not exit on SIGTERM within 5 s is killed.

    cargo build --release --all-features --bin roomcast --examples
    python3 bench/compare.py                      # 3 rounds, server CPU 0, generator CPU 1
    python3 bench/compare.py --server-cpus 0,1 --gen-cpus 0,1   # two cores, shared
    python3 bench/compare.py --rounds 1 --scenarios big-1 --servers roomcast,floor
    # fan-out while 12 Mpx JPEGs are uploaded twice a second, previews made vs not
    python3 bench/compare.py --servers previews,no-previews --versus previews --scenarios big-10
"""

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where cargo put the release build (CARGO_TARGET_DIR, as cargo reads it).
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
# Every load client is on 127.0.0.1: roomcast's per-address limits would be
# global ones here.
NO_PER_ADDRESS_LIMITS = ["--max-connections-per-address", "0", "--max-http-per-address", "0",
                         "--joins-per-minute", "0"]

# The latency bound a rate must meet, and where a ladder gives up.
BOUND_MS = 50.0
STOP_P99_MS = 1000.0

# name: (loadgen mode, rooms, clients per room, senders, burst, msg/s ladder).
# Deliveries per message: the room's size.
BIG = [100, 200, 400, 800, 1200, 1600, 2000, 2400, 3000, 3600]
SMALL = [2000, 5000, 10000, 20000, 30000, 40000, 50000, 60000, 80000, 100000, 120000, 150000, 180000, 210000, 240000, 280000, 320000]
SCENARIOS = {
    "big-1": ("fanout", 1, 1000, 1, False, BIG),
    "big-10": ("fanout", 1, 1000, 10, False, BIG),
    "small-burst": ("rooms", 100, 10, 100, True, SMALL),
    "small-even": ("rooms", 100, 10, 100, False, SMALL),
}
TITLES = {
    "big-1": "1 room x 1000, 1 sender",
    "big-10": "1 room x 1000, 10 senders evenly spaced",
    "small-burst": "100 rooms x 10, 1 sender per room, in phase",
    "small-even": "100 rooms x 10, 1 sender per room, evenly spaced",
}
# msg/s at which the CPU table compares servers.
CPU_AT = {"big-1": 400, "big-10": 400, "small-burst": 10000, "small-even": 10000}
FIXED = [800, 1600, 2400]  # msg/s in 1 room x 1000 = 0.8, 1.6, 2.4 M deliveries/s

SERVERS = {
    "roomcast": lambda d: [
        os.path.join(RELEASE, "roomcast"), "--port", "0", "--rate", "0",
        "--max-connections", "20000", *NO_PER_ADDRESS_LIMITS, "--uploads-dir", os.path.join(d, "uploads"),
        "--data-dir", os.path.join(d, "data"),
    ],
    # The durable store without fsync: what the disk's flushes cost.
    "roomcast-fsync-off": lambda d: [
        os.path.join(RELEASE, "roomcast"), "--port", "0", "--rate", "0",
        "--max-connections", "20000", *NO_PER_ADDRESS_LIMITS, "--uploads-dir", os.path.join(d, "uploads"),
        "--data-dir", os.path.join(d, "data"), "--fsync", "off",
    ],
    # The same server keeping history in memory only: what the durable
    # store (SQLite, the default above) costs fan-out.
    "roomcast-memory": lambda d: [
        os.path.join(RELEASE, "roomcast"), "--port", "0", "--rate", "0",
        "--max-connections", "20000", *NO_PER_ADDRESS_LIMITS, "--uploads-dir", os.path.join(d, "uploads"),
        "--store", "memory",
    ],
    # Per-address limits and the per-identity rate switched on, set high
    # enough that the load generator (one address) is never refused: what
    # checking them costs fan-out.
    "roomcast-limits": lambda d: [
        os.path.join(RELEASE, "roomcast"), "--port", "0", "--rate", "100000",
        "--max-connections", "20000", "--max-connections-per-address", "20000",
        "--max-http-per-address", "20000", "--joins-per-minute", "1000000",
        "--uploads-dir", os.path.join(d, "uploads"), "--data-dir", os.path.join(d, "data"),
    ],
    # Image previews being made (one worker, the default) while the room
    # fans out, and the same uploads with previews off (see BESIDE).
    "previews": lambda d: [
        os.path.join(RELEASE, "roomcast"), "--port", "0", "--rate", "0",
        "--max-connections", "20000", *NO_PER_ADDRESS_LIMITS, "--uploads-dir", os.path.join(d, "uploads"),
        "--store", "memory", "--uploads-per-minute", "0", "--upload-mb-per-hour", "0", "--preview-workers", "1",
    ],
    "no-previews": lambda d: [
        os.path.join(RELEASE, "roomcast"), "--port", "0", "--rate", "0",
        "--max-connections", "20000", *NO_PER_ADDRESS_LIMITS, "--uploads-dir", os.path.join(d, "uploads"),
        "--store", "memory", "--uploads-per-minute", "0", "--upload-mb-per-hour", "0", "--preview-workers", "0",
    ],
    "floor": lambda d: [os.path.join(RELEASE, "examples", "baseline_floor"), "--port", "0"],
    "naive": lambda d: [os.path.join(RELEASE, "examples", "baseline_broadcast"), "--port", "0"],
}

# Load run beside the generator for the whole ladder, on the generator's
# CPUs: two 12 Mpx JPEG uploads a second (each a preview job where previews
# are on).
UPLOADS = lambda addr: [os.path.join(RELEASE, "examples", "preview_bench"), "uploads", "--addr", addr,
                        "--rate", "2", "--mpx", "12", "--duration", "600"]
BESIDE = {"previews": UPLOADS, "no-previews": UPLOADS}

# Other work on the machine gets a smaller share of the CPUs (root only).
NICE = ["nice", "-n", "-20"] if os.geteuid() == 0 else []


def start_server(name, cpus, scratch):
    cmd = NICE + ["taskset", "-c", cpus] + SERVERS[name](scratch)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{name} did not say where it listens")


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


ROW = re.compile(r"^\| (\d+(?:\.\d+)?) \| (.+) \|$")


def run_ladder(server, scenario, args):
    mode, rooms, clients, senders, burst, ladder = SCENARIOS[scenario]
    scratch = tempfile.mkdtemp(prefix="roomcast-compare-")
    try:
        proc, addr = start_server(server, args.server_cpus, scratch)
        beside = None
        if server in BESIDE:
            beside = subprocess.Popen(NICE + ["taskset", "-c", args.gen_cpus] + BESIDE[server](addr),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cmd = NICE + [
                "taskset", "-c", args.gen_cpus, os.path.join(RELEASE, "examples", "loadgen"),
                mode, "--addr", addr, "--server-pid", str(proc.pid), "--rooms", str(rooms),
                "--clients", str(clients), "--senders", str(senders), "--size", "64",
                "--duration", str(args.duration), "--stop-p99", str(STOP_P99_MS),
                "--rate", ",".join(str(r) for r in ladder),
            ] + (["--burst"] if burst else [])
            budget = len(ladder) * (args.duration + 8) + 120
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=budget).stdout
        finally:
            if beside:
                beside.kill()
                beside.wait()
            stop_server(proc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    steps = []
    for line in out.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        cols = [c.strip() for c in m.group(2).split("|")]
        # target | sent expected received lost deliveries/s min p50 p99 p99.9 max cpu us/d lg closed
        steps.append({
            "rate": float(m.group(1)),
            "lost": int(cols[3]),
            "deliveries": float(cols[4]),
            "p99": float(cols[7]),
            "cpu": cols[10],
            "us_per_delivery": cols[11],
            "loadgen_cpu": cols[12],
            "closed": int(cols[13]),
        })
    return {"server": server, "scenario": scenario, "steps": steps, "per_msg": clients}


def passes(step):
    return step["p99"] <= BOUND_MS and step["lost"] == 0 and step["closed"] == 0


def highest(run, bound=BOUND_MS):
    """Deliveries/s of the last step before the first that misses the bound."""
    best = 0.0
    for step in run["steps"]:
        if step["p99"] > bound or step["lost"] or step["closed"]:
            break
        best = step["rate"] * run["per_msg"]
    return best


def highest_any(run, bound=BOUND_MS):
    """Deliveries/s of the highest step that met the bound, before any loss.

    On a noisy machine one late step low in a ladder ends `highest` there
    while the steps above it meet the bound; this reads past such a step.
    Both are printed: a server's latency grows with the rate, so where the
    two differ, the lower one was cut short by noise.
    """
    met = [step["rate"] * run["per_msg"] for step in
           itertools.takewhile(lambda st: not (st["lost"] or st["closed"]), run["steps"])
           if step["p99"] <= bound]
    return max(met, default=0.0)


def fmt_rate(d):
    return f"{d / 1e6:.2f} M" if d >= 1e6 else f"{d / 1e3:.0f} k"


def spread(values, fmt):
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def ratio_text(pairs):
    ratios = [a / b for a, b in pairs if b > 0]
    if not ratios:
        return "-"
    lo, hi = min(ratios), max(ratios)
    return f"{lo:.2f}x" if abs(hi - lo) < 0.005 else f"{lo:.2f}-{hi:.2f}x"


def p99_at(run, rate):
    for step in run["steps"]:
        if step["rate"] == rate:
            if step["lost"] or step["closed"]:
                return f"{step['p99']:.0f} (lost {step['lost']})"
            return f"{step['p99']:.1f}"
    last = run["steps"][-1]["rate"] if run["steps"] else 0
    return "not run" if rate < last else f"stopped below"


def print_table(results, servers, scenarios, rounds, versus="roomcast"):
    by = {}
    for r in results:
        by.setdefault((r["server"], r["scenario"]), []).append(r)
    print()
    head = "| scenario | " + " | ".join(servers)
    others = [s for s in servers if s != versus] if versus in servers else []
    head += "".join(f" | {versus} / {o}" for o in others) + " |"
    print(f"Highest deliveries/s with p99 <= {BOUND_MS:.0f} ms and nothing lost "
          f"(median and range over {rounds} rounds; ratios paired by round)")
    print()
    for bound, measure in ((BOUND_MS, highest), (BOUND_MS, highest_any), (STOP_P99_MS, highest)):
        if measure is highest_any:
            print()
            print(f"The same, the highest step with p99 <= {bound:.0f} ms and nothing lost, "
                  "past single late steps lower in the ladder")
            print()
        elif bound != BOUND_MS:
            print()
            print(f"Highest deliveries/s with nothing lost and p99 <= {bound:.0f} ms (the ladder's stop): "
                  "capacity, for a machine too busy for the first table")
            print()
        print(head)
        print("|" + "---|" * (1 + len(servers) + len(others)))
        for sc in scenarios:
            cells = [spread([measure(r, bound) for r in by.get((s, sc), [])], fmt_rate)
                     for s in servers]
            for o in others:
                # Paired by round: the same sitting, the same machine load.
                mine = {r["round"]: measure(r, bound) for r in by.get((versus, sc), [])}
                theirs = {r["round"]: measure(r, bound) for r in by.get((o, sc), [])}
                cells.append(ratio_text([(mine[k], theirs[k]) for k in mine if k in theirs]))
            print(f"| {TITLES[sc]} | " + " | ".join(cells) + " |")
    print()
    print("Server CPU per delivery, us, at one load every server but the naive one carries "
          "(median and range over rounds)")
    print()
    print("| load | " + " | ".join(servers) + " |")
    print("|" + "---|" * (1 + len(servers)))
    for sc in scenarios:
        rate = CPU_AT[sc]
        cells = []
        for s in servers:
            vals = [float(st["us_per_delivery"]) for r in by.get((s, sc), []) for st in r["steps"]
                    if st["rate"] == rate and not st["lost"] and st["us_per_delivery"] != "-"]
            cells.append(spread(vals, lambda v: f"{v:.2f}"))
        deliveries = rate * SCENARIOS[sc][2]
        print(f"| {TITLES[sc]}, {fmt_rate(deliveries)}/s | " + " | ".join(cells) + " |")
    print()
    print("p99 ms at fixed loads, 1 room x 1000 (round 1 / 2 / ...)")
    print()
    print("| load | " + " | ".join(servers) + " |")
    print("|" + "---|" * (1 + len(servers)))
    for sc in [s for s in scenarios if s.startswith("big")]:
        for rate in FIXED:
            cells = [" / ".join(p99_at(r, rate) for r in by.get((s, sc), [])) for s in servers]
            print(f"| {TITLES[sc]}, {rate * 1000 / 1e6:.1f} M/s | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per step")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--gen-cpus", default="1")
    ap.add_argument("--servers", default="roomcast,floor,naive")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--json", help="also write every step here")
    ap.add_argument("--versus", default="roomcast", help="the server the ratios are of")
    ap.add_argument("--from-json", help="print the table of an earlier --json run, run nothing")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="another roomcast binary to run as server NAME (e.g. an older build)")
    args = ap.parse_args()
    roomcast_flags = SERVERS["roomcast"]
    for v in args.variant:
        name, _, path = v.partition("=")
        SERVERS[name] = lambda d, path=os.path.abspath(path): [path] + roomcast_flags(d)[1:]
    servers = args.servers.split(",")
    scenarios = args.scenarios.split(",")
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
        rounds = max((r["round"] for r in results), default=0)
        print_table(results, servers, scenarios, rounds, args.versus)
        return
    for s in servers:
        if s not in SERVERS:
            sys.exit(f"unknown server {s}; one of {', '.join(SERVERS)}")
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; one of {', '.join(SCENARIOS)}")
    if not 1 <= args.rounds <= 10 or not 1 <= args.duration <= 30:
        sys.exit("--rounds must be 1..10 and --duration 1..30")
    for bin_ in [SERVERS[s]("x")[0] for s in servers] + [os.path.join(RELEASE, "examples", "loadgen")]:
        if not os.access(bin_, os.X_OK):
            sys.exit(f"{bin_} is missing: cargo build --release --all-features --bin roomcast --examples")

    results = []
    print(f"# server CPUs {args.server_cpus}, generator CPUs {args.gen_cpus}, "
          f"{args.duration} s per step, {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    for rnd in range(args.rounds):
        order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
        for sc in scenarios:
            for server in order:
                t = time.monotonic()
                run = run_ladder(server, sc, args)
                run["round"] = rnd + 1
                results.append(run)
                steps = ", ".join(
                    f"{s['rate']:g}:{s['p99']:.0f}ms" + ("" if passes(s) else "!") for s in run["steps"])
                print(f"# round {rnd + 1} {sc} {server}: highest {fmt_rate(highest(run))} "
                      f"[{steps}] ({time.monotonic() - t:.0f} s, load {os.getloadavg()[0]:.1f})",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print_table(results, servers, scenarios, args.rounds, args.versus)


if __name__ == "__main__":
    main()
