#!/usr/bin/python3
"""cpu-split.py — user and system CPU per answer of running servers, side by side.

    scripts/cpu-split.py [-c 50] [-d 4] [--rounds 3] [--size N] NAME=PID@URL ...

For each round, for each server in turn: reads utime and stime of PID (all its threads;
fields 14 and 15 of /proc/PID/stat), runs build/bin/squall-bench URL -c C -d Ds --json
(pinned to LOAD_CPU, default 0; --size N for a ws:// URL), reads them again, and prints
the server's user, system and total CPU microseconds per answer with the p50 and p99
latency. At the end: each server's median per answer and its median ratio to the first
server in the same rounds. Start the servers yourself, pinned to another CPU (taskset -c
1): the script measures, it does not start anything. PID is the process that does the
work (nginx: its worker, not the master); its threads are counted with it. The first line
printed is the time and the load average. docs/performance.md ("The floor") has the
figures measured with it.

    taskset -c 1 build/bin/hello --port 8001 & taskset -c 1 build/bin/bench-floor --port 8002 ws &
    scripts/cpu-split.py --size 32 squall=$(pgrep -f 'hello --port 8001')@ws://127.0.0.1:8001/ws/echo \\
        floor=$(pgrep -f 'bench-floor --port 8002')@ws://127.0.0.1:8002/ws/echo
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf("SC_CLK_TCK")


def ticks(name, pid):
    """utime and stime of the process, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        sys.exit(f"cpu-split: {name}: process {pid} is gone")
    return int(fields[11]), int(fields[12])


def measure(name, pid, url, a):
    cmd = ["taskset", "-c", os.environ.get("LOAD_CPU", "0"),
           os.path.join(ROOT, "build/bin/squall-bench"), url, "-c", str(a.c),
           "-d", f"{a.d}s", "--json"]
    if a.size and url.startswith("ws"):
        cmd += ["--size", str(a.size)]
    u0, s0 = ticks(name, pid)
    run = subprocess.run(cmd, capture_output=True, text=True)
    u1, s1 = ticks(name, pid)
    if run.returncode != 0:
        sys.exit(f"cpu-split: squall-bench against {name} failed: {run.stderr.strip()}")
    j = json.loads(run.stdout)
    n = j["requests"]
    errors = sum(j["errors"].values())
    if n == 0 or errors:
        sys.exit(f"cpu-split: {name}: {n} answers, {errors} errors")
    user = (u1 - u0) * 1e6 / HZ / n
    system = (s1 - s0) * 1e6 / HZ / n
    lat = j["latency_us"]
    print(f"  {name:<12} {j['requests_per_s']:>10,.0f}/s  user {user:5.2f}  system {system:5.2f}"
          f"  total {user + system:5.2f} us  p50 {lat['p50']:7.0f}  p99 {lat['p99']:7.0f} us",
          flush=True)
    return user + system


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", type=int, default=50, help="connections (50)")
    ap.add_argument("-d", type=int, default=4, help="seconds per run (4)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=0, help="WebSocket message size")
    ap.add_argument("servers", nargs="+", metavar="NAME=PID@URL")
    a = ap.parse_args()
    if a.rounds < 1 or a.c < 1 or a.d < 1:
        ap.error("-c, -d and --rounds must be at least 1")
    servers = []
    for s in a.servers:
        try:
            name, rest = s.split("=", 1)
            pid, url = rest.split("@", 1)
            int(pid)
        except ValueError:
            ap.error(f"{s}: expected NAME=PID@URL")
        if not os.path.exists(f"/proc/{pid}/stat"):
            ap.error(f"{s}: no process {pid}")
        servers.append((name, pid, url))
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"cpu-split: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
          f"{load}; -c {a.c}, {a.d} s a run" + (f", {a.size} B messages" if a.size else ""))
    totals = {name: [] for name, _, _ in servers}
    for rnd in range(1, a.rounds + 1):
        print(f"round {rnd}/{a.rounds}")
        for name, pid, url in servers:
            totals[name].append(measure(name, pid, url, a))
    first = servers[0][0]
    print("median CPU per answer, and the median of the rounds' ratios to " + first + ":")
    for name, _, _ in servers:
        ratios = [t / f for t, f in zip(totals[name], totals[first])]
        print(f"  {name:<12} {statistics.median(totals[name]):6.2f} us"
              f"  {statistics.median(ratios):5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
