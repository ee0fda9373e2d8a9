#!/usr/bin/env bash
# mem-idle.sh — what an idle keep-alive connection costs the server, squall next to nginx.
#
# For each server: start it (open-file limit raised to 20000 first), read its VmRSS, open N
# connections with build/bin/bench-idleconns (one `GET /plaintext` answered on each, then
# idle), check with ss that N are ESTABLISHED, read VmRSS again; bytes per connection =
# (after - before) / N. squall is build/bin/hello --idle-timeout 120000 (one process);
# for nginx (one worker, keepalive_timeout 120s) the figure is master + worker summed
# (the master's share does not move; the worker's delta is the whole of it).
# worker_connections leaves nginx 1/8 spare: below 1/16 free it starts closing idle
# keep-alive connections to make room.
#
#   scripts/mem-idle.sh            # N=10000
#   N=2000 scripts/mem-idle.sh
set -euo pipefail

N=${N:-10000}
NOFILE=${NOFILE:-20000}
case $N in
    '' | *[!0-9]* | 0) echo "N must be a positive integer" >&2; exit 2 ;;
esac
if [ "$N" -gt $((NOFILE - 200)) ]; then
    echo "N=$N does not fit under the open-file limit ($NOFILE)" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/peers-lib.sh
. "$root/scripts/peers-lib.sh"

make --no-print-directory -s -C "$root" all
for tool in nginx curl ss pgrep; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/deps.sh" >&2; exit 1; }
done
client=$root/build/bin/bench-idleconns

TMPD=$(mktemp -d /tmp/squall-memidle.XXXXXX)
SRV_PID=""
SRV_EXTRA=""
CLI_PID=""
cleanup() {
    trap - EXIT INT TERM
    [ -n "$CLI_PID" ] && stop_pid "$CLI_PID"
    [ -n "$SRV_PID" ] && stop_pid "$SRV_PID"
    for p in $SRV_EXTRA; do stop_pid "$p"; done
    exec 3<&- 2>/dev/null || true
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# measure NAME PORT: the server is running as SRV_PID (+ SRV_EXTRA); prints one result line
# "NAME before_kib after_kib established bytes_per_conn" to $TMPD/results.
measure() {
    local name=$1 port=$2 pids before after est line
    pids="$SRV_PID $SRV_EXTRA"
    # One request first, so lazily built state (date cache, first buffers) is in "before".
    curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$port/plaintext"
    sleep 0.5
    # shellcheck disable=SC2086
    before=$(rss_kib $pids)
    rm -f "$TMPD/client.fifo"
    mkfifo "$TMPD/client.fifo"
    "$client" -p "$port" -n "$N" -T 120 -H 300 >"$TMPD/client.fifo" 2>"$TMPD/client.err" &
    CLI_PID=$!
    exec 3<"$TMPD/client.fifo"
    if ! read -r -t 150 line <&3 || [ "${line%% *}" != ready ]; then
        echo "$name: the client could not open $N connections:" >&2
        cat "$TMPD/client.err" >&2
        exit 1
    fi
    sleep 1
    # shellcheck disable=SC2086
    after=$(rss_kib $pids)
    est=$(ss -Htn state established "( sport = :$port )" | wc -l)
    stop_pid "$CLI_PID"
    CLI_PID=""
    read -r line <&3 || line="closed ?"
    exec 3<&-
    if [ "$est" -ne "$N" ]; then
        echo "$name: $est connections ESTABLISHED, expected $N" >&2
        exit 1
    fi
    if [ "$line" != "closed 0" ]; then
        echo "$name: the server closed connections while they were idle ($line)" >&2
        exit 1
    fi
    echo "$name $before $after $est $(((after - before) * 1024 / N))" >>"$TMPD/results"
}

# --- squall ---------------------------------------------------------------------------
port=$(free_port)
(
    ulimit -n "$NOFILE"
    exec "$root/build/bin/hello" --host 127.0.0.1 --port "$port" --idle-timeout 120000
) >"$TMPD/hello.log" 2>&1 &
SRV_PID=$!
wait_http "http://127.0.0.1:$port/plaintext" "$SRV_PID"
measure squall "$port"
stop_pid "$SRV_PID"
SRV_PID=""

# --- nginx ----------------------------------------------------------------------------
port=$(free_port)
nginx_conf "$port" $((N + N / 8 + 100)) 120s
(
    ulimit -n "$NOFILE"
    # shellcheck disable=SC2046
    exec $(nginx_cmd)
) >"$TMPD/nginx.log" 2>&1 &
SRV_PID=$!
wait_http "http://127.0.0.1:$port/plaintext" "$SRV_PID"
SRV_EXTRA=$(pgrep -P "$SRV_PID" | tr '\n' ' ')
measure nginx "$port"
stop_pid "$SRV_PID"
for p in $SRV_EXTRA; do stop_pid "$p"; done
SRV_PID=""
SRV_EXTRA=""

# nginx allocates and touches its connection and event structs for all worker_connections
# at start, so they sit in "before". Their size per slot: the same start-up RSS with 1024.
port=$(free_port)
nginx_conf "$port" 1024 120s
(
    ulimit -n "$NOFILE"
    # shellcheck disable=SC2046
    exec $(nginx_cmd)
) >"$TMPD/nginx.log" 2>&1 &
SRV_PID=$!
wait_http "http://127.0.0.1:$port/plaintext" "$SRV_PID"
SRV_EXTRA=$(pgrep -P "$SRV_PID" | tr '\n' ' ')
sleep 0.5
# shellcheck disable=SC2086
small=$(rss_kib $SRV_PID $SRV_EXTRA)
stop_pid "$SRV_PID"
for p in $SRV_EXTRA; do stop_pid "$p"; done
SRV_PID=""
SRV_EXTRA=""
ngx_before=$(awk '$1 == "nginx" { print $2 }' "$TMPD/results")
slots=$((N + N / 8 + 100 - 1024))
prealloc=$(((ngx_before - small) * 1024 / (slots > 0 ? slots : 1)))

# --- report ---------------------------------------------------------------------------
echo "mem-idle: $N idle keep-alive connections, one GET /plaintext answered on each"
echo "  squall: build/bin/hello --idle-timeout 120000 (whole process)"
echo "  nginx:  $(nginx -v 2>&1 | sed 's/^nginx version: //'), 1 worker, keepalive_timeout 120s," \
    "worker_connections $((N + N / 8 + 100)) (master + worker)"
echo
printf '%-7s %12s %12s %12s %12s\n' server "RSS before" "RSS after" established "bytes/conn"
while read -r name before after est per; do
    printf '%-7s %8s KiB %8s KiB %12s %12s\n' "$name" "$before" "$after" "$est" "$per"
done <"$TMPD/results"
awk '{ v[$1] = $5 } END {
    if (v["nginx"] > 0) printf "\nsquall/nginx bytes per idle connection: %.2fx\n", v["squall"] / v["nginx"] }' \
    "$TMPD/results"
if [ "$slots" -ge 1000 ]; then
    echo "nginx also preallocates about $prealloc bytes per worker_connections slot at start" \
        "(in \"RSS before\"; start-up RSS with 1024 slots: $small KiB)"
fi
