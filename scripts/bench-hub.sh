#!/usr/bin/env bash
# bench-hub.sh — the hub's figures: build/bin/chat next to bench/node-chat.js (Node's http
# and the npm `ws` package, the same HTTP surface, rooms in memory), in one run.
#
# Three measurements, each on a freshly started server (one worker: --workers 1 for
# squall, Node's one thread), by build/bin/bench-hub-load (bench/hub-load.c):
#   polls    memory per held long poll: VmRSS delta / N with N_POLLS long polls held
#            (after a warm-up of 100 held and answered); a publish then answers them all
#   ws       memory per idle WebSocket subscriber, the same way with N_WS subscribers;
#            a publish then reaches them all
#   latency  publish-to-delivery time to N_LAT WebSocket subscribers: MESSAGES messages
#            POSTed one at a time (after 20 not counted); p50 and p99 over every delivery,
#            and over the messages the p50 of the time until the first subscriber had it,
#            p50 and p99 of the time until the last one had it;
#            with the server's CPU time per delivery (utime + stime from /proc/PID/stat),
#            and the user-space part of it (the rest is the kernel's sends)
# The server is pinned to CPU SERVER_CPU and the load client to LOAD_CPU (taskset); each
# measurement is repeated REPEAT times, alternating which server goes first, and the
# median is reported with the ratio squall/node (below 1: squall uses less / is faster).
#
#   scripts/bench-hub.sh                       # about 3 minutes
#   REPEAT=1 N_POLLS=2000 N_WS=2000 scripts/bench-hub.sh     # quick look
#
# Env: REPEAT (3), N_POLLS (10000), N_WS (10000), N_LAT (1000), MESSAGES (200),
# SERVER_CPU (1), LOAD_CPU (0), NOFILE (20000, the servers' open-file limit), NICE (unset;
# e.g. -20 runs servers and client at that niceness, as root), CHAT (the squall server,
# build/bin/chat).
set -euo pipefail

REPEAT=${REPEAT:-3}
N_POLLS=${N_POLLS:-10000}
N_WS=${N_WS:-10000}
N_LAT=${N_LAT:-1000}
MESSAGES=${MESSAGES:-200}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
NOFILE=${NOFILE:-20000}

nice_cmd=()
[ -n "${NICE:-}" ] && nice_cmd=(nice -n "$NICE")

for v in REPEAT N_POLLS N_WS N_LAT MESSAGES; do
    case ${!v} in
        '' | *[!0-9]* | 0) echo "$v must be a positive integer" >&2; exit 2 ;;
    esac
done
for v in N_POLLS N_WS; do
    if [ "${!v}" -gt $((NOFILE - 500)) ]; then
        echo "$v=${!v} does not fit under the open-file limit ($NOFILE)" >&2
        exit 2
    fi
done

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/peers-lib.sh
. "$root/scripts/peers-lib.sh"

make --no-print-directory -s -C "$root" all
for tool in node taskset curl ss; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/deps.sh" >&2; exit 1; }
done
[ -d "$root/tests/peers/node_modules/ws" ] ||
    { echo "npm 'ws' missing in tests/peers: run scripts/deps.sh" >&2; exit 1; }
CHAT=${CHAT:-$root/build/bin/chat}
[ -x "$CHAT" ] || { echo "$CHAT is not built" >&2; exit 1; }
load=$root/build/bin/bench-hub-load

TMPD=$(mktemp -d /tmp/squall-benchhub.XXXXXX)
SRV_PID=""
cleanup() {
    trap - EXIT INT TERM
    [ -n "$SRV_PID" ] && stop_pid "$SRV_PID"
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME: starts that server on a free port, pinned, with the open-file limit raised;
# sets SRV_PID and PORT.
start() {
    PORT=$(free_port)
    if [ "$1" = squall ]; then
        (
            ulimit -n "$NOFILE"
            exec "${nice_cmd[@]}" taskset -c "$SERVER_CPU" "$CHAT" \
                --host 127.0.0.1 --port "$PORT" --workers 1
        ) >"$TMPD/squall.log" 2>&1 &
    else
        (
            ulimit -n "$NOFILE"
            exec "${nice_cmd[@]}" taskset -c "$SERVER_CPU" node "$root/bench/node-chat.js" \
                --host 127.0.0.1 --port "$PORT"
        ) >"$TMPD/node.log" 2>&1 &
    fi
    SRV_PID=$!
    wait_http "http://127.0.0.1:$PORT/rooms/probe/messages?since=0" "$SRV_PID"
}

clk_tck=$(getconf CLK_TCK)

# cpu_split PID: "utime stime" of the process in clock ticks (/proc/PID/stat fields 14
# and 15, counted after the command name).
cpu_split() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}

# field LINE KEY: the value of KEY=... in LINE.
field() {
    tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}

# measure NAME MODE: one measurement on a fresh server; appends its line to $TMPD/NAME.MODE.
measure() {
    local name=$1 mode=$2 out args=()
    start "$name"
    case $mode in
        polls) args=(-n "$N_POLLS" -P "$SRV_PID") ;;
        ws) args=(-n "$N_WS" -P "$SRV_PID") ;;
        latency) args=(-n "$N_LAT" -m "$MESSAGES") ;;
    esac
    local t0 t1
    t0=$(cpu_split "$SRV_PID")
    if ! out=$(timeout 150 "${nice_cmd[@]}" taskset -c "$LOAD_CPU" "$load" "$mode" "${args[@]}" \
        -T 120 "http://127.0.0.1:$PORT" 2>&1); then
        echo "$name $mode: $out" >&2
        echo "server log:" >&2
        tail -n 5 "$TMPD/$name.log" >&2
        exit 1
    fi
    proc_alive "$SRV_PID" || { echo "$name exited during $mode" >&2; exit 1; }
    t1=$(cpu_split "$SRV_PID")
    if [ "$mode" = latency ]; then
        # the server's CPU time per delivery (the subscribers' handshakes included), in all
        # and in user space: deliveries = subscribers x (20 warm-up + MESSAGES) messages
        out+=$(awk -v a="$t0" -v b="$t1" -v hz="$clk_tck" -v d=$((N_LAT * (20 + MESSAGES))) 'BEGIN {
            split(a, x, " "); split(b, y, " ")
            printf " cpu_us=%.2f user_us=%.2f", (y[1] + y[2] - x[1] - x[2]) * 1e6 / hz / d,
                (y[1] - x[1]) * 1e6 / hz / d }')
    fi
    stop_pid "$SRV_PID"
    SRV_PID=""
    echo "$out" >>"$TMPD/$name.$mode"
    case $mode in
        polls | ws) printf '  %-7s %-8s %6s bytes each\n' "$name" "$mode" "$(field "$out" bytes_per)" ;;
        latency) printf '  %-7s %-8s p50 %s us, p99 %s us, last subscriber p50 %s us, server CPU %s us per delivery\n' \
            "$name" "$mode" "$(field "$out" p50_us)" "$(field "$out" p99_us)" \
            "$(field "$out" last_p50_us)" "$(field "$out" cpu_us)" ;;
    esac
}

# median NAME MODE KEY
median() {
    local f=$TMPD/$1.$2 l
    while read -r l; do field "$l" "$3"; done <"$f" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

runs() {
    local f=$TMPD/$1.$2 l
    while read -r l; do field "$l" "$3"; done <"$f" | paste -sd' '
}

echo "bench-hub: $REPEAT runs per cell alternating servers; servers on CPU $SERVER_CPU," \
    "load client on CPU $LOAD_CPU${NICE:+, nice $NICE}"
echo "  squall: build/bin/chat --workers 1 (in memory)"
echo "  node:   bench/node-chat.js on Node $(node --version), ws $(node -p \
    "require('$root/tests/peers/node_modules/ws/package.json').version")"
load0=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load0" 'BEGIN { exit !(l > 0.5) }'; then
    echo "  warning: load average $load0 before the run: other work shares these CPUs," \
        "latencies will be noisy (memory less so)"
fi

for i in $(seq 1 "$REPEAT"); do
    if [ $((i % 2)) = 1 ]; then order="squall node"; else order="node squall"; fi
    echo "run $i/$REPEAT"
    for mode in polls ws latency; do
        for name in $order; do measure "$name" "$mode"; done
    done
done

# row LABEL MODE KEY UNIT: one line of the table (a Markdown table).
row() {
    local s n
    s=$(median squall "$2" "$3")
    n=$(median node "$2" "$3")
    awk -v l="$1" -v s="$s" -v n="$n" -v u="$4" -v sr="$(runs squall "$2" "$3")" \
        -v nr="$(runs node "$2" "$3")" 'BEGIN {
        printf "| %-46s | %11s | %11s | %6s | %s / %s |\n", l, s " " u, n " " u,
            (n > 0 ? sprintf("%.2fx", s / n) : "-"), sr, nr }'
}

echo
printf '| %-46s | %11s | %11s | %6s | %s |\n' "figure (median of $REPEAT runs)" squall node \
    "ratio" "runs: squall / node"
echo "|---|---:|---:|---:|---|"
row "memory per held long poll ($N_POLLS held)" polls bytes_per B
row "memory per idle WebSocket ($N_WS subscribers)" ws bytes_per B
row "publish to delivery p50 ($N_LAT WS subscribers)" latency p50_us us
row "publish to delivery p99" latency p99_us us
row "until the first subscriber has it, p50" latency first_p50_us us
row "until the last subscriber has it, p50" latency last_p50_us us
row "until the last subscriber has it, p99" latency last_p99_us us
row "server CPU per delivery (user + system)" latency cpu_us us
row "server CPU per delivery, user space only" latency user_us us
echo "(ratio: squall/node, lower is better; load average before: $load0, after:" \
    "$(cut -d' ' -f1 /proc/loadavg))"
