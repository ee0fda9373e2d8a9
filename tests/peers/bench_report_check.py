#!/usr/bin/python3
"""The verdicts of scripts/bench-peers-report.py on made-up runs, one case at a time.

    /usr/bin/python3 tests/peers/bench_report_check.py scripts/bench-peers-report.py

Each case writes a runs file (ROW SERVER ROUND CPU_TICKS JSON_FILE, the JSON as
squall-bench --json writes it), runs the report with --check, and checks the target's
verdict line and the exit status. Prints "ok N cases" and exits 0, or names the first case
that went wrong and exits 1. Run by tests/test_bench_floor.c.
"""
import json
import os
import subprocess
import sys
import tempfile

REPORT = sys.argv[1]


def runs_file(d, name, runs):
    """runs: (row, server, round, cpu_ticks, answers, p99_us, errors)."""
    path = os.path.join(d, name)
    with open(path, "w") as f:
        for i, (row, server, rnd, ticks, answers, p99, errors) in enumerate(runs):
            jf = os.path.join(d, f"{name}.{i}.json")
            with open(jf, "w") as j:
                json.dump({"errors": {"connect": errors}, "requests": answers,
                           "requests_per_s": answers / 8, "latency_us": {"p99": p99}}, j)
            f.write(f"{row} {server} {rnd} {ticks} {jf}\n")
    return path


def verdict(d, name, runs, target):
    path = runs_file(d, name, runs)
    p = subprocess.run([sys.executable, REPORT, "--runs", path, "--out", path + ".out",
                        "--hz", "100", "--check"], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if target in line and not line.startswith("  not measured"):
            return line.split()[0] + (" FLOOR" if "BELOW FLOOR" in line else ""), p.returncode, line
    return "absent", p.returncode, p.stdout + p.stderr


def plain(server, rnd, ticks, answers=1000000, p99=800, errors=0):
    return ("plain-c50", server, rnd, ticks, answers, p99, errors)


def pipe(server, rnd, answers):
    return ("pipe16-c256", server, rnd, 100, answers, 800, 0)


CPU50 = "plaintext 50: CPU per request"
CASES = [
    # (name, runs, target text, expected verdict, expected exit status)
    ("far above the floor is missed",
     [plain("squall", 1, 500), plain("nginx", 1, 100), plain("floor", 1, 90)],
     CPU50, "MISSED", 1),
    ("near a floor that misses too is below the floor",
     [plain("squall", 1, 85), plain("nginx", 1, 100), plain("floor", 1, 84)],
     CPU50, "BELOW FLOOR", 1),
    ("near the floor but 1.2x of it is missed",
     [plain("squall", 1, 100), plain("nginx", 1, 100), plain("floor", 1, 84)],
     CPU50, "MISSED", 1),
    ("a floor measured in another round only does not count",
     [plain("squall", 1, 300), plain("nginx", 1, 100), plain("squall", 2, 300),
      plain("nginx", 2, 100), plain("squall", 3, 85), plain("nginx", 3, 100),
      plain("floor", 3, 84)],
     CPU50, "MISSED", 1),
    ("a floor run with errors does not count",
     [plain("squall", 1, 85), plain("nginx", 1, 100), plain("floor", 1, 84, errors=3)],
     CPU50, "MISSED", 1),
    ("squall with errors fails",
     [plain("squall", 1, 50, errors=150), plain("nginx", 1, 100), plain("floor", 1, 84)],
     CPU50, "FAILED", 1),
    ("squall without an answer fails",
     [plain("squall", 1, 0, answers=0, p99=0), plain("nginx", 1, 100)],
     CPU50, "FAILED", 1),
    ("met",
     [plain("squall", 1, 70, p99=700), plain("nginx", 1, 100), plain("floor", 1, 69)],
     CPU50, "met", 0),
    ("a rate below 7x, with the floor below it too and squall near it",
     [pipe("squall", 1, 6000000), pipe("nginx", 1, 1000000), pipe("floor", 1, 6200000)],
     "pipelined 16", "BELOW FLOOR", 1),
    ("a rate far below the floor's",
     [pipe("squall", 1, 3000000), pipe("nginx", 1, 1000000), pipe("floor", 1, 6200000)],
     "pipelined 16", "MISSED", 1),
    ("no floor at all (TLS only)",
     [("tls-c50", "squall", 1, 70, 1000000, 800, 0), ("tls-c50", "nginx", 1, 100, 1000000, 800, 0)],
     "GET /plaintext over TLS", "absent", 0),
]


def main():
    with tempfile.TemporaryDirectory() as d:
        for i, (name, runs, target, want, status) in enumerate(CASES):
            got, rc, line = verdict(d, f"case{i}", runs, target)
            if got != want or rc != status:
                print(f"case \"{name}\": {got} (exit {rc}), expected {want} (exit {status}):\n{line}")
                return 1
    print(f"ok {len(CASES)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
