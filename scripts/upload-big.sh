#!/usr/bin/env bash
# A large upload through hello's POST /upload (multipart, read as a stream) with
# --max-body 1 MiB: checks that the answer's sha256 and size match the file, and that the
# server's RSS stays near its idle value (sampled every 50 ms from /proc while the upload
# runs). Prints idle, peak and final RSS.
#   scripts/upload-big.sh            1 GiB
#   SIZE=256M scripts/upload-big.sh
# Needs build/bin/hello (make), curl, sha256sum, awk. Loopback only; bounded in time.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SQUALL_BIN:-$here/build/bin}
SIZE=${SIZE:-1G}
tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# random content, so a byte lost or moved changes the hash
head -c "$SIZE" /dev/urandom >"$tmp/file"
bytes=$(stat -c %s "$tmp/file")
want=$(sha256sum "$tmp/file" | cut -c1-64)

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/hello" --port "$port" --max-body 1048576 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q "serving on" "$tmp/out" 2>/dev/null && break; sleep 0.05; done
grep -q "serving on" "$tmp/out" || { echo "upload-big: hello did not start: $(cat "$tmp/err")" >&2; exit 1; }
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
curl -s -o /dev/null "http://127.0.0.1:$port/" # warm: one request served
idle=$(rss)

peak=$idle
curl -s --max-time 300 -F "note=big" -F "file=@$tmp/file;filename=big.bin" \
    "http://127.0.0.1:$port/upload" >"$tmp/answer" &
cpid=$!
start=$(date +%s.%N)
while kill -0 "$cpid" 2>/dev/null; do
    r=$(rss)
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.05
done
wait "$cpid" || { echo "upload-big: curl failed" >&2; exit 1; }
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
final=$(rss)

got=$(/usr/bin/python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["files"][0]; print(f["sha256"], f["size"])' "$tmp/answer")
echo "upload-big: $bytes bytes in ${secs}s; RSS idle ${idle} KiB, peak ${peak} KiB (+$((peak - idle)) KiB), final ${final} KiB"
[ "$got" = "$want $bytes" ] || { echo "upload-big: answer $got, want $want $bytes" >&2; exit 1; }
# "within a few MiB of idle"
[ $((peak - idle)) -le 8192 ] || { echo "upload-big: RSS grew by $((peak - idle)) KiB" >&2; exit 1; }
echo "upload-big: sha256 and size match; ok"
