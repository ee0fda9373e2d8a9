#!/usr/bin/env bash
# bench-peers.sh — squall's hello next to its peers, in one run and one table.
#
# HTTP: hello (1 worker), nginx (1 worker, `return 200`), Node.js `http`
# (bench/peers/node_http.js), uvicorn with uvloop and httptools (bench/peers/uvicorn_app.py)
# and h2o (1 thread, an mruby handler), each answering `GET /plaintext` with "Hello, world".
# WebSocket echo: hello's /ws/echo, Node's `ws` (bench/ws-echo-node.js) and Python's
# `websockets` (bench/peers/ws_echo_py.py). A peer that is not installed is left out, with
# a line saying so. In both suites "floor" (bench/floor.c: epoll, one recv and one sendmsg
# per ready socket, nothing else) shows about the least a server on epoll pays per answer on
# this kernel; it is left out of the idle rows.
#
# The servers are pinned to SERVER_CPU; the load generator, build/bin/squall-bench
# (--json), is pinned to LOAD_CPU. Every round starts the servers of a suite afresh, all at
# once on their own ports (idle, a server costs nothing), and measures on those processes,
# row by row, each row on every server in turn (the order rotates from round to round):
#   idle-http / idle-ws  --hold HOLD_N idle connections, VmRSS before and after (--pid)
#   plain-c50            plaintext, 50 connections          (HTTP servers)
#   plain-c256           plaintext, 256 connections
#   paced-c256           plaintext, 256 connections, paced at 40,000 requests/s in all
#                        (open loop: every server gets the same load, below what the fast
#                        ones can take, so its p99 is its own and not the load generator's)
#   pipe16-c256          plaintext, 256 connections, 16 requests per write
#   ws-c50-32B ...       echo, 50 and 500 connections x 32 B and 16 KiB  (WebSocket servers)
#   tls-c50              plaintext over TLS, 50 keep-alive connections: hello --tls-cert
#                        against nginx with the same certificate (P-256) and cipher (the
#                        client offers only ECDHE with AES-128-GCM; TLS 1.3 or 1.2 as both
#                        pick). The load is wrk (-t1), which speaks https (squall-bench
#                        does not), its numbers printed as squall-bench --json's.
# with the server's CPU time (utime + stime of the server's processes, /proc/PID/stat,
# before and after the load) divided by the answers. REPEAT rounds; the report
# (scripts/bench-peers-report.py) gives each server's median and squall's ratio to each
# peer as the median of the rounds' ratios (a row's runs in one round are a minute apart at
# most, so each ratio compares the servers on the same state of the machine). It also
# writes a PNG chart when gnuplot is installed and, with --check, fails when a target is
# missed.
#
#   scripts/bench-peers.sh                 # 10 s x 3 rounds, every row: about 15 minutes
#   QUICK=1 scripts/bench-peers.sh         # 2 s x 1 round, fewer rows: about a minute
#   scripts/bench-peers.sh --check         # exit 1 when a target is missed
#
# Env: DURATION (10s; QUICK 2s), REPEAT (3; QUICK 1), HOLD_N (10000; QUICK 2000),
# SERVER_CPU (1), LOAD_CPU (0), NOFILE (20000, the open-file limit given to the servers
# and to squall-bench), OUT (build/bench-peers: table.txt, results.tsv, chart.png),
# NICE (unset; e.g. -20, as root, runs servers and load at that niceness), SUITES ("http
# ws tls": which servers run; SUITES=tls runs the TLS row alone).
set -euo pipefail

CHECK=""
for a in "$@"; do
    case $a in
        --check) CHECK=--check ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-peers: unknown argument $a (--check, --help)" >&2; exit 2 ;;
    esac
done

QUICK=${QUICK:-}
[ "$QUICK" = 0 ] && QUICK=""
if [ -n "$QUICK" ]; then
    DURATION=${DURATION:-2s}; REPEAT=${REPEAT:-1}; HOLD_N=${HOLD_N:-2000}
else
    DURATION=${DURATION:-10s}; REPEAT=${REPEAT:-3}; HOLD_N=${HOLD_N:-10000}
fi
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
NOFILE=${NOFILE:-20000}
SUITES=${SUITES:-http ws tls}

root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$root/build/bench-peers}
# shellcheck source=scripts/peers-lib.sh
. "$root/scripts/peers-lib.sh"

secs=${DURATION%s}
case $secs in
    '' | *[!0-9]* | 0) echo "DURATION must be whole seconds, like 10s" >&2; exit 2 ;;
esac
case $REPEAT in
    '' | *[!0-9]* | 0) echo "REPEAT must be a positive integer" >&2; exit 2 ;;
esac
case $HOLD_N in
    '' | *[!0-9]* | 0) echo "HOLD_N must be a positive integer" >&2; exit 2 ;;
esac
if [ "$HOLD_N" -gt $((NOFILE - 500)) ]; then
    echo "HOLD_N=$HOLD_N does not fit under the open-file limit ($NOFILE)" >&2
    exit 2
fi

nice_cmd=()
[ -n "${NICE:-}" ] && nice_cmd=(nice -n "$NICE")
PY=/usr/bin/python3

make --no-print-directory -s -C "$root" all
for tool in taskset curl ss pgrep "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/deps.sh" >&2; exit 1; }
done
BENCH=$root/build/bin/squall-bench
NODE_PATH=$root/tests/peers/node_modules
export NODE_PATH

# --- which peers are here -------------------------------------------------------------
HTTP_SERVERS="squall"
WS_SERVERS="squall"
skipped=()
HTTP_SERVERS+=" floor"
WS_SERVERS+=" floor-ws"
if command -v nginx >/dev/null; then HTTP_SERVERS+=" nginx"; else skipped+=("nginx: not installed"); fi
if command -v node >/dev/null; then
    HTTP_SERVERS+=" node"
    if [ -d "$NODE_PATH/ws" ]; then WS_SERVERS+=" node-ws"
    else skipped+=("node-ws: tests/peers/node_modules/ws missing (scripts/deps.sh)"); fi
else
    skipped+=("node, node-ws: node not installed")
fi
if "$PY" -c 'import uvicorn, uvloop, httptools' 2>/dev/null; then HTTP_SERVERS+=" uvicorn"
else skipped+=("uvicorn: python3-uvicorn, python3-uvloop or python3-httptools not installed"); fi
if command -v h2o >/dev/null; then HTTP_SERVERS+=" h2o"; else skipped+=("h2o: not installed"); fi
if "$PY" -c 'import websockets' 2>/dev/null; then WS_SERVERS+=" py-websockets"
else skipped+=("py-websockets: python3-websockets not installed"); fi
TLS_SERVERS=""
if command -v wrk >/dev/null && command -v openssl >/dev/null; then
    TLS_SERVERS="squall-tls"
    if command -v nginx >/dev/null; then TLS_SERVERS+=" nginx-tls"; fi
else
    skipped+=("tls-c50: wrk or openssl not installed")
fi
case " $SUITES " in *" http "*) ;; *) HTTP_SERVERS="" ;; esac
case " $SUITES " in *" ws "*) ;; *) WS_SERVERS="" ;; esac
case " $SUITES " in *" tls "*) ;; *) TLS_SERVERS="" ;; esac

if [ -n "$QUICK" ]; then
    HTTP_ROWS="plain-c50 pipe16-c256"
    WS_ROWS="ws-c50-32B ws-c500-16K"
else
    HTTP_ROWS="plain-c50 plain-c256 paced-c256 pipe16-c256"
    WS_ROWS="ws-c50-32B ws-c50-16K ws-c500-32B ws-c500-16K"
fi

TMPD=$(mktemp -d /tmp/squall-bench-peers.XXXXXX)
SRV_PID=""
SRV_CPU_PIDS=""
SRV_PID_MEM=""
START_PID="" # the server being started, until it is recorded in PID_OF
declare -A PORT_OF=() PID_OF=() CPU_PIDS_OF=() MEM_PID_OF=()
cleanup() {
    trap - EXIT INT TERM
    stop_servers
    # a server that failed to start (no answer in time) is not recorded yet
    local p
    if [ -n "$START_PID" ]; then
        for p in $(pgrep -P "$START_PID" || true); do stop_pid "$p"; done
        stop_pid "$START_PID"
    fi
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -n "$TLS_SERVERS" ]; then
    tls_files "$TMPD/tls"
    wrk_json >"$TMPD/tls/json.lua"
fi

# srv_exec CMD...: runs CMD as the server, in the background, pinned to SERVER_CPU with the
# open-file limit raised; sets SRV_PID.
srv_exec() {
    (
        ulimit -n "$NOFILE"
        exec "${nice_cmd[@]}" taskset -c "$SERVER_CPU" "$@"
    ) >>"$TMPD/server.log" 2>&1 &
    SRV_PID=$!
    START_PID=$SRV_PID
}

# start_server NAME PORT: starts NAME on PORT and waits until it answers; sets SRV_PID (the
# process --pid reads VmRSS of: nginx's worker) and SRV_CPU_PIDS (all its processes).
start_server() {
    local name=$1 port=$2
    case $name in
        squall)
            srv_exec "$root/build/bin/hello" --host 127.0.0.1 --port "$port" --workers 1 \
                --slow-callback-ms 0 --idle-timeout 600000 ;;
        nginx)
            nginx_conf "$port" $((NOFILE - 100)) 120s
            # shellcheck disable=SC2046
            srv_exec $(nginx_cmd) ;;
        node) srv_exec node "$root/bench/peers/node_http.js" "$port" ;;
        uvicorn)
            srv_exec "$PY" -m uvicorn --app-dir "$root/bench/peers" uvicorn_app:app \
                --host 127.0.0.1 --port "$port" --loop uvloop --http httptools \
                --no-access-log --log-level warning --timeout-keep-alive 120 --backlog 2048 ;;
        h2o)
            h2o_conf "$port"
            srv_exec h2o -c "$TMPD/h2o/h2o.conf" ;;
        squall-tls)
            srv_exec "$root/build/bin/hello" --host 127.0.0.1 --port "$port" --workers 1 \
                --slow-callback-ms 0 --idle-timeout 600000 \
                --tls-cert "$TMPD/tls/cert.pem" --tls-key "$TMPD/tls/key.pem" ;;
        nginx-tls)
            nginx_conf "$port" $((NOFILE - 100)) 120s "$TMPD/tls/cert.pem" "$TMPD/tls/key.pem"
            # shellcheck disable=SC2046
            srv_exec $(nginx_cmd) ;;
        node-ws) srv_exec node "$root/bench/ws-echo-node.js" "$port" ;;
        floor) srv_exec "$root/build/bin/bench-floor" --port "$port" http ;;
        floor-ws) srv_exec "$root/build/bin/bench-floor" --port "$port" ws ;;
        py-websockets) srv_exec "$PY" "$root/bench/peers/ws_echo_py.py" "$port" ;;
    esac
    case $name in
        node-ws | py-websockets | floor-ws) wait_tcp "$port" "$SRV_PID" ;;
        *-tls) wait_http "https://127.0.0.1:$port/plaintext" "$SRV_PID" ;;
        *) wait_http "http://127.0.0.1:$port/plaintext" "$SRV_PID" ;;
    esac
    SRV_CPU_PIDS=$(proc_pids "$SRV_PID" | tr '\n' ' ')
    if [ "$name" = nginx ] || [ "$name" = nginx-tls ]; then
        local w
        w=$(pgrep -P "$SRV_PID" | head -n1)
        [ -n "$w" ] && SRV_PID_MEM=$w || SRV_PID_MEM=$SRV_PID
    else
        SRV_PID_MEM=$SRV_PID
    fi
}

# use_server NAME: makes the running NAME the one load and settle measure.
use_server() {
    SRV_PID=${PID_OF[$1]} SRV_CPU_PIDS=${CPU_PIDS_OF[$1]} SRV_PID_MEM=${MEM_PID_OF[$1]}
}

# stop_servers: stops every server started (all their processes).
stop_servers() {
    local name p
    for name in "${!PID_OF[@]}"; do
        for p in ${CPU_PIDS_OF[$name]}; do
            [ "$p" != "${PID_OF[$name]}" ] && stop_pid "$p"
        done
        stop_pid "${PID_OF[$name]}"
    done
    PORT_OF=() PID_OF=() CPU_PIDS_OF=() MEM_PID_OF=()
    SRV_PID="" SRV_CPU_PIDS="" SRV_PID_MEM=""
}

# load NAME ROW ROUND URL DUR SQUALL-BENCH-ARGS...: one squall-bench run against the running
# server; appends "ROW NAME ROUND cpu_ticks json_file" to $TMPD/runs (not for ROUND 0, the
# warm-up).
nrun=0
load() {
    local name=$1 row=$2 round=$3 url=$4 dur=$5 t0 t1 f
    shift 5
    nrun=$((nrun + 1))
    f=$TMPD/run.$nrun.json
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $SRV_CPU_PIDS)
    if ! (ulimit -n "$NOFILE"; exec timeout $((${dur%s} + 120)) "${nice_cmd[@]}" \
        taskset -c "$LOAD_CPU" "$BENCH" "$url" -d "$dur" --json "$@") >"$f" 2>"$f.err"; then
        if [ "$round" = 0 ]; then
            echo "  warning: warm-up against $name failed: $(head -n1 "$f.err")" >&2
            return 0
        fi
        echo "squall-bench failed against $name ($row):" >&2
        cat "$f.err" >&2
        tail -n 5 "$TMPD/server.log" >&2
        exit 1
    fi
    # shellcheck disable=SC2086
    t1=$(cpu_ticks $SRV_CPU_PIDS)
    [ "$round" = 0 ] && return 0
    say_run "$f" "$row" "$name" "$round" "$((t1 - t0))"
}

# load_wrk NAME ROW ROUND URL DUR CONNS: as load, with wrk (https://) offering only the
# cipher of $TMPD/tls/client.cnf; its summary becomes a squall-bench --json file.
load_wrk() {
    local name=$1 row=$2 round=$3 url=$4 dur=$5 c=$6 t0 t1 f
    nrun=$((nrun + 1))
    f=$TMPD/run.$nrun.json
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $SRV_CPU_PIDS)
    if ! (ulimit -n "$NOFILE"; export OPENSSL_CONF=$TMPD/tls/client.cnf
        exec timeout $((${dur%s} + 60)) "${nice_cmd[@]}" taskset -c "$LOAD_CPU" \
            wrk -t1 -c "$c" -d "$dur" -s "$TMPD/tls/json.lua" "$url") >"$f.out" 2>"$f.err" ||
        ! tail -n1 "$f.out" | grep -q '^{' ; then
        [ "$round" = 0 ] && { echo "  warning: warm-up against $name failed" >&2; return 0; }
        echo "wrk failed against $name ($row):" >&2
        cat "$f.out" "$f.err" >&2
        tail -n 5 "$TMPD/server.log" >&2
        exit 1
    fi
    # shellcheck disable=SC2086
    t1=$(cpu_ticks $SRV_CPU_PIDS)
    tail -n1 "$f.out" >"$f"
    [ "$round" = 0 ] && return 0
    say_run "$f" "$row" "$name" "$round" "$((t1 - t0))"
}

# say_run JSON ROW NAME ROUND TICKS: records a measured run in $TMPD/runs and prints it.
say_run() {
    local f=$1 row=$2 name=$3 round=$4 ticks=$5
    echo "$row $name $round $ticks $f" >>"$TMPD/runs"
    "$PY" - "$f" "$row" "$name" "$round" "$REPEAT" "$ticks" "$(getconf CLK_TCK)" <<'PYEOF'
import json, sys
f, row, name, rnd, rep, ticks, hz = sys.argv[1:]
j = json.load(open(f))
errs = ", ".join(f"{v} {k}" for k, v in j["errors"].items() if v)
if "hold" in j:
    h = j["hold"]
    line = f"{h['opened']} conns, {h['bytes_per_conn']} B/conn"
else:
    cpu = int(ticks) * 1e6 / int(hz) / max(j["requests"], 1)
    line = f"{j['requests_per_s']:.0f}/s, {cpu:.2f} us CPU each, p99 {j['latency_us']['p99'] / 1000:.2f} ms"
print(f"  round {rnd}/{rep} {row:<12} {name:<14} {line}" + (f"  (errors: {errs})" if errs else ""))
PYEOF
}

# wait_drained PORT: after a --hold, waits (up to 60 s) until the server has let go of the
# held connections, so that closing them does not fall into the next measurement.
wait_drained() {
    local _
    for _ in $(seq 1 600); do
        [ "$(ss -Htn "( sport = :$1 )" | grep -vc TIME-WAIT || true)" -eq 0 ] && return 0
        sleep 0.1
    done
    echo "  warning: connections to port $1 still open 60 s after the hold" >&2
}

# scheme_of NAME: http, https or ws.
scheme_of() {
    case $1 in
        node-ws | py-websockets | squall-ws | floor-ws) echo ws ;;
        *-tls) echo https ;;
        *) echo http ;;
    esac
}

# label_of NAME: the name a run is recorded under (squall-ws is squall, nginx-tls nginx).
label_of() {
    case $1 in
        squall-ws) echo squall ;;
        floor-ws) echo floor ;;
        *-tls) echo "${1%-tls}" ;;
        *) echo "$1" ;;
    esac
}

# path_of NAME: the path the load asks for.
path_of() {
    case $1 in
        squall-ws | floor-ws) echo /ws/echo ;;
        node-ws | py-websockets) echo / ;;
        *) echo /plaintext ;;
    esac
}

# settle NAME ROUND PORT: on a freshly started NAME, the idle row (--hold; not over TLS, not
# for the floor, which keeps no state worth comparing), then a warm-up of 1 s.
settle() {
    local name=$1 round=$2 port=$3 scheme label path
    scheme=$(scheme_of "$name"); label=$(label_of "$name"); path=$(path_of "$name")
    if [ "$scheme" = https ]; then
        load_wrk "$label" warmup 0 "https://127.0.0.1:$port$path" 1s 50
        return 0
    fi
    if [ "$label" != floor ]; then
        load "$label" "idle-$scheme" "$round" "$scheme://127.0.0.1:$port$path" 1s \
            --hold "$HOLD_N" --pid "$SRV_PID_MEM" --timeout 30s
        wait_drained "$port"
    fi
    load "$label" warmup 0 "$scheme://127.0.0.1:$port$path" 1s -c 50
}

# measure NAME ROW ROUND PORT: one row against the running NAME.
measure() {
    local name=$1 row=$2 round=$3 port=$4 c p s scheme label path
    scheme=$(scheme_of "$name"); label=$(label_of "$name"); path=$(path_of "$name")
    case $row in
        tls-c*)
            load_wrk "$label" "$row" "$round" "https://127.0.0.1:$port$path" "$DURATION" \
                "${row##*-c}" ;;
        ws-*)
            c=${row#ws-c}; c=${c%%-*}; s=32
            case $row in *-16K) s=16384 ;; esac
            load "$label" "$row" "$round" "ws://127.0.0.1:$port$path" "$DURATION" -c "$c" \
                --size "$s" ;;
        paced-*)
            load "$label" "$row" "$round" "http://127.0.0.1:$port$path" "$DURATION" -c 256 \
                --rate 40000 ;;
        *)
            c=${row##*-c}; p=1
            case $row in pipe16-*) p=16 ;; esac
            load "$label" "$row" "$round" "http://127.0.0.1:$port$path" "$DURATION" -c "$c" \
                --pipeline "$p" ;;
    esac
}

# rotate N WORDS...: the words, starting at the (N mod count)-th.
rotate() {
    local n=$1 i
    shift
    local a=("$@")
    for ((i = 0; i < ${#a[@]}; i++)); do printf '%s ' "${a[$(((i + n) % ${#a[@]}))]}"; done
}

mkdir -p "$OUT"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "bench-peers: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' \
        '/^model name/ { print $2; exit }' /proc/cpuinfo)), load average $load0"
    echo "  server on CPU $SERVER_CPU, squall-bench on CPU $LOAD_CPU${NICE:+, nice $NICE};" \
        "$DURATION per cell, $REPEAT round(s), servers in rotating order, row by row;" \
        "idle rows: $HOLD_N connections"
    echo "  HTTP: ${HTTP_SERVERS:-none}; WebSocket: ${WS_SERVERS/squall/squall(/ws/echo)};" \
        "TLS (wrk): ${TLS_SERVERS:-none}"
    for s in "${skipped[@]}"; do echo "  left out: $s"; done
} | tee "$OUT/header.txt"
if awk -v l="${load0%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    echo "  warning: load average ${load0%% *} before the run: other work shares the CPUs," \
        "rates will be noisy (CPU per request less so)" | tee -a "$OUT/header.txt"
fi

: >"$TMPD/runs"
# Each round starts every server of a suite afresh, all at once on their own ports (pinned
# to SERVER_CPU; an idle server costs nothing), settles each in turn, then measures row by
# row, each row on every server one after the other (the order rotating from round to
# round). A row's runs are then a minute apart at most, so the ratio of one round compares
# the servers on the same state of a shared machine; the report takes the median of the
# rounds' ratios.
for round in $(seq 1 "$REPEAT"); do
    for suite in http ws tls; do
        case $suite in
            http) names=$HTTP_SERVERS rows=$HTTP_ROWS ;;
            ws) names=${WS_SERVERS/squall/squall-ws} rows=$WS_ROWS ;;
            tls) names=$TLS_SERVERS rows=tls-c50 ;;
        esac
        [ -z "$names" ] && continue
        # shellcheck disable=SC2086
        names=$(rotate "$((round - 1))" $names)
        for name in $names; do
            port=$(free_port)
            srv=$name
            [ "$name" = squall-ws ] && srv=squall
            start_server "$srv" "$port"
            PORT_OF[$name]=$port PID_OF[$name]=$SRV_PID CPU_PIDS_OF[$name]=$SRV_CPU_PIDS
            MEM_PID_OF[$name]=$SRV_PID_MEM
            START_PID=""
            settle "$name" "$round" "$port"
        done
        for row in $rows; do
            for name in $names; do
                use_server "$name"
                measure "$name" "$row" "$round" "${PORT_OF[$name]}"
            done
        done
        stop_servers
    done
done
echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/header.txt"
echo

"$PY" "$root/scripts/bench-peers-report.py" --runs "$TMPD/runs" --out "$OUT" \
    --hz "$(getconf CLK_TCK)" --header "$OUT/header.txt" ${QUICK:+--quick} $CHECK
