#!/usr/bin/env bash
# WebSocket echo throughput: hello's /ws/echo next to a Node `ws` echo server, in one run.
# 50 connections, 32-byte messages, one in flight per connection (ping-pong), server pinned
# to CPU 1 and the load generator (build/bin/bench-wsecho) to CPU 0; each measurement
# repeated REPEAT times, alternating servers; medians and the ratio are printed, with the
# server CPU time per echoed message.
#
#   scripts/bench-ws.sh                 DURATION=10 REPEAT=3 CONNS=50 SIZE=32
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-50}
SIZE=${SIZE:-32}
DEPTH=${DEPTH:-1}
make -s all >/dev/null
bash scripts/deps.sh
NODE_PATH="$PWD/tests/peers/node_modules"
[ -d "$NODE_PATH/ws" ] || { echo "bench-ws: npm 'ws' missing in tests/peers (run scripts/deps.sh)"; exit 1; }
HZ=$(getconf CLK_TCK)
P1=18101 P2=18102
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

taskset -c 1 build/bin/hello --port $P1 --idle-timeout 60000 --slow-callback-ms 0 >/dev/null 2>&1 &
pids+=($!); squall_pid=$!
NODE_PATH="$NODE_PATH" taskset -c 1 node bench/ws-echo-node.js $P2 >/dev/null 2>&1 &
pids+=($!); node_pid=$!
for port in $P1 $P2; do
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A rates cpus
run() { # name pid url
    local before after out total rate
    before=$(cpu_ticks "$2")
    out=$(taskset -c 0 build/bin/bench-wsecho -c "$CONNS" -s "$SIZE" -d "$DEPTH" -t "$DURATION" "$3")
    after=$(cpu_ticks "$2")
    rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$out")
    total=$(sed -n 's/.*total=\([0-9]*\).*/\1/p' <<<"$out")
    local us
    us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$total" 'BEGIN{printf "%.2f", t/hz*1e6/n}')
    rates[$1]+="$rate "
    cpus[$1]+="$us "
    printf '  %-8s %10s msg/s  %6s us server CPU/msg\n' "$1" "$rate" "$us"
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "WebSocket echo: $CONNS connections, $SIZE-byte messages, depth $DEPTH, ${DURATION}s x $REPEAT"
for i in $(seq "$REPEAT"); do
    run squall $squall_pid "ws://127.0.0.1:$P1/ws/echo"
    run node-ws $node_pid "ws://127.0.0.1:$P2/"
done
s=$(median "${rates[squall]}"); n=$(median "${rates[node-ws]}")
sc=$(median "${cpus[squall]}"); nc=$(median "${cpus[node-ws]}")
echo
printf '%-10s %12s %16s\n' server "msg/s" "CPU us/msg"
printf '%-10s %12s %16s\n' squall "$s" "$sc"
printf '%-10s %12s %16s\n' node-ws "$n" "$nc"
awk -v s="$s" -v n="$n" -v sc="$sc" -v nc="$nc" \
    'BEGIN{printf "ratio squall/node-ws: %.2fx throughput, %.2fx CPU per message\n", s/n, sc/nc}'
