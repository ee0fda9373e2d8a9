#!/usr/bin/env bash
# bench-static.sh — one file downloaded with curl to /dev/null from hello --static and from
# nginx (sendfile on, one worker) serving the same folder: MB/s of each, best and median
# of RUNS downloads taken in turn, and the ratio. Loopback only; each server alone on the
# machine while it is measured.
#
#   bash scripts/bench-static.sh              100 MiB, 7 runs each
#   SIZE_MIB=1024 RUNS=3 bash scripts/bench-static.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
SIZE_MIB=${SIZE_MIB:-100}
RUNS=${RUNS:-7}
TMPD=$(mktemp -d /tmp/squall-bench-static.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do stop_pid "$p"; done
    rm -rf "$TMPD"
}
trap cleanup EXIT
# shellcheck source=scripts/peers-lib.sh
. "$here/scripts/peers-lib.sh"

command -v nginx >/dev/null || { echo "bench-static: no nginx (nginx-light)" >&2; exit 1; }
mkdir -p "$TMPD/www"
head -c "${SIZE_MIB}M" /dev/urandom >"$TMPD/www/file.bin"
echo ok >"$TMPD/www/ok.txt"
chmod 755 "$TMPD" "$TMPD/www" # nginx's worker runs as another user
cat "$TMPD/www/file.bin" >/dev/null # in the page cache for both

# MB/s of one download (curl's average speed, bytes per second / 1e6)
speed() {
    curl -s --http1.1 -o /dev/null -w '%{speed_download}' "$1" |
        awk '{ printf "%.0f\n", $1 / 1e6 }'
}

# best and median of RUNS downloads of URL
measure() {
    local i out=()
    for i in $(seq 1 "$RUNS"); do out+=("$(speed "$1")"); done
    printf '%s\n' "${out[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[NR], a[int((NR + 1) / 2)] }'
}

port=$(free_port)
"$here/$BUILD/bin/hello" --port "$port" --static "$TMPD/www" >/dev/null 2>"$TMPD/hello.err" &
pids+=($!)
wait_http "http://127.0.0.1:$port/static/ok.txt" "${pids[-1]}"
read -r sq_best sq_med < <(measure "http://127.0.0.1:$port/static/file.bin")
stop_pid "${pids[-1]}"

nport=$(free_port)
nginx_conf "$nport" 1024 60
# the static location, with nginx's zero-copy path on (it is off by default)
sed -i "s|location = /plaintext|sendfile on; location /static/ { alias $TMPD/www/; }\n        location = /plaintext|" \
    "$TMPD/nginx/nginx.conf"
$(nginx_cmd) &
pids+=($!)
wait_http "http://127.0.0.1:$nport/static/ok.txt" "${pids[-1]}"
read -r ng_best ng_med < <(measure "http://127.0.0.1:$nport/static/file.bin")

printf 'file %d MiB, %d downloads each (curl to /dev/null, MB/s best / median)\n' "$SIZE_MIB" "$RUNS"
printf 'squall  %6d / %6d\n' "$sq_best" "$sq_med"
printf 'nginx   %6d / %6d\n' "$ng_best" "$ng_med"
awk -v a="$sq_med" -v b="$ng_med" 'BEGIN { printf "ratio (median) squall/nginx %.2f\n", a / b }'
