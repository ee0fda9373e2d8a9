#!/usr/bin/env bash
# callgrind-peers.sh — user-space instructions per request, squall next to nginx.
#
# Seconds are noisy on a shared 2-CPU machine; instruction counts are not. Each server runs
# under `valgrind --tool=callgrind` (nginx with master_process off, so one process does all
# the work) while wrk sends plaintext requests (50 connections), then 16-deep pipelined
# ones; the server's total instruction count, start-up included, divided by the requests
# wrk completed gives instructions per request. Kernel time (syscalls) is not counted.
#
#   scripts/callgrind-peers.sh            DURATION=5s
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
DURATION=${DURATION:-5s}
TMPD=$(mktemp -d)
. "$root/scripts/peers-lib.sh"
pids=()
cleanup() { for p in "${pids[@]}"; do stop_pid "$p" 2>/dev/null || true; done; rm -rf "$TMPD"; }
trap cleanup EXIT
make -s all >/dev/null

cat > "$TMPD/pipeline.lua" <<'LUA'
init = function(args)
    local r = {}
    for i = 1, 16 do r[i] = wrk.format("GET", "/plaintext") end
    req = table.concat(r)
end
request = function() return req end
LUA

# measure NAME MODE CMD...: prints "NAME MODE requests instructions instr/request"
measure() {
    local name=$1 mode=$2; shift 2
    local port; port=$(free_port)
    local out="$TMPD/$name-$mode.cg"
    local cmd=("$@")
    cmd=("${cmd[@]//@PORT@/$port}")
    if [ "$name" = nginx ]; then nginx_conf "$port" 1024 120; fi
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}" \
        >"$TMPD/$name.log" 2>&1 &
    local pid=$!; pids+=("$pid")
    wait_http "http://127.0.0.1:$port/plaintext" "$pid"
    local args=(-t1 -c50 -d"$DURATION")
    [ "$mode" = pipelined16 ] && args+=(-s "$TMPD/pipeline.lua")
    local w; w=$(taskset -c 0 wrk "${args[@]}" "http://127.0.0.1:$port/plaintext")
    local n; n=$(awk '/requests in/ {print $1}' <<<"$w")
    [ "$mode" = pipelined16 ] && true
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    local ir; ir=$(awk '/^summary:/ {print $2}' "$out")
    awk -v name="$name" -v mode="$mode" -v n="$n" -v ir="$ir" \
        'BEGIN{printf "%-8s %-12s %10d %14d %10.0f\n", name, mode, n, ir, ir/n}'
}

printf '%-8s %-12s %10s %14s %10s\n' server load requests instructions "Ir/req"
for mode in plaintext pipelined16; do
    measure squall "$mode" build/bin/hello --port @PORT@ --idle-timeout 60000 --slow-callback-ms 0
    measure nginx "$mode" nginx -g "master_process off;" -p "$TMPD/nginx/" -c "$TMPD/nginx/nginx.conf" \
        -e "$TMPD/nginx/logs/error.log"
done
