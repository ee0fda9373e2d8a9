#!/usr/bin/env bash
# styles-bench.sh — the lecture's "load one page 500 times" job in every style of
# build/bin/fetch, next to the lecture's own Python (bench/py/*.py, run with Debian's
# /usr/bin/python3, python3-aiohttp and python3-requests), against build/bin/hello's `/`.
#
# hello is pinned to CPU 1 and the clients to CPU 0 (taskset). Each row is run REPEAT
# times; the table gives the median of the job's own seconds (fetch's `seconds=`, the
# Python's `spend ... seconds`, both without the program's start-up), requests per second
# from it, the peak RSS of the largest process of the client (GNU time's %M: for the
# process styles, that of one process, not their sum) and the threads or processes the
# client uses. Every run must succeed (ok=N, or N results printed) or the script fails.
#
#   scripts/styles-bench.sh            # the table (about half a minute)
#   scripts/styles-bench.sh --nginx    # only: every fetch style's job against nginx's
#                                      # `return 200;` succeeds
#   scripts/styles-bench.sh --check-docs   # only: docs/styles.md's excerpts of
#                                      # app/fetch.c and their line counts are current
#
# Env: N (500), C (100), REPEAT (3), SERVER_CPU (1), CLIENT_CPU (0).
set -euo pipefail

N=${N:-500}
C=${C:-100}
REPEAT=${REPEAT:-3}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PY=/usr/bin/python3
STYLES="callbacks hell promises fsm queue threads processes"

mode=table
case ${1:-} in
    '') ;;
    --nginx) mode=nginx ;;
    --check-docs) mode=docs ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "styles-bench.sh: unknown option '$1' (--nginx, --check-docs, --help)" >&2; exit 2 ;;
esac
case $REPEAT in
    '' | *[!0-9]* | 0) echo "styles-bench.sh: REPEAT must be a positive integer" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/peers-lib.sh
. "$root/scripts/peers-lib.sh"

# excerpt NAME: app/fetch.c between its /* NAME:begin */ and /* NAME:end */ lines.
excerpt() {
    awk -v b="/* $1:begin */" -v e="/* $1:end */" '$0 == e { f = 0 } f { print } $0 == b { f = 1 }' \
        "$root/app/fetch.c"
}
# doc_excerpt NAME: the code block after docs/styles.md's `<!-- excerpt NAME -->`.
doc_excerpt() {
    awk -v m="<!-- excerpt $1 -->" '$0 == m { s = 1; next }
        s == 1 && $0 == "```c" { s = 2; next } s == 2 && $0 == "```" { exit } s == 2 { print }' \
        "$root/docs/styles.md"
}
# doc_count NAME: the "(N lines)" of the heading above that excerpt.
doc_count() {
    awk -v m="<!-- excerpt $1 -->" '/^### / { h = $0 } $0 == m { print h; exit }' "$root/docs/styles.md" |
        sed -n 's/.*(\([0-9]*\) lines)$/\1/p'
}
if [ "$mode" = docs ]; then
    bad=0
    for name in hell promises fsm; do
        if ! diff -u <(doc_excerpt "$name") <(excerpt "$name") >&2; then
            echo "styles-bench.sh: docs/styles.md's $name excerpt differs from app/fetch.c" >&2
            bad=1
        fi
        want=$(excerpt "$name" | wc -l)
        if [ "$(doc_count "$name")" != "$want" ]; then
            echo "styles-bench.sh: docs/styles.md says $(doc_count "$name") lines for $name, app/fetch.c has $want" >&2
            bad=1
        fi
    done
    [ "$bad" = 0 ] && echo "docs/styles.md: the hell, promises and fsm excerpts match app/fetch.c"
    exit "$bad"
fi

make --no-print-directory -s -C "$root" all
for tool in taskset curl ss pgrep /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "styles-bench.sh: missing $tool: run scripts/deps.sh" >&2; exit 1; }
done

TMPD=$(mktemp -d /tmp/squall-styles.XXXXXX)
SRV_PID=""
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$SRV_PID" ]; then
        workers=$(pgrep -P "$SRV_PID" || true)
        stop_pid "$SRV_PID"
        for w in $workers; do stop_pid "$w"; done
    fi
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fetch=$root/build/bin/fetch

# run_fetch STYLE URL: one run of the job; prints "SECONDS RSS_KIB"; fails unless ok=N.
run_fetch() {
    local out
    if ! taskset -c "$CLIENT_CPU" /usr/bin/time -f %M -o "$TMPD/rss" \
        "$fetch" --style "$1" -n "$N" -c "$C" "$2" >"$TMPD/out" 2>"$TMPD/err"; then
        echo "styles-bench.sh: fetch --style $1 failed: $(head -c 300 "$TMPD/err")" >&2
        return 1
    fi
    out=$(cat "$TMPD/out")
    case $out in
        *" ok=$N errors=0 "*) ;;
        *) echo "styles-bench.sh: fetch --style $1: $out" >&2; return 1 ;;
    esac
    echo "$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$out") $(tail -n 1 "$TMPD/rss")"
}

# run_py FILE URL: one run of a lecture program; prints "SECONDS RSS_KIB"; fails unless
# it printed N results.
run_py() {
    local lines
    if ! taskset -c "$CLIENT_CPU" /usr/bin/time -f %M -o "$TMPD/rss" \
        "$PY" "$root/bench/py/$1" "$2" "$N" >"$TMPD/out" 2>"$TMPD/err"; then
        echo "styles-bench.sh: $1 failed: $(tail -n 3 "$TMPD/err")" >&2
        return 1
    fi
    lines=$(wc -l <"$TMPD/out")
    [ "$lines" = "$N" ] || { echo "styles-bench.sh: $1 printed $lines results, not $N" >&2; return 1; }
    echo "$(sed -n 's/^spend \([0-9.]*\) seconds$/\1/p' "$TMPD/err") $(tail -n 1 "$TMPD/rss")"
}

# median FILE COLUMN
median() {
    sort -g -k"$2,$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}

if [ "$mode" = nginx ]; then
    command -v nginx >/dev/null || { echo "styles-bench.sh: missing nginx: run scripts/deps.sh" >&2; exit 1; }
    PORT=$(free_port)
    nginx_conf "$PORT" 1024 65s
    # the job's URL is `/`, answered with an empty 200
    sed -i 's|^\( *\)location = /plaintext.*|&\n\1location = / { return 200; }|' "$TMPD/nginx/nginx.conf"
    # shellcheck disable=SC2046
    taskset -c "$SERVER_CPU" $(nginx_cmd) >"$TMPD/nginx.log" 2>&1 &
    SRV_PID=$!
    wait_http "http://127.0.0.1:$PORT/" "$SRV_PID"
    for s in $STYLES; do
        r=$(run_fetch "$s" "http://127.0.0.1:$PORT/")
        printf '%-10s ok=%s against nginx (return 200): %s s\n' "$s" "$N" "${r%% *}"
    done
    exit 0
fi

PORT=$(free_port)
taskset -c "$SERVER_CPU" "$root/build/bin/hello" --host 127.0.0.1 --port "$PORT" --workers 1 \
    --slow-callback-ms 0 >"$TMPD/hello.log" 2>&1 &
SRV_PID=$!
URL="http://127.0.0.1:$PORT/"
wait_http "$URL" "$SRV_PID"

rows="$STYLES py-aiohttp py-threads py-processes"
for _ in $(seq 1 "$REPEAT"); do
    for row in $rows; do
        case $row in
            py-aiohttp) r=$(run_py aiohttp_load.py "$URL") ;;
            py-threads) r=$(run_py thread_load.py "$URL") ;;
            py-processes) r=$(run_py process_load.py "$URL") ;;
            *) r=$(run_fetch "$row" "$URL") ;;
        esac
        echo "$r" >>"$TMPD/$row.runs"
    done
done

label() {
    case $1 in
        callbacks) echo "fetch callbacks (sq_fetch)" ;;
        hell) echo "fetch hell (3 requests a job)" ;;
        promises) echo "fetch promises (3 requests a job)" ;;
        fsm) echo "fetch fsm (3 requests a job)" ;;
        queue) echo "fetch queue (sq_queue)" ;;
        threads) echo "fetch threads (blocking sockets)" ;;
        processes) echo "fetch processes (fork, pipe)" ;;
        py-aiohttp) echo "Python aiohttp ClientSession" ;;
        py-threads) echo "Python requests + ThreadPoolExecutor" ;;
        py-processes) echo "Python requests + ProcessPoolExecutor" ;;
    esac
}
used() {
    case $1 in
        threads) echo "$((C + 1)) threads" ;;
        processes) echo "$((C + 1)) processes" ;;
        py-aiohttp) echo "1 thread (+ resolver pool)" ;;
        py-threads) echo "up to 101 threads" ;;
        py-processes) echo "up to 101 processes" ;;
        *) echo "1 thread (+ libuv pool for DNS)" ;;
    esac
}
reqs() {
    case $1 in
        hell | promises | fsm) echo $((N * 3)) ;;
        *) echo "$N" ;;
    esac
}

echo "| style | requests | seconds (median of $REPEAT) | requests/s | peak RSS (MiB) | threads / processes |"
echo "|---|---:|---:|---:|---:|---|"
for row in $rows; do
    s=$(median "$TMPD/$row.runs" 1)
    rss=$(median "$TMPD/$row.runs" 2)
    awk -v l="$(label "$row")" -v n="$(reqs "$row")" -v s="$s" -v r="$rss" -v u="$(used "$row")" \
        'BEGIN { printf "| %s | %d | %.3f | %.0f | %.1f | %s |\n", l, n, s, (s > 0 ? n / s : 0), r / 1024, u }'
done
echo
echo "client on CPU $CLIENT_CPU, build/bin/hello (1 worker) on CPU $SERVER_CPU; $(nproc) CPUs," \
    "$($PY -c 'import aiohttp, requests, sys; print("Python %d.%d.%d, aiohttp %s, requests %s" % (sys.version_info[:3] + (aiohttp.__version__, requests.__version__)))')"
