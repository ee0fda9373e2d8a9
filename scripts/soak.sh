#!/usr/bin/env bash
# soak.sh — hello under churn, slow and stuck clients, a full descriptor table, faults and a
# long mixed load, on loopback, bounded in time. Each phase prints its figures and its
# checks; a summary ends the run, and the exit status is 1 when a check failed.
#
#   scripts/soak.sh                    # the full run (the mixed load 10 minutes)
#   scripts/soak.sh --quick            # about a minute (CI)
#   scripts/soak.sh --minutes 30 --json soak.json
#
# Phases (docs/reliability.md, "Soak", says what each checks and quotes a full run):
#   1 churn   200,000 connections (20,000 with --quick) opened and closed by bench-soak,
#             half of them by a reset: no request, one answered request, headers half sent,
#             WebSocket upgrade left before or after the 101. Server fds back to their count
#             at the start, RSS within 10% of its value after a warm-up of 10,000, answers.
#   2 slow    slowloris on heads and on bodies (a byte a second), readers that never read
#             a 1.7 MB answer (8 pipelined), WebSocket clients that send and never read,
#             all at once, while a plain client asks every 0.5 s: 408s at the timeouts,
#             stuck connections closed, RSS bounded, the plain client answered.
#   3 fds     a second hello under `ulimit -n 256`: connections until one is not served;
#             its CPU over 5 s of new attempts while full (no spin); the held connections
#             still answered; 20 closed, then new ones served.
#   4 faults  half-closed clients get their answers; resets in a pipelined batch of large
#             answers while the server writes them, clients that leave while their
#             thread-pool job runs, resets while a large answer is being written: each
#             answer had begun before its reset; the server lives, its fds come back, it
#             answers.
#   5 mixed   squall-bench HTTP keep-alive and WebSocket echo on hello, and 16 long polls
#             on the chat (build/bin/chat, its hub in memory) with 50 messages/s posted, at
#             once, at a fixed rate, one run of each per minute (10 s with --quick): no
#             error; each run's p99 within 3 x the runs' median (load average printed
#             beside it); every message posted reaches every long poll once, in order;
#             hello's RSS after the last run within 10% of the first, its peak during a
#             run within 20% of the first run's; the chat's RSS within 10%.
#
# hello runs pinned to CPU 0 and the clients to CPU 1 (when there are two). Options:
#   --quick        the short version
#   --minutes N    minutes of mixed load (10; --quick: three runs of 10 s)
#   --rate R       requests (messages) per second of each mixed-load client (1000)
#   --json FILE    the figures as JSON
#   --bin DIR      where hello, chat, squall-bench and bench-soak are (build/bin, by make)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/peers-lib.sh disable=SC1091 # followed with shellcheck -x
. "$root/scripts/peers-lib.sh"

usage() {
    echo "usage: scripts/soak.sh [--quick] [--minutes N] [--rate R] [--json FILE] [--bin DIR]"
}

QUICK=0
MINUTES=""
RATE=1000
JSON=""
BIN=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --minutes) MINUTES=${2:-}; shift ;;
        --rate) RATE=${2:-}; shift ;;
        --json) JSON=${2:-}; shift ;;
        --bin) BIN=${2:-}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "soak.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for v in ${MINUTES:+"$MINUTES"} "$RATE"; do
    case $v in
        '' | *[!0-9]* | 0) echo "soak.sh: --minutes and --rate take a positive integer" >&2; exit 2 ;;
    esac
done
if [ -n "$JSON" ] && [ "${JSON:0:1}" != / ]; then
    JSON=$PWD/$JSON
fi

if [ -z "$BIN" ]; then
    make --no-print-directory -s -C "$root" build-all
    BIN=$root/build/bin
fi
hello=$BIN/hello
bench=$BIN/squall-bench
soak=$BIN/bench-soak
chat=$BIN/chat
for b in "$hello" "$bench" "$soak" "$chat"; do
    [ -x "$b" ] || { echo "soak.sh: $b is missing (make build-all)" >&2; exit 1; }
done
for tool in curl taskset /usr/bin/python3; do
    command -v "$tool" >/dev/null || { echo "soak.sh: missing $tool (scripts/deps.sh)" >&2; exit 1; }
done

# Sizes: the full run, or the quick one.
if [ "$QUICK" = 1 ]; then
    CHURN=20000 WARM=2000 SLOW=300 STUCK=20 STUCK_WS=8 HOLD=13 FAULTS=20 VANISH=12
    INTERVAL=10 RUNS=${MINUTES:-3} # three runs: with two, no run can pass 3 x their median
    [ -n "$MINUTES" ] && INTERVAL=60
else
    CHURN=200000 WARM=10000 SLOW=300 STUCK=50 STUCK_WS=20 HOLD=14 FAULTS=100 VANISH=30
    INTERVAL=60 RUNS=${MINUTES:-10}
fi
LP_CLIENTS=16 LP_RATE=50 # the long polls of the mixed load, and messages posted a second
HEAD_MS=2000 BODY_MS=3000 IDLE_MS=3000 # hello's timeouts for the run
# HOLD: how long the stuck clients stay. A WebSocket that never reads is closed once its
# queue passes max_queued_bytes (4 MiB), and dropped when no close frame answers within
# close_timeout_ms (5 s): a few seconds to fill the queue, then those 5 (10.6-10.7 s in
# all when measured), so the fd count taken a second before the end finds them gone.
FD_LIMIT=256
HZ=$(getconf CLK_TCK)

# hello on CPU 0, the clients on CPU 1, when the machine has two.
if [ "$(nproc)" -ge 2 ]; then
    SRV_CPU="taskset -c 0" CLI_CPU="taskset -c 1"
else
    SRV_CPU="" CLI_CPU=""
fi

TMPD=$(mktemp -d /tmp/squall-soak.XXXXXX)
MAIN_PID="" FD_PID="" CHAT_PID="" SAMPLER_PID="" BG_PIDS=""
cleanup() {
    trap - EXIT INT TERM
    local p
    for p in $BG_PIDS $SAMPLER_PID; do kill "$p" 2>/dev/null || true; done
    [ -n "$FD_PID" ] && stop_pid "$FD_PID"
    [ -n "$CHAT_PID" ] && stop_pid "$CHAT_PID"
    [ -n "$MAIN_PID" ] && stop_pid "$MAIN_PID"
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- figures and checks -------------------------------------------------------------

FAILED=0
: >"$TMPD/figures"
: >"$TMPD/checks"

# fig PHASE KEY VALUE: one figure for the summary and --json.
fig() {
    echo "$1 $2 $3" >>"$TMPD/figures"
}

# check PHASE NAME OK WHAT...: OK is 1 or 0; WHAT (one or more words) says what was
# measured.
check() {
    if [ "$3" = 1 ]; then
        printf '  ok    %-28s %s\n' "$2" "${*:4}"
        echo "$1 $2 ok" >>"$TMPD/checks"
    else
        printf '  FAIL  %-28s %s\n' "$2" "${*:4}"
        echo "$1 $2 FAIL" >>"$TMPD/checks"
        FAILED=$((FAILED + 1))
    fi
}

# kv LINE KEY: the value of KEY=value in a bench-soak line (0 when it is not there).
kv() {
    local v
    v=$(echo " $1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p")
    echo "${v:-0}"
}

# ran RC LINE KEY...: 1 when a client exited 0 (RC) and its line has every KEY, else 0 —
# so that a client that failed or printed nothing fails its checks instead of passing
# them as "0 of 0".
ran() {
    local k line=" $2"
    [ "$1" = 0 ] || { echo 0; return; }
    shift 2
    for k in "$@"; do
        case $line in *" $k="*) ;; *) echo 0; return ;; esac
    done
    echo 1
}

# all_of RAN N OF: 1 when RAN is 1, OF > 0 and N = OF, else 0.
all_of() {
    [ "$1" = 1 ] && [ "${3:-0}" -gt 0 ] && [ "$2" = "$3" ] && echo 1 || echo 0
}

# le A B: 1 when the number A <= B (decimals allowed), else 0.
le() {
    awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'
}

# nfds PID: the descriptors PID has open (0 once it is gone).
nfds() {
    { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l
}

# rss PID: VmRSS of PID in KiB (0 once it is gone).
rss() {
    rss_kib "$1" 2>/dev/null || echo 0
}

# wait_fds PID WANT SECONDS: waits until PID has at most WANT descriptors; prints the last
# count seen.
wait_fds() {
    local n _ end=$((SECONDS + $3))
    n=$(nfds "$1")
    while [ "$n" -gt "$2" ] && [ "$SECONDS" -lt "$end" ]; do
        sleep 0.2
        n=$(nfds "$1")
    done
    echo "$n"
}

# answers PORT [PATH]: 1 when a new connection gets 200 within 5 s, else 0.
answers() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        "http://127.0.0.1:$1${2:-/plaintext}" || true)
    [ "$code" = 200 ] && echo 1 || echo 0
}

# sampler_start PID: the peak VmRSS of PID, sampled every 0.2 s, into $TMPD/peak.
sampler_start() {
    rss "$1" >"$TMPD/peak"
    (
        max=$(cat "$TMPD/peak")
        while proc_alive "$1"; do
            r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0)
            if [ "${r:-0}" -gt "$max" ]; then
                max=$r
                echo "$max" >"$TMPD/peak"
            fi
            sleep 0.2
        done
    ) &
    SAMPLER_PID=$!
}
sampler_stop() {
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    cat "$TMPD/peak"
}

# ---- the server ---------------------------------------------------------------------

# start_hello NAME [ARGS...]: starts hello on a port of its choosing; sets HPID and HPORT.
start_hello() {
    local name=$1 _
    shift
    # shellcheck disable=SC2086
    $SRV_CPU "$hello" --host 127.0.0.1 --port 0 --slow-callback-ms 0 "$@" \
        >"$TMPD/$name.out" 2>"$TMPD/$name.err" &
    HPID=$!
    HPORT=""
    for _ in $(seq 1 100); do
        HPORT=$(sed -n 's|^hello: serving on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMPD/$name.out")
        [ -n "$HPORT" ] && return 0
        proc_alive "$HPID" || break
        sleep 0.1
    done
    echo "soak.sh: hello ($name) did not start:" >&2
    cat "$TMPD/$name.err" >&2
    exit 1
}

# The hello of phases 1, 2, 4 and 5, with short timeouts.
start_main() {
    start_hello main --header-timeout "$HEAD_MS" --body-timeout "$BODY_MS" \
        --idle-timeout "$IDLE_MS"
    MAIN_PID=$HPID MAIN_PORT=$HPORT
    curl -fs -o /dev/null --max-time 5 "http://127.0.0.1:$MAIN_PORT/plaintext"
    sleep 0.3
    MAIN_FDS=$(nfds "$MAIN_PID")
}

# main_alive PHASE: checks that the main hello lives; if it died, says how, and starts a
# new one so that the next phases still run.
main_alive() {
    if proc_alive "$MAIN_PID"; then
        check "$1" server_alive 1 "hello (pid $MAIN_PID) runs"
        return 0
    fi
    local st=0
    wait "$MAIN_PID" 2>/dev/null || st=$?
    local how="exited with status $st"
    [ "$st" -gt 128 ] && how="killed by signal $((st - 128))"
    check "$1" server_alive 0 "hello $how during this phase"
    tail -n 5 "$TMPD/main.err" | sed 's/^/        stderr: /'
    cp "$TMPD/main.err" "$TMPD/main.err.$1"
    start_main
    echo "  (a new hello for the next phases: port $MAIN_PORT)"
    return 1
}

cli() {
    # shellcheck disable=SC2086
    $CLI_CPU "$@"
}

start=$SECONDS
echo "soak: $([ "$QUICK" = 1 ] && echo quick || echo full) run; hello $hello"
echo "      timeouts: header ${HEAD_MS} ms, body ${BODY_MS} ms, idle ${IDLE_MS} ms;" \
    "${CLI_CPU:+hello on CPU 0, clients on CPU 1}"
start_main
echo "      hello pid $MAIN_PID, port $MAIN_PORT, $MAIN_FDS fds"

# ---- 1. churn ------------------------------------------------------------------------

echo
echo "== 1. churn: $CHURN connections opened and closed"
phase_start=$SECONDS
fds0=$MAIN_FDS
rc1=0 rc2=0
out=$(cli "$soak" churn -p "$MAIN_PORT" -n "$WARM") || rc1=$?
wait_fds "$MAIN_PID" "$fds0" 10 >/dev/null
rss_warm=$(rss "$MAIN_PID")
sampler_start "$MAIN_PID"
out2=$(cli "$soak" churn -p "$MAIN_PORT" -n $((CHURN - WARM))) || rc2=$?
peak=$(sampler_stop)
echo "  warm-up: $out"
echo "  rest:    $out2"
fds1=$(wait_fds "$MAIN_PID" "$fds0" 10)
rss_final=$(rss "$MAIN_PID")
errs=$(($(kv "$out" err_connect) + $(kv "$out" err_answer) + $(kv "$out2" err_connect) +
    $(kv "$out2" err_answer)))
fig churn connections "$CHURN"
fig churn seconds "$(awk -v a="$(kv "$out" seconds)" -v b="$(kv "$out2" seconds)" 'BEGIN { print a + b }')"
for k in none none_rst one one_rst half half_rst up_before up_after; do
    fig churn "$k" $(($(kv "$out" $k) + $(kv "$out2" $k)))
done
fig churn client_errors "$errs"
fig churn fds_before "$fds0"
fig churn fds_after "$fds1"
fig churn rss_after_warmup_kb "$rss_warm"
fig churn rss_peak_kb "$peak"
fig churn rss_final_kb "$rss_final"
if main_alive churn; then
    churn_ran=$(($(ran "$rc1" "$out" connections err_connect err_answer) *
        $(ran "$rc2" "$out2" connections err_connect err_answer)))
    check churn client_errors "$([ "$churn_ran" = 1 ] && [ "$errs" = 0 ] && echo 1 || echo 0)" \
        "$errs connections refused or not answered as expected (client status $rc1, $rc2)"
    check churn fds_back "$([ "$fds1" -le "$fds0" ] && echo 1 || echo 0)" \
        "$fds0 fds at the start, $fds1 after"
    check churn rss_flat "$(le "$rss_final" $((rss_warm * 11 / 10)))" \
        "RSS $rss_warm KiB after $WARM, $rss_final KiB after $CHURN (peak $peak KiB)"
    check churn answers "$(answers "$MAIN_PORT")" "GET /plaintext on a new connection"
fi
echo "  ($((SECONDS - phase_start)) s)"

# ---- 2. slow and stuck clients -------------------------------------------------------

echo
echo "== 2. slow and stuck clients, all at once, for ${HOLD} s"
phase_start=$SECONDS
fds0=$MAIN_FDS
big=/docs/swagger-ui-bundle.js
if [ "$(answers "$MAIN_PORT" "$big")" != 1 ]; then
    big=/openapi.json # no swagger-ui-dist: a smaller answer, still never read
fi
rss0=$(rss "$MAIN_PID")
sampler_start "$MAIN_PID"
cli "$soak" slow -p "$MAIN_PORT" -n "$SLOW" -m 20 >"$TMPD/slow-head" &
sh_pid=$!
cli "$soak" slow -p "$MAIN_PORT" -n "$SLOW" --body -m 20 >"$TMPD/slow-body" &
sb_pid=$!
cli "$soak" stuck -p "$MAIN_PORT" -n "$STUCK" --path "$big" -P 8 -H "$HOLD" >"$TMPD/stuck-http" &
su_pid=$!
cli "$soak" stuck -p "$MAIN_PORT" -n "$STUCK_WS" --ws -H "$HOLD" >"$TMPD/stuck-ws" &
sw_pid=$!
BG_PIDS="$sh_pid $sb_pid $su_pid $sw_pid"
# a plain client meanwhile, every 0.5 s; and the server's fds one second before the stuck
# clients let go (by then every timeout has run)
probes=0 probe_fail=0 probe_max=0
t_end=$((SECONDS + HOLD - 1))
while [ "$SECONDS" -lt "$t_end" ]; do
    t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 \
        "http://127.0.0.1:$MAIN_PORT/plaintext" || true)
    probes=$((probes + 1))
    [ "${t%% *}" = 200 ] || probe_fail=$((probe_fail + 1))
    probe_max=$(awk -v a="$probe_max" -v b="${t#* }" 'BEGIN { print (b > a) ? b : a }')
    sleep 0.5
done
fds_held=$(nfds "$MAIN_PID")
sh_rc=0 sb_rc=0 su_rc=0 sw_rc=0
wait "$sh_pid" || sh_rc=$?
wait "$sb_pid" || sb_rc=$?
wait "$su_pid" || su_rc=$?
wait "$sw_pid" || sw_rc=$?
BG_PIDS=""
peak=$(sampler_stop)
fds1=$(wait_fds "$MAIN_PID" "$fds0" 10)
rss1=$(rss "$MAIN_PID")
sh=$(cat "$TMPD/slow-head") sb=$(cat "$TMPD/slow-body")
su=$(cat "$TMPD/stuck-http") sw=$(cat "$TMPD/stuck-ws")
echo "  slowloris head: $sh"
echo "  slowloris body: $sb"
echo "  never read $big: $su"
echo "  WebSocket never read: $sw"
echo "  plain client: $probes requests, $probe_fail failed, slowest ${probe_max} s"
fig slow head_conns "$(kv "$sh" opened)"
fig slow head_408 "$(kv "$sh" status_408)"
fig slow head_close_max_s "$(kv "$sh" close_max_s)"
fig slow body_conns "$(kv "$sb" opened)"
fig slow body_408 "$(kv "$sb" status_408)"
fig slow body_close_max_s "$(kv "$sb" close_max_s)"
fig slow stuck_readers "$(kv "$su" opened)"
fig slow ws_stuck "$(kv "$sw" opened)"
fig slow ws_dropped "$(kv "$sw" dropped)"
fig slow ws_bytes_sent "$(kv "$sw" bytes_sent)"
fig slow fds_while_held "$fds_held"
fig slow rss_before_kb "$rss0"
fig slow rss_peak_kb "$peak"
fig slow rss_after_kb "$rss1"
fig slow probe_requests "$probes"
fig slow probe_failed "$probe_fail"
fig slow probe_max_s "$probe_max"
if main_alive slow; then
    # each check needs its client's line, its exit 0 and at least one connection
    n=$(kv "$sh" opened)
    sh_ok=$(ran "$sh_rc" "$sh" opened closed status_408 close_max_s)
    check slow head_408 "$(($(all_of "$sh_ok" "$(kv "$sh" status_408)" "$n") *
        $(all_of "$sh_ok" "$(kv "$sh" closed)" "$n")))" \
        "$(kv "$sh" status_408) of $n got 408 and $(kv "$sh" closed) closed (client status $sh_rc)"
    check slow head_timeout "$(($(all_of "$sh_ok" "$(kv "$sh" closed)" "$n") *
        $(le "$(kv "$sh" close_max_s)" $((HEAD_MS * 3 / 2000 + 1)))))" \
        "closed $(kv "$sh" close_min_s)..$(kv "$sh" close_max_s) s after the first byte" \
        "(header timeout $((HEAD_MS / 1000)) s)"
    n=$(kv "$sb" opened)
    sb_ok=$(ran "$sb_rc" "$sb" opened closed status_408 close_max_s)
    check slow body_408 "$(($(all_of "$sb_ok" "$(kv "$sb" status_408)" "$n") *
        $(all_of "$sb_ok" "$(kv "$sb" closed)" "$n")))" \
        "$(kv "$sb" status_408) of $n got 408 and $(kv "$sb" closed) closed (client status $sb_rc)"
    check slow body_timeout "$(($(all_of "$sb_ok" "$(kv "$sb" closed)" "$n") *
        $(le "$(kv "$sb" close_max_s)" $((BODY_MS * 3 / 2000 + 1)))))" \
        "closed $(kv "$sb" close_min_s)..$(kv "$sb" close_max_s) s after the head" \
        "(body timeout $((BODY_MS / 1000)) s)"
    # the stuck readers must have been there (their line, all opened) for this to mean
    # anything
    su_ok=$(all_of "$(ran "$su_rc" "$su" opened)" "$(kv "$su" opened)" "$STUCK")
    check slow stuck_closed "$([ "$su_ok" = 1 ] && [ "$fds_held" -le "$fds0" ] && echo 1 || echo 0)" \
        "$fds_held fds $((HOLD - 1)) s in, $(kv "$su" opened) of $STUCK stuck readers still" \
        "there ($fds0 at rest)"
    # a WebSocket counts as dropped only once all were upgraded
    sw_ok=$(all_of "$(ran "$sw_rc" "$sw" opened upgraded dropped)" "$(kv "$sw" upgraded)" \
        "$(kv "$sw" opened)")
    check slow ws_dropped "$(all_of "$sw_ok" "$(kv "$sw" dropped)" "$(kv "$sw" opened)")" \
        "$(kv "$sw" dropped) of $(kv "$sw" opened) WebSockets that never read were dropped" \
        "($(kv "$sw" upgraded) upgraded)"
    # each WebSocket may queue max_queued_bytes (4 MiB) before it is dropped
    bound=$((rss0 + STUCK_WS * 6 * 1024 + 32 * 1024))
    check slow rss_bounded "$([ "$peak" -le "$bound" ] && echo 1 || echo 0)" \
        "peak $peak KiB (from $rss0; bound $bound), $rss1 KiB after"
    check slow plain_client "$([ "$probe_fail" = 0 ] && echo 1 || echo 0)" \
        "$((probes - probe_fail)) of $probes answered, slowest in $probe_max s"
    check slow fds_back "$([ "$fds1" -le "$fds0" ] && echo 1 || echo 0)" \
        "$fds0 fds before, $fds1 after"
fi
echo "  ($((SECONDS - phase_start)) s)"

# ---- 3. out of file descriptors ------------------------------------------------------

echo
echo "== 3. out of file descriptors: a second hello under ulimit -n $FD_LIMIT"
phase_start=$SECONDS
(
    ulimit -n "$FD_LIMIT"
    # shellcheck disable=SC2086
    exec $SRV_CPU "$hello" --host 127.0.0.1 --port 0 --slow-callback-ms 0 --idle-timeout 120000
) >"$TMPD/fd.out" 2>"$TMPD/fd.err" &
FD_PID=$!
FD_PORT=""
for _ in $(seq 1 100); do
    FD_PORT=$(sed -n 's|^hello: serving on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMPD/fd.out")
    [ -n "$FD_PORT" ] && break
    sleep 0.1
done
[ -n "$FD_PORT" ] || { echo "soak.sh: hello under ulimit -n $FD_LIMIT did not start" >&2; exit 1; }
fd_start=$(nfds "$FD_PID")
mkfifo "$TMPD/fd.in" "$TMPD/fd.outp"
cli "$soak" fdfill -p "$FD_PORT" -n 5000 <"$TMPD/fd.in" >"$TMPD/fd.outp" &
fill_pid=$!
exec 4>"$TMPD/fd.in" 5<"$TMPD/fd.outp"
ask() { # ask COMMAND: one line to bench-soak fdfill, its answer (30 s at most)
    local line=""
    [ -n "$1" ] && echo "$1" >&4
    read -r -t 30 line <&5 || true
    echo "$line"
}
full=$(ask "")
fds_full=$(nfds "$FD_PID")
t0=$(cpu_ticks "$FD_PID" 2>/dev/null || echo 0)
press=$(ask "press 5")
t1=$(cpu_ticks "$FD_PID" 2>/dev/null || echo 0)
cpu_pct=$(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.1f", t * 100 / (hz * 5) }')
chk=$(ask check)
cls=$(ask "close 20")
new=$(ask "new 10")
ask quit >/dev/null
exec 4>&- 5<&-
wait "$fill_pid" 2>/dev/null || true
fds_end=$(wait_fds "$FD_PID" "$fd_start" 10)
echo "  $full; server fds $fds_full (limit $FD_LIMIT, $fd_start at rest)"
echo "  5 s of new attempts while full: $press; server CPU $cpu_pct%"
echo "  $chk"
echo "  $cls"
echo "  $new"
fig fds limit "$FD_LIMIT"
fig fds served_until_full "$(kv "$full" served)"
fig fds fds_when_full "$fds_full"
fig fds attempts_closed "$(kv "$press" closed)"
fig fds attempts_waiting "$(kv "$press" waiting)"
fig fds cpu_pct_while_full "$cpu_pct"
fig fds held_answered "$(kv "$chk" answered)"
fig fds new_served_after_close "$(kv "$new" served)"
fig fds fds_at_end "$fds_end"
if proc_alive "$FD_PID"; then
    check fds server_alive 1 "hello under ulimit -n $FD_LIMIT runs"
    check fds filled "$([ "$(ran 0 "$full" served capped)" = 1 ] && [ "$(kv "$full" capped)" = 0 ] &&
        [ "$fds_full" -ge $((FD_LIMIT - 2)) ] &&
        echo 1 || echo 0)" "$(kv "$full" served) connections served, then none (fds $fds_full)"
    check fds no_spin "$(($(ran 0 "$press" closed) * $(le "$cpu_pct" 20)))" "CPU $cpu_pct% over 5 s of attempts while full"
    # the ask must have run ("check answered=N of=M") and held connections
    check fds held_answered "$(all_of "$(ran 0 "$chk" answered of)" "$(kv "$chk" answered)" \
        "$(kv "$chk" of)")" \
        "$(kv "$chk" answered) of $(kv "$chk" of) held connections answered"
    check fds served_again "$(all_of "$(ran 0 "$new" served)" "$(kv "$new" served)" 10)" \
        "$(kv "$new" served) of 10 new connections served after 20 closed"
    check fds fds_back "$([ "$fds_end" -le "$fd_start" ] && echo 1 || echo 0)" \
        "$fd_start fds at rest, $fds_end after"
else
    check fds server_alive 0 "hello under ulimit -n $FD_LIMIT died"
    tail -n 5 "$TMPD/fd.err" | sed 's/^/        stderr: /'
fi
stop_pid "$FD_PID"
FD_PID=""
echo "  ($((SECONDS - phase_start)) s)"

# ---- 4. faults -----------------------------------------------------------------------

echo
echo "== 4. faults"
phase_start=$SECONDS
fds0=$MAIN_FDS
hc_rc=0 pr_rc=0 va_rc=0 br_rc=0
hc=$(cli "$soak" fault --kind halfclose -p "$MAIN_PORT" -n "$FAULTS") || hc_rc=$?
echo "  half-closed after the request: $hc"
# 64 pipelined GETs of the large answer on a 4 KiB receive buffer: the reset comes while
# hello is still writing the batch, its Send-Q megabytes full (bench/soak.c,
# fault_pipereset)
pr=$(cli "$soak" fault --kind pipereset -p "$MAIN_PORT" -n "$FAULTS" --path "$big") || pr_rc=$?
pr_ok=$(answers "$MAIN_PORT")
echo "  reset in a pipelined batch of 64 $big: $pr; then a new client answered: $pr_ok"
va=$(cli "$soak" fault --kind vanish -p "$MAIN_PORT" -n "$VANISH") || va_rc=$?
# the jobs run their 300 ms on the thread pool (3 at a time in hello) after their
# clients left
fds_va=$(wait_fds "$MAIN_PID" "$fds0" $((VANISH / 3 + 10)))
va_ok=$(answers "$MAIN_PORT" "/sleep?ms=10")
echo "  left during GET /sleep?ms=300: $va; fds back to $fds_va; /sleep answers: $va_ok"
br=$(cli "$soak" fault --kind bigreset -p "$MAIN_PORT" -n "$FAULTS" --path "$big") || br_rc=$?
br_ok=$(answers "$MAIN_PORT")
echo "  reset while $big is written: $br; then answered: $br_ok"
fds1=$(wait_fds "$MAIN_PID" "$fds0" 10)
fig faults halfclose_answers "$(kv "$hc" answers)"
fig faults halfclose_expected "$(kv "$hc" of)"
fig faults pipereset_conns "$(kv "$pr" connections)"
fig faults pipereset_started "$(kv "$pr" answers_started)"
fig faults bigreset_started "$(kv "$br" answers_started)"
fig faults vanish_conns "$(kv "$va" connections)"
fig faults bigreset_conns "$(kv "$br" connections)"
fig faults fds_after "$fds1"
if main_alive faults; then
    check faults halfclose "$(all_of "$(ran "$hc_rc" "$hc" answers of)" "$(kv "$hc" answers)" \
        "$(kv "$hc" of)")" "$(kv "$hc" answers) of $(kv "$hc" of) answers arrived after SHUT_WR"
    # every reset must come after its first answer began, or it was not mid-batch
    check faults pipereset "$(($(all_of "$(ran "$pr_rc" "$pr" connections answers_started)" \
        "$(kv "$pr" answers_started)" "$(kv "$pr" connections)") * pr_ok))" \
        "$(kv "$pr" answers_started) of $(kv "$pr" connections) answers begun before the" \
        "reset mid-batch; answers after: $pr_ok"
    check faults vanish "$([ "$(ran "$va_rc" "$va" requests)" = 1 ] &&
        [ "$(kv "$va" requests)" = "$VANISH" ] && [ "$va_ok" = 1 ] &&
        [ "$fds_va" -le "$fds0" ] && echo 1 || echo 0)" \
        "$(kv "$va" requests) of $VANISH jobs asked; fds back ($fds_va) and /sleep answers" \
        "once the orphaned jobs ended"
    check faults sigpipe "$(($(all_of "$(ran "$br_rc" "$br" connections answers_started)" \
        "$(kv "$br" answers_started)" "$(kv "$br" connections)") * br_ok))" \
        "$(kv "$br" answers_started) of $(kv "$br" connections) answers begun before the" \
        "reset mid-write; answers after: $br_ok"
    check faults fds_back "$([ "$fds1" -le "$fds0" ] && echo 1 || echo 0)" \
        "$fds0 fds before, $fds1 after"
fi
echo "  ($((SECONDS - phase_start)) s)"

# ---- 5. mixed load -------------------------------------------------------------------

echo
echo "== 5. mixed load: HTTP keep-alive and WebSocket echo, $RATE/s each, and $LP_CLIENTS long"
echo "   polls on the chat with $LP_RATE messages/s posted; $RUNS x ${INTERVAL} s"
phase_start=$SECONDS
# the chat next to hello: its own port, pinned like hello, loopback only, its hub in
# memory (no --redis); one message posted and read before its RSS is taken
$SRV_CPU "$chat" --host 127.0.0.1 --port 0 --slow-callback-ms 0 \
    >"$TMPD/chat.out" 2>"$TMPD/chat.err" &
CHAT_PID=$!
CHAT_PORT=""
for _ in $(seq 1 100); do
    CHAT_PORT=$(sed -n 's|^chat: serving on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMPD/chat.out")
    [ -n "$CHAT_PORT" ] && break
    proc_alive "$CHAT_PID" || break
    sleep 0.1
done
if [ -z "$CHAT_PORT" ]; then
    echo "soak.sh: chat did not start:" >&2
    cat "$TMPD/chat.err" >&2
    exit 1
fi
curl -fs -o /dev/null --max-time 5 -H 'Content-Type: application/json' -d '{"text":"warm"}' \
    "http://127.0.0.1:$CHAT_PORT/rooms/soak/messages"
curl -fs -o /dev/null --max-time 5 "http://127.0.0.1:$CHAT_PORT/rooms/soak/messages?since=0"
sleep 0.3
chat_rss0=$(rss "$CHAT_PID")
echo "   chat pid $CHAT_PID, port $CHAT_PORT, RSS $chat_rss0 KiB"
: >"$TMPD/minutes"
: >"$TMPD/longpoll"
fail_mixed=0
half=$(awk -v s="$INTERVAL" 'BEGIN { print s / 2 }')
printf '  %-3s %7s %7s %9s %9s %9s %6s %5s %9s %9s %9s %9s\n' run http ws "http p99" "ws p99" \
    "lp p99" errors load "RSS mid" "RSS peak" "RSS end" "chat RSS"
for i in $(seq 1 "$RUNS"); do
    sampler_start "$MAIN_PID"
    cli "$bench" "http://127.0.0.1:$MAIN_PORT/plaintext" -c 16 --rate "$RATE" \
        -d "${INTERVAL}s" --json >"$TMPD/http-$i.json" 2>"$TMPD/http-$i.err" &
    hp=$!
    cli "$bench" "ws://127.0.0.1:$MAIN_PORT/ws/echo" -c 16 --rate "$RATE" \
        -d "${INTERVAL}s" --json >"$TMPD/ws-$i.json" 2>"$TMPD/ws-$i.err" &
    wp=$!
    cli "$soak" longpoll -p "$CHAT_PORT" -n "$LP_CLIENTS" --rate "$LP_RATE" -d "$INTERVAL" \
        --room soak >"$TMPD/lp-$i.out" 2>"$TMPD/lp-$i.err" &
    lpp=$!
    BG_PIDS="$hp $wp $lpp" # stopped by the cleanup if the run is cut short
    # in the middle of the run: both servers' RSS and the machine's load average (the
    # one-minute figure), which tells the machine's load from the servers'
    sleep "$half"
    rss_mid=$(rss "$MAIN_PID")
    load=$(cut -d ' ' -f 1 /proc/loadavg)
    wait "$hp" || true
    wait "$wp" || true
    lp_rc=0
    wait "$lpp" || lp_rc=$?
    BG_PIDS=""
    rss_peak=$(sampler_stop)
    rss=$(rss "$MAIN_PID")
    chat_rss=$(rss "$CHAT_PID")
    lp=$(cat "$TMPD/lp-$i.out")
    echo "$i $lp_rc $lp" >>"$TMPD/longpoll"
    lp_p99=$(kv "$lp" lat_p99_ms)
    line=$(/usr/bin/python3 - "$TMPD/http-$i.json" "$TMPD/ws-$i.json" <<'PY'
import json, sys
out = []
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            d = json.load(f)
        out += [d["requests"], round(d["latency_us"]["p99"] / 1000, 2), sum(d["errors"].values())]
    except (OSError, ValueError, KeyError):
        out += [0, 0, -1]  # no report: squall-bench failed
print(*out)
PY
)
    read -r hreq hp99 herr wreq wp99 werr <<<"$line"
    echo "$i $hreq $hp99 $herr $wreq $wp99 $werr $rss $load $rss_mid $rss_peak $lp_p99 $chat_rss" \
        >>"$TMPD/minutes"
    errs=$((herr + werr))
    if [ "$herr" -lt 0 ] || [ "$werr" -lt 0 ]; then
        errs=-1
    fi
    printf '  %-3s %7s %7s %6s ms %6s ms %6s ms %6s %5s %9s %9s %9s %9s\n' "$i" "$hreq" "$wreq" \
        "$hp99" "$wp99" "$lp_p99" "$errs" "$load" "$rss_mid" "$rss_peak" "$rss" "$chat_rss"
    if [ "$errs" != 0 ]; then
        fail_mixed=$((fail_mixed + 1))
        cat "$TMPD/http-$i.err" "$TMPD/ws-$i.err" | sed 's/^/        /'
    fi
    echo "      long poll: $lp (status $lp_rc)"
    sed 's/^/        /' "$TMPD/lp-$i.err"
    proc_alive "$MAIN_PID" || break
    proc_alive "$CHAT_PID" || break
done
rss_first=$(awk 'NR == 1 { print $8 }' "$TMPD/minutes")
rss_last=$(awk 'END { print $8 }' "$TMPD/minutes")
peak_first=$(awk 'NR == 1 { print $11 }' "$TMPD/minutes")
peak_max=$(awk '$11 > m { m = $11 } END { print m + 0 }' "$TMPD/minutes")
chat_first=$(awk 'NR == 1 { print $13 }' "$TMPD/minutes")
chat_last=$(awk 'END { print $13 }' "$TMPD/minutes")
errors=$(awk '{ s += ($4 < 0 ? 1 : $4) + ($7 < 0 ? 1 : $7) } END { print s + 0 }' "$TMPD/minutes")
# the median of the runs' p99 (HTTP column 3, WebSocket column 6), and the runs whose p99
# is more than 3 times it
median() {
    awk -v c="$1" '{ print $c }' "$TMPD/minutes" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
over3() { # over3 COLUMN MEDIAN: the runs (numbers) whose p99 passes 3 x MEDIAN
    awk -v c="$1" -v m="$2" '$c > 3 * m { printf "%s%s", s, $1; s = "," }' "$TMPD/minutes"
}
hmed=$(median 3) wmed=$(median 6)
hover=$(over3 3 "$hmed") wover=$(over3 6 "$wmed")
runs_done=$(wc -l <"$TMPD/minutes")
# long polls: every run's client exited 0, every client joined, every message posted was
# answered 201 with the next id, and each client got each message posted after it joined
# once, in order: nothing lost, doubled, out of order or missing at the end
lp_bad=$(awk -v n="$LP_CLIENTS" -v want=$((LP_RATE * INTERVAL)) '
    function v(k,   i) { for (i = 3; i <= NF; i++) if (index($i, k "=") == 1)
        return substr($i, length(k) + 2); return "" }
    { ok = $2 == 0 && v("joined") == n && v("posted") == want && v("post_errors") == 0 &&
        v("id_errors") == 0 && v("lost") == 0 && v("dup") == 0 && v("short") == 0 &&
        v("client_errors") == 0 && v("expected") > 0 && v("delivered") == v("expected")
      if (!ok) { printf "%s%s", s, $1; s = "," } }' "$TMPD/longpoll")
lp_delivered=$(awk '{ for (i = 3; i <= NF; i++) if ($i ~ /^delivered=/) s += substr($i, 11) }
    END { print s + 0 }' "$TMPD/longpoll")
lp_expected=$(awk '{ for (i = 3; i <= NF; i++) if ($i ~ /^expected=/) s += substr($i, 10) }
    END { print s + 0 }' "$TMPD/longpoll")
fig mixed runs "$RUNS"
fig mixed run_seconds "$INTERVAL"
fig mixed rate_each "$RATE"
fig mixed errors "$errors"
fig mixed http_p99_median_ms "$hmed"
fig mixed ws_p99_median_ms "$wmed"
fig mixed rss_first_kb "$rss_first"
fig mixed rss_last_kb "$rss_last"
fig mixed rss_peak_first_run_kb "$peak_first"
fig mixed rss_peak_kb "$peak_max"
fig mixed longpoll_clients "$LP_CLIENTS"
fig mixed longpoll_rate "$LP_RATE"
fig mixed longpoll_delivered "$lp_delivered"
fig mixed longpoll_expected "$lp_expected"
fig mixed chat_rss_before_kb "$chat_rss0"
fig mixed chat_rss_first_kb "$chat_first"
fig mixed chat_rss_last_kb "$chat_last"
echo "  median p99: HTTP $hmed ms, WebSocket $wmed ms"
if main_alive mixed; then
    check mixed no_errors "$([ "$fail_mixed" = 0 ] && [ "$runs_done" = "$RUNS" ] && echo 1 || echo 0)" \
        "$errors errors in $runs_done of $RUNS runs of both clients"
    check mixed p99_stable "$([ "$runs_done" = "$RUNS" ] && [ -z "$hover$wover" ] && echo 1 || echo 0)" \
        "every run's p99 within 3 x the median (HTTP $hmed ms, WebSocket $wmed" \
        "ms${hover:+; HTTP over in run $hover}${wover:+; WebSocket over in run $wover})"
    check mixed rss_flat "$(le "$rss_last" $((rss_first * 11 / 10)))" \
        "RSS $rss_first KiB after the first run, $rss_last KiB after the last"
    check mixed rss_peak_bounded "$([ "$peak_first" -gt 0 ] &&
        [ "$(le "$peak_max" $((peak_first * 12 / 10)))" = 1 ] && echo 1 || echo 0)" \
        "peak RSS during a run $peak_max KiB, the first run's $peak_first KiB (bound +20%)"
fi
if proc_alive "$CHAT_PID"; then
    check mixed chat_alive 1 "chat (pid $CHAT_PID) runs"
    check mixed longpoll_lossless "$([ "$runs_done" = "$RUNS" ] && [ -z "$lp_bad" ] &&
        [ "$lp_expected" -gt 0 ] && echo 1 || echo 0)" \
        "$lp_delivered of $lp_expected messages delivered to $LP_CLIENTS long polls, each" \
        "once, in order${lp_bad:+; lost, doubled, late or a client error in run $lp_bad}"
    check mixed chat_rss_flat "$([ "$chat_first" -gt 0 ] &&
        [ "$(le "$chat_last" $((chat_first * 11 / 10)))" = 1 ] && echo 1 || echo 0)" \
        "chat RSS $chat_rss0 KiB before, $chat_first KiB after the first run, $chat_last after" \
        "the last"
else
    check mixed chat_alive 0 "chat died during the mixed load"
    tail -n 5 "$TMPD/chat.err" | sed 's/^/        stderr: /'
fi
stop_pid "$CHAT_PID"
CHAT_PID=""
echo "  ($((SECONDS - phase_start)) s)"

# ---- summary -------------------------------------------------------------------------

echo
total=$(wc -l <"$TMPD/checks")
echo "== summary: $((total - FAILED)) of $total checks passed in $((SECONDS - start)) s"
if [ "$FAILED" -gt 0 ]; then
    awk '$3 == "FAIL" { printf "  FAIL  %s/%s\n", $1, $2 }' "$TMPD/checks"
fi
if [ -n "$JSON" ]; then
    /usr/bin/python3 - "$TMPD/figures" "$TMPD/checks" "$TMPD/minutes" "$TMPD/longpoll" "$JSON" \
        "$((SECONDS - start))" "$QUICK" <<'EOF'
import json, sys
figs, checks, minutes, longpoll, out, secs, quick = sys.argv[1:]
doc = {"quick": quick == "1", "seconds": int(secs)}
def num(v):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v
for line in open(figs):
    phase, key, value = line.split(None, 2)
    doc.setdefault(phase, {})[key] = num(value.strip())
doc["mixed"]["per_run"] = [
    dict(zip(["run", "http_requests", "http_p99_ms", "http_errors", "ws_requests", "ws_p99_ms",
              "ws_errors", "rss_kb", "loadavg_1m", "rss_mid_kb", "rss_peak_kb",
              "longpoll_p99_ms", "chat_rss_kb"], map(num, l.split())))
    for l in open(minutes) if l.strip()]
for run, l in zip(doc["mixed"]["per_run"], open(longpoll)):
    f = l.split()
    run["longpoll_status"] = num(f[1])
    run["longpoll"] = {k: num(v) for k, v in (x.split("=", 1) for x in f[2:] if "=" in x)}
doc["checks"] = {f"{p}/{n}": r == "ok" for p, n, r in (l.split() for l in open(checks))}
doc["failed"] = [k for k, v in doc["checks"].items() if not v]
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
    echo "figures: $JSON"
fi
[ "$FAILED" = 0 ]
