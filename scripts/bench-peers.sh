#!/usr/bin/env bash
# bench-peers.sh — squall's hello next to nginx on the same machine, in one run.
#
# Both servers answer `GET /plaintext` with "Hello, world" on one worker. The server is
# pinned to CPU 1 and wrk to CPU 0 (taskset); each measurement is repeated REPEAT times,
# alternating servers, and the median is reported, with the server's CPU time per request
# (utime + stime from /proc/PID/stat, before and after each run). Two loads:
#   plaintext    wrk -t1 -c50 -dDURATION URL
#   pipelined16  the same with a Lua script that sends 16 requests per write
#
#   scripts/bench-peers.sh                   # 10 s x 3 per cell, about 2.5 minutes
#   DURATION=2s REPEAT=1 scripts/bench-peers.sh   # quick look
#
# Env: DURATION (10s), REPEAT (3), CONNS (50), PIPELINE (16), SERVER_CPU (1), WRK_CPU (0),
# NICE (unset; e.g. -20 runs the servers and wrk at that niceness, as root, so that other
# work sharing the machine disturbs the figures less).
set -euo pipefail

DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-50}
PIPELINE=${PIPELINE:-16}
SERVER_CPU=${SERVER_CPU:-1}
WRK_CPU=${WRK_CPU:-0}

nice_cmd=()
[ -n "${NICE:-}" ] && nice_cmd=(nice -n "$NICE")

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/peers-lib.sh
. "$root/scripts/peers-lib.sh"

secs=${DURATION%s}
case $secs in
    '' | *[!0-9]*) echo "DURATION must be whole seconds, like 10s" >&2; exit 2 ;;
esac
case $REPEAT in
    '' | *[!0-9]* | 0) echo "REPEAT must be a positive integer" >&2; exit 2 ;;
esac

make --no-print-directory -s -C "$root" all
for tool in wrk nginx taskset curl ss pgrep; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/deps.sh" >&2; exit 1; }
done

TMPD=$(mktemp -d /tmp/squall-bench.XXXXXX)
SQ_PID=""
NGX_PID=""
NGX_WORKERS=""
cleanup() {
    trap - EXIT INT TERM
    [ -n "$SQ_PID" ] && stop_pid "$SQ_PID"
    if [ -n "$NGX_PID" ]; then
        stop_pid "$NGX_PID"
        for w in $NGX_WORKERS; do stop_pid "$w"; done
    fi
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- servers -------------------------------------------------------------------------
SQ_PORT=$(free_port)
"${nice_cmd[@]}" taskset -c "$SERVER_CPU" "$root/build/bin/hello" --host 127.0.0.1 --port "$SQ_PORT" \
    --workers 1 --slow-callback-ms 0 >"$TMPD/hello.log" 2>&1 &
SQ_PID=$!
wait_http "http://127.0.0.1:$SQ_PORT/plaintext" "$SQ_PID"

NGX_PORT=$(free_port)
while [ "$NGX_PORT" = "$SQ_PORT" ]; do NGX_PORT=$(free_port); done
nginx_conf "$NGX_PORT" 1024 65s
# shellcheck disable=SC2046
"${nice_cmd[@]}" taskset -c "$SERVER_CPU" $(nginx_cmd) >"$TMPD/nginx.log" 2>&1 &
NGX_PID=$!
wait_http "http://127.0.0.1:$NGX_PORT/plaintext" "$NGX_PID"
NGX_WORKERS=$(pgrep -P "$NGX_PID" | tr '\n' ' ')

for url in "http://127.0.0.1:$SQ_PORT/plaintext" "http://127.0.0.1:$NGX_PORT/plaintext"; do
    body=$(curl -fs --max-time 2 "$url")
    [ "$body" = "Hello, world" ] || { echo "unexpected body from $url: $body" >&2; exit 1; }
done

# wrk's Lua hook: one write carries PIPELINE requests; wrk counts every response.
cat >"$TMPD/pipeline.lua" <<EOF
init = function(args)
    local batch = {}
    for i = 1, $PIPELINE do batch[i] = wrk.format(nil, wrk.path) end
    pipelined = table.concat(batch)
end
request = function() return pipelined end
EOF

clk_tck=$(getconf CLK_TCK)

# run_one NAME PORT LOAD DURATION [warmup]: one wrk run; appends "rps cpu_us_per_req" to
# $TMPD/NAME.LOAD, except for a warm-up.
run_one() {
    local name=$1 port=$2 load=$3 dur=$4 warm=${5:-} pids t0 t1 out reqs rps args=()
    if [ "$name" = squall ]; then pids=$SQ_PID; else pids="$NGX_PID $NGX_WORKERS"; fi
    [ "$load" = pipelined ] && args=(-s "$TMPD/pipeline.lua")
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $pids)
    out=$(timeout $((${dur%s} + 30)) "${nice_cmd[@]}" taskset -c "$WRK_CPU" \
        wrk -t1 -c"$CONNS" -d"$dur" "${args[@]}" "http://127.0.0.1:$port/plaintext" 2>&1) || {
        echo "wrk failed against $name:" >&2
        echo "$out" >&2
        exit 1
    }
    # shellcheck disable=SC2086
    t1=$(cpu_ticks $pids)
    if grep -qE 'Socket errors|Non-2xx' <<<"$out"; then
        echo "warning: $name $load: $(grep -E 'Socket errors|Non-2xx' <<<"$out" | tr -s ' ')" >&2
    fi
    [ -n "$warm" ] && return 0
    reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    awk -v r="$rps" -v n="$reqs" -v d=$((t1 - t0)) -v hz="$clk_tck" \
        'BEGIN { printf "%.0f %.3f\n", r, (n > 0 ? d * 1e6 / hz / n : 0) }' \
        >>"$TMPD/$name.$load"
}

# median FILE COLUMN
median() {
    sort -g -k"$2,$2" "$1" | awk -v c="$2" '{ v[NR] = $c }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "bench-peers: wrk -t1 -c$CONNS -d$DURATION, $REPEAT runs per cell alternating servers;" \
    "server on CPU $SERVER_CPU, wrk on CPU $WRK_CPU${NICE:+, nice $NICE}"
echo "  squall: build/bin/hello --workers 1 --slow-callback-ms 0 (pid $SQ_PID, port $SQ_PORT)"
echo "  nginx:  $(nginx -v 2>&1 | sed 's/^nginx version: //'), 1 worker, return 200 (port $NGX_PORT)"

load0=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load0" 'BEGIN { exit !(l > 0.5) }'; then
    echo "  warning: load average $load0 before the run: other work shares these 2 CPUs," \
        "req/s will be noisy (CPU us/req less so)"
fi

# Warm-up: one second each, not counted.
for load in plaintext pipelined; do
    run_one squall "$SQ_PORT" "$load" 1s warmup
    run_one nginx "$NGX_PORT" "$load" 1s warmup
done

for i in $(seq 1 "$REPEAT"); do
    for load in plaintext pipelined; do
        if [ $((i % 2)) = 1 ]; then order="squall nginx"; else order="nginx squall"; fi
        for name in $order; do
            if [ "$name" = squall ]; then port=$SQ_PORT; else port=$NGX_PORT; fi
            run_one "$name" "$port" "$load" "$DURATION"
            printf '  run %d/%d %-9s %-6s %s req/s\n' "$i" "$REPEAT" "$load" "$name" \
                "$(tail -n1 "$TMPD/$name.$load" | cut -d' ' -f1)"
        done
    done
done

echo
printf '%-12s %-7s %12s %10s   %s\n' load server "req/s (med)" "CPU us/req" "runs (req/s)"
for load in plaintext pipelined; do
    label=$load
    [ "$load" = pipelined ] && label="pipelined$PIPELINE"
    for name in squall nginx; do
        f=$TMPD/$name.$load
        printf '%-12s %-7s %12s %10s   %s\n' "$label" "$name" "$(median "$f" 1)" \
            "$(median "$f" 2)" "$(cut -d' ' -f1 "$f" | paste -sd' ')"
    done
done
echo "(load average before: $load0, after: $(cut -d' ' -f1 /proc/loadavg))"
echo
for load in plaintext pipelined; do
    label=$load
    [ "$load" = pipelined ] && label="pipelined$PIPELINE"
    awk -v l="$label" -v sr="$(median "$TMPD/squall.$load" 1)" \
        -v nr="$(median "$TMPD/nginx.$load" 1)" -v sc="$(median "$TMPD/squall.$load" 2)" \
        -v nc="$(median "$TMPD/nginx.$load" 2)" 'BEGIN {
            printf "%-12s squall/nginx: req/s %.2fx, CPU per request %.2fx\n", l,
                (nr > 0 ? sr / nr : 0), (nc > 0 ? sc / nc : 0) }'
done
