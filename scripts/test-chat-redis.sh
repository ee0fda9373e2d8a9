#!/usr/bin/env bash
# test-chat-redis.sh — two chat servers on one Redis: what a user of two machines sees.
#
# Starts a redis-server of its own (a free loopback port, a temporary folder, an
# append-only file synced at each write), two `build/bin/chat --redis redis://127.0.0.1:P`
# (A and B), and a WebSocket subscriber of room "lobby" on A (Python's websockets:
# tests/peers/chat_ws_sub.py). Then:
#   1. POSTs to B, A, B get ids 1, 2, 3; the subscriber on A gets the three, in order;
#   2. Redis killed (SIGKILL): a POST to either answers 503; both servers stay up and the
#      subscriber stays connected;
#   3. Redis restarted on the same port and folder: both recover (ids 4, 5 follow the
#      three from before), the subscriber gets them, and a poll on B returns all five.
# Exits non-zero on any failure, within 60 s.
#
#   bash scripts/test-chat-redis.sh [BUILD_DIR]     (default: build)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
chat=$build/bin/chat
[ -x "$chat" ] || { echo "test-chat-redis: FAIL: no $chat (make first)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "test-chat-redis: FAIL: no redis-server" >&2; exit 1; }

tmp=$(mktemp -d /tmp/squall-chat-redis.XXXXXX)
redis_pid="" a_pid="" b_pid="" sub_pid="" watchdog="" a_url="" b_url=""
cleanup() {
    trap - EXIT INT TERM
    for p in $sub_pid $a_pid $b_pid $redis_pid; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$watchdog" ]; then kill "$watchdog" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "test-chat-redis: FAIL: $*" >&2
    for f in a.err b.err sub.out redis.log; do
        if [ -s "$tmp/$f" ]; then
            echo "--- $f" >&2
            tail -n 15 "$tmp/$f" >&2
        fi
    done
    exit 1
}

# The whole run is bounded: past 60 s the script is ended (and cleans up).
(
    for _ in $(seq 1 600); do sleep 0.1; done
    echo "test-chat-redis: FAIL: took more than 60 s" >&2
    kill -TERM $$
) &
watchdog=$!

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds.
wait_for() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.1
    done
}

port=$(free_port)
redis_start() {
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes \
        --appendfsync always --dir "$tmp" --daemonize no --protected-mode no \
        >>"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    wait_for 10 redis_ping || fail "redis-server did not answer PING on port $port"
}
redis_ping() {
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]
}
redis_kill() {
    kill -KILL "$redis_pid"
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
}

# chat_start NAME: starts a chat server on a port of its own; sets NAME_pid, NAME_url.
chat_start() {
    local name=$1 pid url _
    "$chat" --host 127.0.0.1 --port 0 --workers 1 --redis "redis://127.0.0.1:$port" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    for _ in $(seq 1 100); do
        [ -s "$tmp/$name.out" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    url=$(head -n1 "$tmp/$name.out" | sed -n 's|^chat: serving on \(http://[^ ]*\) with .*|\1|p')
    [ -n "$url" ] || fail "chat $name printed no 'chat: serving on URL' line"
    url=${url%/}
    printf -v "${name}_pid" '%s' "$pid"
    printf -v "${name}_url" '%s' "$url"
}

# post URL TEXT: POSTs a message to lobby; prints "STATUS BODY".
post() {
    local code
    code=$(curl -s -o "$tmp/post.body" -w '%{http_code}' --max-time 10 -X POST \
        -H 'Content-Type: application/json' --data "{\"text\": \"$2\"}" \
        "$1/rooms/lobby/messages") || code=000
    echo "$code $(cat "$tmp/post.body" 2>/dev/null)"
}

# post_id URL TEXT WANT_ID: the POST must answer 201 {"id": WANT_ID}.
post_id() {
    local got
    got=$(post "$1" "$2")
    [ "${got%% *}" = 201 ] || fail "POST $2 to $1 answered '$got', want 201"
    /usr/bin/python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1])["id"] != int(sys.argv[2]))' \
        "${got#* }" "$3" || fail "POST $2 to $1 answered '$got', want id $3"
}

alive() {
    kill -0 "$a_pid" 2>/dev/null || fail "chat A exited"
    kill -0 "$b_pid" 2>/dev/null || fail "chat B exited"
}

# sub_has N: the subscriber printed N messages.
sub_has() {
    [ "$(grep -c '^{' "$tmp/sub.out" 2>/dev/null || true)" -ge "$1" ]
}

# sub_check N: its messages are ids 1..N, in order, once each, with the texts sent.
sub_check() {
    /usr/bin/python3 - "$tmp/sub.out" "$1" <<'EOF' || fail "the subscriber's messages are wrong"
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
n = int(sys.argv[2])
ids = [m["id"] for m in msgs]
if ids != list(range(1, n + 1)):
    sys.exit(f"ids {ids}, want 1..{n}")
for m in msgs:
    if m["room"] != "lobby" or m["text"] != f"hello {m['id']}":
        sys.exit(f"message {m}")
EOF
}

# ---- 1. two servers, one room ----
redis_start
chat_start a
chat_start b
echo "test-chat-redis: redis on $port, A $a_url, B $b_url"
/usr/bin/python3 "$root/tests/peers/chat_ws_sub.py" "$a_url" lobby 55 >"$tmp/sub.out" 2>&1 &
sub_pid=$!
wait_for 10 grep -q '^connected' "$tmp/sub.out" || fail "the subscriber did not connect to A"
post_id "$b_url" "hello 1" 1
post_id "$a_url" "hello 2" 2
post_id "$b_url" "hello 3" 3
wait_for 10 sub_has 3 || fail "the subscriber on A did not get the three messages"
sub_check 3
echo "test-chat-redis: POSTs on B, A, B got ids 1, 2, 3; the subscriber on A got them"

# ---- 2. Redis away ----
redis_kill
for url in "$a_url" "$b_url"; do
    got=$(post "$url" "lost")
    [ "${got%% *}" = 503 ] || fail "with Redis away, POST to $url answered '$got', want 503"
done
alive
! grep -q '^closed' "$tmp/sub.out" || fail "the subscriber was closed while Redis was away"
echo "test-chat-redis: Redis killed: POSTs answer 503, both servers up, the subscriber stays"

# ---- 3. Redis back ----
redis_start
# Each server reconnects within its reconnect period: POST until one is accepted.
b_back() { [ "$(post "$b_url" "hello 4" | cut -d' ' -f1)" = 201 ]; }
wait_for 15 b_back || fail "B did not recover after Redis came back"
post_id "$a_url" "hello 5" 5
wait_for 10 sub_has 5 || fail "the subscriber on A did not get the messages after the restart"
sub_check 5
! grep -q '^closed' "$tmp/sub.out" || fail "the subscriber was closed"
poll=$(curl -s --max-time 10 "$b_url/rooms/lobby/messages?since=0") || fail "GET on B"
/usr/bin/python3 -c '
import json, sys
m = json.loads(sys.argv[1])
sys.exit([x["id"] for x in m] != [1, 2, 3, 4, 5])' "$poll" || fail "a poll on B answered '$poll'"
alive
echo "test-chat-redis: Redis back: ids 4, 5 on B and A, the subscriber got them, a poll on B has 1..5"

# ---- 4. Redis back without its data: the room starts again ----
redis_kill
rm -rf "$tmp/appendonlydir" "$tmp/dump.rdb"
redis_start
b_again() { [ "$(post "$b_url" "again 1" | cut -d' ' -f1)" = 201 ]; }
wait_for 15 b_again || fail "B did not recover after Redis came back empty"
# A finds the stream's last id below its cursor when its connection is back: its
# WebSocket subscriber is closed with 1012, reconnects with since=5, and gets the room
# as it is now (since above the last id: the whole history).
wait_for 15 grep -q '^closed 1012' "$tmp/sub.out" ||
    fail "A's subscriber was not told the room started again (close 1012)"
restarted() {
    /usr/bin/python3 - "$tmp/sub.out" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().split("\n")
after = lines[next(i for i, l in enumerate(lines) if l.startswith("closed 1012")):]
msgs = [json.loads(l) for l in after if l.startswith("{")]
sys.exit(not (msgs and msgs[0]["id"] == 1 and msgs[0]["text"] == "again 1"))
EOF
}
wait_for 10 restarted || fail "after the restart the subscriber did not get the new message 1"
alive
echo "test-chat-redis: Redis back empty: B's POST got id 1, A's subscriber was closed with 1012 and got it after reconnecting"

# Both servers stop cleanly.
for p in "$a_pid" "$b_pid"; do
    kill -INT "$p"
    rc=0
    wait "$p" || rc=$?
    [ "$rc" = 0 ] || fail "a chat server exited with $rc after SIGINT"
done
a_pid="" b_pid=""
echo "test-chat-redis: OK"
