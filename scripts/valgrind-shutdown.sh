#!/usr/bin/env bash
# hello under valgrind, shut down with SIGTERM while it holds open keep-alive connections,
# open WebSockets (Python websockets) and a blocking request in flight: the process must
# exit 0 and valgrind must report no error and no leak.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s all >/dev/null
PY=/usr/bin/python3
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
trap 'rm -f "$log"; kill $vpid 2>/dev/null || true' EXIT
valgrind --quiet --error-exitcode=9 --leak-check=full --show-leak-kinds=all \
    --errors-for-leak-kinds=definite,indirect,possible --log-file="$log" \
    build/bin/hello --port "$port" --slow-callback-ms 0 >/dev/null &
vpid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# clients: hold connections open, then report what happened to them after the shutdown
timeout 60 $PY - "$port" <<'PY' &
import asyncio, http.client, sys, threading, websockets
port = int(sys.argv[1])
conns = []
for i in range(5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/plaintext"); assert c.getresponse().read() == b"Hello, world"
    conns.append(c)
slow = {}
def blocking():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/sleep?ms=1500"); r = c.getresponse(); slow["status"] = r.status; slow["body"] = r.read()
t = threading.Thread(target=blocking); t.start()
async def ws():
    socks = [await websockets.connect(f"ws://127.0.0.1:{port}/ws/echo") for _ in range(3)]
    for s in socks:
        await s.send("x"); assert await s.recv() == "x"
    print("ready", flush=True)
    codes = []
    for s in socks:
        try:
            await asyncio.wait_for(s.recv(), 30)
        except websockets.ConnectionClosed as e:
            codes.append(e.rcvd.code if e.rcvd else None)
    return codes
codes = asyncio.run(ws())
t.join()
assert codes == [1001, 1001, 1001], codes
assert slow.get("status") == 200 and slow["body"] == b'{"slept_ms":1500}', slow
print("clients ok: websockets closed with", codes, "and the blocking request finished")
PY
cpid=$!
sleep 3   # valgrind is slow: let the clients connect
kill -TERM $vpid
rc=0; wait $vpid || rc=$?
crc=0; wait $cpid || crc=$?
cat "$log"
if [ "$rc" -ne 0 ] || [ -s "$log" ] || [ "$crc" -ne 0 ]; then
    echo "valgrind-shutdown: FAILED (hello exit $rc, clients exit $crc)"
    exit 1
fi
echo "valgrind-shutdown: hello exited 0 with keep-alive, WebSocket and blocking work open; valgrind clean"
