#!/usr/bin/env bash
# Many idle connections at once, past one process's descriptor limit: hello with
# --processes P on one port (SO_REUSEPORT), and G squall-bench --hold processes each
# holding N/G connections (from 127.0.0.1, .2, ... as ports run out). Prints the servers'
# RSS before and after (the sum over hello's copies), the bytes per connection, and the
# time until every connection was open. Loopback only; bounded by --hold-for.
#   scripts/hold-many.sh                       100,000 idle WebSockets, 6 + 6 processes
#   scripts/hold-many.sh --n 100000 --path /plaintext   idle HTTP keep-alive instead
#   scripts/hold-many.sh --json FILE           the figures as JSON too
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/build/bin}
N=100000 P=6 G=6 PATH_=/ws/echo HOLD=3 JSON=
while [ $# -gt 0 ]; do
    case $1 in
    --n) N=$2; shift 2 ;;
    --processes) P=$2; shift 2 ;;
    --generators) G=$2; shift 2 ;;
    --path) PATH_=$2; shift 2 ;;
    --hold-for) HOLD=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "hold-many: unknown option '$1'" >&2; exit 2 ;;
    esac
done
for b in hello squall-bench; do
    [ -x "$BIN/$b" ] || { echo "hold-many: $BIN/$b is not built (make build-all)" >&2; exit 1; }
done
per_server=$(( (N + P - 1) / P ))
per_gen=$(( (N + G - 1) / G ))
lim=$(ulimit -Hn)
if [ "$per_server" -gt $((lim - 100)) ] || [ "$per_gen" -gt $((lim - 100)) ]; then
    echo "hold-many: $per_server connections per server or $per_gen per generator pass the" \
         "descriptor limit $lim: use more --processes / --generators" >&2
    exit 1
fi
ulimit -n "$lim"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
scheme=http; case $PATH_ in /ws*) scheme=ws ;; esac
tmp=$(mktemp -d)
cleanup() {
    if [ -n "${hp:-}" ]; then kill -TERM "$hp" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$BIN/hello" --processes "$P" --port "$port" --idle-timeout 0 \
    --max-connections $((lim - 200)) --log-level warn >"$tmp/hello.out" 2>&1 &
hp=$!
for _ in $(seq 100); do grep -q serving "$tmp/hello.out" 2>/dev/null && break; sleep 0.1; done
grep -q serving "$tmp/hello.out" || { echo "hold-many: hello did not start:" >&2; cat "$tmp/hello.out" >&2; exit 1; }
rss_sum() { # kB over hello's copies
    local s=0 c
    # shellcheck disable=SC2013
    for c in $(cat /proc/"$hp"/task/"$hp"/children); do
        s=$((s + $(awk '/^VmRSS/ {print $2}' /proc/"$c"/status)))
    done
    echo $s
}
before=$(rss_sum)
D=$((HOLD + 10)) # each generator holds for D seconds once all its connections are open
gens=
for g in $(seq "$G"); do
    "$BIN/squall-bench" "$scheme://127.0.0.1:$port$PATH_" --hold "$per_gen" -d "${D}s" \
        --timeout 30s >"$tmp/gen$g.out" 2>"$tmp/gen$g.err" &
    gens="$gens $!"
done
# each generator says on stderr when all of its connections are open (or failed)
for _ in $(seq 1800); do
    [ "$(cat "$tmp"/gen*.err | grep -c ", holding")" -ge "$G" ] && break
    sleep 0.1
done
sleep "$HOLD"
after=$(rss_sum)
# The servers close first, so that the TIME_WAIT states stay on their port and not on
# the generators' source ports, which other programs on this machine may need next
kill -TERM "$hp"
wait "$hp" 2>/dev/null || true
hp=
# shellcheck disable=SC2086
wait $gens 2>/dev/null || true
held=$(grep -ho "[0-9]* of [0-9]* open in" "$tmp"/gen*.err | awk '{s += $1} END {print s + 0}')
failed=$(grep -ho "([0-9]* failed), holding" "$tmp"/gen*.err | tr -d '(' | awk '{s += $1} END {print s + 0}')
secs=$(grep -ho "open in [0-9.]* s" "$tmp"/gen*.err | awk '{if ($3 > m) m = $3} END {print m + 0}')
per=$(( held > 0 ? (after - before) * 1024 / held : 0 ))
if [ "$failed" -gt 0 ]; then
    echo "hold-many: the generators' errors:" >&2
    grep -h -i "error\|connect\|timeout" "$tmp"/gen*.out | head -5 >&2
fi
echo "hold-many: $held of $((per_gen * G)) $scheme connections open ($failed failed) in $secs s" \
     "(the slowest of $G generators), held by $P server processes"
echo "hold-many: servers' RSS $before kB -> $after kB: $per bytes per connection"
if [ -n "$JSON" ]; then
    printf '{"connections":%d,"wanted":%d,"failed":%d,"open_s":%s,"processes":%d,"rss_before_kb":%d,"rss_after_kb":%d,"bytes_per_conn":%d,"path":"%s"}\n' \
        "$held" "$N" "$failed" "$secs" "$P" "$before" "$after" "$per" "$PATH_" >"$JSON"
fi
[ "$held" -ge "$N" ] && [ "$failed" -eq 0 ]
