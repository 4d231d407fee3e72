#!/usr/bin/env python3
"""Connection churn (connect, read welcome, close) with token verification
against open mode, in one sitting.

Each round starts a fresh roomcast per mode (the order alternates: open
token, token open, ...), pins it to its CPUs and the load generator to
others (`taskset`), and climbs a ladder of connect rates with
`loadgen churn`; a step counts if every connection completed. Prints, per
round, the highest rate each mode sustained and the server's CPU time per
connection at a rate both sustained, then the token/open ratios (min-max
over rounds). Everything is on 127.0.0.1 with ports the server picks, every
step bounded by `--duration`.

    cargo build --release --all-features --bin roomcast --examples
    python3 bench/churn_auth.py                 # 3 rounds, server CPU 0, generator CPU 1
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
SECRET = "churn benchmark secret, well over thirty-two bytes long"
LADDER = [500, 1000, 1500, 2000, 3000, 4000, 5000, 6000]


def start(mode, cpus, workdir):
    env = dict(os.environ, RUST_LOG="warn")
    if mode == "token":
        env["AUTH_SECRET"] = SECRET
    cmd = ["taskset", "-c", cpus, os.path.join(RELEASE, "roomcast"), "--port", "0",
           "--rate", "0", "--max-connections", "20000",
           # Every client is on 127.0.0.1: the per-address limits would be
           # the global ones.
           "--max-connections-per-address", "0", "--max-http-per-address", "0",
           "--joins-per-minute", "0", "--store", "memory",
           "--uploads-dir", os.path.join(workdir, "uploads")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=workdir, text=True)
    line = proc.stdout.readline()
    m = re.match(r"listening on http://(\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"roomcast did not start: {line!r}")
    return proc, m.group(1)


def churn(addr, pid, rate, mode, cpus, duration):
    cmd = ["taskset", "-c", cpus, os.path.join(RELEASE, "examples", "loadgen"), "churn",
           "--addr", addr, "--rate", str(rate), "--duration", str(duration),
           "--rooms", "10", "--server-pid", str(pid)]
    if mode == "token":
        cmd += ["--token-secret", SECRET]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    row = [l for l in out.splitlines() if l.startswith(f"| {rate} |")]
    if not row:
        return None
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    completed, failed = int(cells[1]), int(cells[2])
    us = float(cells[7]) if cells[7] not in ("", "-") else None
    return {"ok": failed == 0 and completed >= rate * duration * 0.98,
            "per_s": float(cells[3]), "us": us, "p99": float(cells[5])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--gen-cpus", default="1")
    a = ap.parse_args()
    results = []
    for r in range(a.rounds):
        order = ["open", "token"] if r % 2 == 0 else ["token", "open"]
        rnd = {}
        for mode in order:
            with tempfile.TemporaryDirectory() as work:
                proc, addr = start(mode, a.server_cpus, work)
                best, steps = 0, {}
                for rate in LADDER:
                    step = churn(addr, proc.pid, rate, mode, a.gen_cpus, a.duration)
                    steps[rate] = step
                    if not step or not step["ok"]:
                        break
                    best = rate
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            rnd[mode] = (best, steps)
            print(f"round {r + 1} {mode}: highest complete rate {best}/s; "
                  + ", ".join(f"{k}: {v['us'] if v else '-'} µs" for k, v in steps.items()),
                  flush=True)
        results.append(rnd)
        time.sleep(1)
    print("\n| round | open: highest rate/s | token: highest rate/s | token/open | "
          "server µs per connection at 1000/s, open | token | token/open |")
    print("|---|---|---|---|---|---|---|")
    rate_ratios, cpu_ratios = [], []
    for i, rnd in enumerate(results):
        (ob, osteps), (tb, tsteps) = rnd["open"], rnd["token"]
        ou = (osteps.get(1000) or {}).get("us")
        tu = (tsteps.get(1000) or {}).get("us")
        rr = tb / ob if ob else float("nan")
        cr = tu / ou if ou and tu else float("nan")
        rate_ratios.append(rr)
        cpu_ratios.append(cr)
        print(f"| {i + 1} | {ob} | {tb} | {rr:.2f} | {ou} | {tu} | {cr:.2f} |")
    print(f"\ntoken/open highest rate: {min(rate_ratios):.2f}-{max(rate_ratios):.2f}; "
          f"CPU per connection: {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}")


if __name__ == "__main__":
    main()
