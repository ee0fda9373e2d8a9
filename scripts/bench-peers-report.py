#!/usr/bin/python3
"""The table of scripts/bench-peers.sh: medians, squall's ratio to each peer per round, targets.

Reads the runs file the script writes (one line a run: ROW SERVER ROUND CPU_TICKS JSON_FILE,
JSON_FILE being squall-bench's --json output), prints one table to stdout and writes into
--out: table.txt (the same), results.tsv (every run), medians.tsv, and chart.png when
gnuplot is installed. With --check, exits 1 when a target is missed.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

ROW_ORDER = ["plain-c50", "plain-c256", "paced-c256", "pipe16-c256", "idle-http", "tls-c50",
             "ws-c50-32B", "ws-c50-16K", "ws-c500-32B", "ws-c500-16K", "idle-ws"]
SERVER_ORDER = ["squall", "nginx", "node", "uvicorn", "h2o", "node-ws", "py-websockets", "floor"]
ROW_TEXT = {
    "plain-c50": "GET /plaintext, 50 connections",
    "plain-c256": "GET /plaintext, 256 connections",
    "paced-c256": "GET /plaintext, 256 connections, 40,000/s in all (open loop)",
    "pipe16-c256": "GET /plaintext, 256 connections, 16 pipelined",
    "idle-http": "idle keep-alive connections (--hold)",
    "tls-c50": "GET /plaintext over TLS (ECDHE, AES-128-GCM), 50 connections, wrk",
    "ws-c50-32B": "WebSocket echo, 50 connections, 32 B",
    "ws-c50-16K": "WebSocket echo, 50 connections, 16 KiB",
    "ws-c500-32B": "WebSocket echo, 500 connections, 32 B",
    "ws-c500-16K": "WebSocket echo, 500 connections, 16 KiB",
    "idle-ws": "idle WebSocket connections (--hold)",
}

# (row, peer, metric, op, limit, text). metric: "cpu", "p99", "rate" are squall / peer
# ratios; "bpc" too; "bpc_abs" is squall's own bytes per connection.
TARGETS = [
    ("plain-c50", "nginx", "cpu", "<=", 0.8, "plaintext 50: CPU per request <= 0.8x nginx"),
    ("plain-c50", "nginx", "p99", "<=", 1.0, "plaintext 50: p99 no worse than nginx"),
    ("plain-c256", "nginx", "cpu", "<=", 0.8, "plaintext 256: CPU per request <= 0.8x nginx"),
    ("plain-c256", "nginx", "p99", "<=", 1.0, "plaintext 256: p99 no worse than nginx"),
    ("paced-c256", "nginx", "p99", "<=", 1.0, "plaintext 256 at 40k/s: p99 no worse than nginx"),
    ("pipe16-c256", "nginx", "rate", ">=", 7.0, "pipelined 16: requests/s >= 7x nginx"),
    ("ws-c50-32B", "node-ws", "cpu", "<=", 0.30, "ws 50 x 32 B: CPU per message <= 0.30x Node ws"),
    ("ws-c50-16K", "node-ws", "cpu", "<=", 0.11, "ws 50 x 16 KiB: CPU per message <= 0.11x Node ws"),
    ("ws-c500-32B", "node-ws", "cpu", "<=", 0.63, "ws 500 x 32 B: CPU per message <= 0.63x Node ws"),
    ("ws-c500-16K", "node-ws", "cpu", "<=", 0.15, "ws 500 x 16 KiB: CPU per message <= 0.15x Node ws"),
    ("idle-http", "nginx", "bpc", "<=", 0.7, "idle keep-alive: bytes per connection <= 0.7x nginx"),
    ("idle-ws", None, "bpc_abs", "<=", 1024, "idle WebSocket: <= 1 KiB per connection"),
]


def load_runs(path, hz):
    runs = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 5:
                continue
            row, server, rnd, ticks, jf = parts
            with open(jf) as jfile:
                j = json.load(jfile)
            r = {"row": row, "server": server, "round": int(rnd),
                 "errors": sum(j["errors"].values())}
            if "hold" in j:
                r["bpc"] = j["hold"].get("bytes_per_conn")
                r["opened"] = j["hold"]["opened"]
                r["open_s"] = j["hold"]["open_s"]
            else:
                n = j["requests"]
                r["answers"] = n
                r["rate"] = j["requests_per_s"]
                # No answer, no figure per answer.
                r["cpu"] = int(ticks) * 1e6 / hz / n if n else None
                r["p99"] = j["latency_us"]["p99"] / 1000.0 if n else None
            runs.append(r)
    return runs


def medians(runs):
    cells = {}
    for r in runs:
        cells.setdefault((r["row"], r["server"]), []).append(r)
    med = {}
    for key, rs in cells.items():
        m = {"n": len(rs), "errors": sum(r["errors"] for r in rs)}
        for k in ("rate", "cpu", "p99", "bpc"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                m[k] = statistics.median(vals)
        med[key] = m
    return med


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def by_round(runs, row, servers, metric):
    """{round: {server: value}} of the row's runs on these servers that have the metric; the
    floor's only when whole (answers and no error)."""
    by = {}
    for r in runs:
        if r["row"] != row or r["server"] not in servers or r.get(metric) is None:
            continue
        if r["server"] == "floor" and (r["errors"] or not r.get("answers")):
            continue
        by.setdefault(r["round"], {})[r["server"]] = r[metric]
    return by


def round_ratios(runs, row, peer, metric):
    """squall's value over the peer's, one per round in which both were measured."""
    by = by_round(runs, row, ("squall", peer), metric)
    out = []
    for rnd in sorted(by):
        v = ratio(by[rnd].get("squall"), by[rnd].get(peer))
        if v is not None:
            out.append(v)
    return out


# A missed target is BELOW FLOOR when, in every round squall's ratio comes from, the floor
# was measured too (whole: answers and no error), the floor's median ratio to the peer
# misses the limit as well, and squall's median over the floor's is within this factor
# (its CPU or p99 at most 1.10x the floor's, its rate at least 1/1.10 of it).
NEAR_FLOOR = 1.10


def floor_ratios(runs, row, peer, metric):
    """(floor / peer, squall / floor) for each round in which squall and the peer were
    measured, or None when the floor was not measured whole in every one of them: the
    floor is compared on exactly the runs squall's ratio comes from."""
    by = by_round(runs, row, ("squall", peer, "floor"), metric)
    out = []
    for rnd in sorted(by):
        d = by[rnd]
        if "squall" not in d or not d.get(peer):
            continue
        if not d.get("floor"):
            return None
        out.append((d["floor"] / d[peer], d["squall"] / d["floor"]))
    return out or None


def squall_faults(runs, row):
    """squall's errors and runs without an answer in this row: a target is not met by a
    server that failed its load."""
    errors = empty = 0
    for r in runs:
        if r["row"] == row and r["server"] == "squall":
            errors += r["errors"]
            empty += "answers" in r and not r["answers"]
    return errors, empty


def paired(runs, row, peer, metric):
    """The median of the rounds' ratios: each round's runs of a row are close in time."""
    rs = round_ratios(runs, row, peer, metric)
    return statistics.median(rs) if rs else None


def fmt(v, spec, dash="-"):
    return dash if v is None else format(v, spec)


def table(med, runs):
    rows = [r for r in ROW_ORDER if any(k[0] == r for k in med)]
    lines = []
    head = (f"{'row':<12} {'server':<14} {'answers/s':>10} {'CPU us':>8} {'p99 ms':>8} "
            f"{'B/conn':>8} | {'squall/peer:':<12} {'rate':>6} {'CPU':>6} {'p99':>6} {'B/conn':>6}")
    lines.append(head)
    lines.append("-" * len(head))
    for row in rows:
        servers = sorted((k[1] for k in med if k[0] == row),
                         key=lambda s: SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)
        for s in servers:
            m = med[(row, s)]
            cols = (f"{row:<12} {s:<14} {fmt(m.get('rate'), ',.0f'):>10} "
                    f"{fmt(m.get('cpu'), '.2f'):>8} {fmt(m.get('p99'), '.2f'):>8} "
                    f"{fmt(m.get('bpc'), ',.0f'):>8} | ")
            if s == "squall":
                cols += f"{'':<12} {'':>6} {'':>6} {'':>6} {'':>6}"
            else:
                cols += (f"{'':<12} "
                         f"{fmt(paired(runs, row, s, 'rate'), '.2f'):>6} "
                         f"{fmt(paired(runs, row, s, 'cpu'), '.2f'):>6} "
                         f"{fmt(paired(runs, row, s, 'p99'), '.2f'):>6} "
                         f"{fmt(paired(runs, row, s, 'bpc'), '.2f'):>6}")
            if m["errors"]:
                cols += f"  ({m['errors']} errors)"
            lines.append(cols.rstrip())
        lines.append("")
    return lines


def check_targets(med, runs):
    """One line a target; a ratio target also shows the floor's own ratio to the same peer in
    the same rounds, and squall's to the floor: a limit the floor misses too, with squall
    near the floor, is marked BELOW FLOOR (and still counted as missed). A row in which
    squall had errors or runs without an answer fails its targets (FAILED)."""
    lines = ["targets (squall's ratio to the peer; lower is better except rate;"
             " floor: the floor's ratio to that peer):"]
    missed = 0
    for row, peer, metric, op, limit, text in TARGETS:
        sq = med.get((row, "squall"))
        errors, empty = squall_faults(runs, row)
        if errors or empty:
            missed += 1
            lines.append(f"  {'FAILED':<12} {text:<54} squall: {errors} errors, "
                         f"{empty} runs without an answer")
            continue
        if metric == "bpc_abs":
            v = sq.get("bpc") if sq else None
            shown = None if v is None else f"{v:,.0f} B"
        else:
            rs = round_ratios(runs, row, peer, metric)
            v = statistics.median(rs) if rs else None
            shown = None if v is None else f"{v:.2f}x"
            if len(rs) > 1:
                shown += " (rounds " + " ".join(f"{x:.2f}" for x in rs) + ")"
        floor = near = None
        fs = floor_ratios(runs, row, peer, metric)  # None where the floor was not run
        if fs:
            floor = statistics.median([f for f, _ in fs])
            near = statistics.median([q for _, q in fs])
        if shown is not None and floor is not None:
            shown += f"; floor {floor:.2f}x, squall/floor {near:.2f}x"
        if v is None:
            verdict = "not measured"
        elif (v <= limit) if op == "<=" else (v >= limit):
            verdict = "met"
        else:
            missed += 1
            below = floor is not None and (
                (floor > limit and near <= NEAR_FLOOR) if op == "<="
                else (floor < limit and near >= 1 / NEAR_FLOOR))
            verdict = "BELOW FLOOR" if below else "MISSED"
        lines.append(f"  {verdict:<12} {text:<54} {shown or '-'}".rstrip())
    return lines, missed


def chart(med, runs, out):
    gp = shutil.which("gnuplot")
    if not gp:
        return "chart: gnuplot is not installed (apt-get install gnuplot-nox), no PNG written"
    peers = [s for s in SERVER_ORDER if s != "squall" and any(k[1] == s for k in med)]
    rows = [r for r in ROW_ORDER if (r, "squall") in med]
    dat = os.path.join(out, "chart.dat")
    with open(dat, "w") as f:
        f.write("row " + " ".join(peers) + "\n")
        for row in rows:
            metric = "bpc" if row.startswith("idle") else "cpu"
            vals = []
            for p in peers:
                v = paired(runs, row, p, metric)
                vals.append("-" if v is None else f"{v:.4f}")
            f.write(row + " " + " ".join(vals) + "\n")
    png = os.path.join(out, "chart.png")
    plot = ", ".join(f"'{dat}' using {i + 2}:xtic(1) title '{p}'" for i, p in enumerate(peers))
    script = f"""
set terminal png size 1100,520
set output '{png}'
set datafile missing '-'
set key autotitle columnhead outside right top
set title "squall hello / peer: server CPU per answer (idle rows: bytes per connection); below 1 is squall ahead"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y 2
set grid ytics
set xtics rotate by -25
set ylabel 'squall / peer (log scale)'
plot {plot}, 1 with lines lc rgb 'black' lw 2 notitle
"""
    try:
        subprocess.run([gp], input=script, text=True, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        return f"chart: gnuplot failed: {e.stderr.strip().splitlines()[-1:]}"
    return f"chart: {png}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hz", type=int, default=100)
    ap.add_argument("--header")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()

    runs = load_runs(a.runs, a.hz)
    if not runs:
        print("bench-peers: no runs recorded", file=sys.stderr)
        return 1
    med = medians(runs)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.tsv"), "w") as f:
        f.write("row\tserver\tround\trate\tcpu_us\tp99_ms\tbytes_per_conn\terrors\n")
        for r in runs:
            f.write("\t".join(str(r.get(k, "")) for k in
                              ("row", "server", "round", "rate", "cpu", "p99", "bpc", "errors")) + "\n")
    with open(os.path.join(a.out, "medians.tsv"), "w") as f:
        f.write("row\tserver\truns\trate\tcpu_us\tp99_ms\tbytes_per_conn\terrors\n")
        for (row, s), m in sorted(med.items()):
            f.write("\t".join(str(x) for x in (row, s, m["n"], m.get("rate", ""), m.get("cpu", ""),
                                                m.get("p99", ""), m.get("bpc", ""), m["errors"])) + "\n")

    lines = table(med, runs)
    tl, missed = check_targets(med, runs)
    lines += tl
    if a.quick:
        lines.append("  (QUICK=1: fewer rows, 2 s, 1 round; the targets are meant for a full run)")
    lines.append("")
    lines.append("answers/s: responses or echoed messages per second (median of the rounds);")
    lines.append("CPU us: server CPU time (utime + stime) per answer; p99: squall-bench's latency;")
    lines.append("B/conn: server RSS growth per idle connection; squall/peer: the median over the")
    lines.append("rounds of squall's figure over the peer's in the same round (rate: higher is")
    lines.append("better for squall, the others: lower is better). floor: bench/floor.c, epoll")
    lines.append("and one recv + one sendmsg per ready socket, nothing else; BELOW FLOOR: a target")
    lines.append("the floor misses too, with squall within 1.10x of the floor (still counted as")
    lines.append("missed); FAILED: squall had errors or answered nothing in that row")
    lines.append(chart(med, runs, a.out))
    text = "\n".join(lines)
    print(text)
    header = open(a.header).read() if a.header and os.path.exists(a.header) else ""
    with open(os.path.join(a.out, "table.txt"), "w") as f:
        f.write(header + "\n" + text + "\n")
    if a.check and missed:
        print(f"bench-peers: {missed} target(s) missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
