#!/usr/bin/env bash
# The libFuzzer harnesses of fuzz/ (clang, -fsanitize=fuzzer,address,undefined), each run
# for FUZZ_SECONDS (default 10) from its committed seeds in fuzz/corpus/NAME; inputs it
# finds new go to build-fuzz/corpus/NAME, a crash to build-fuzz/artifacts/ (and the run
# fails: make it a regression test, then fix it). Each harness gets the dictionary that
# suits it (fuzz/http.dict or fuzz/ws.dict; fuzz/NAME.dict overrides). Needs clang
# (Debian's, with its libFuzzer runtime).
#   make fuzz                       every harness, 10 s each
#   make fuzz FUZZ_SECONDS=3600     an hour each
#   FUZZ_ONLY=request scripts/fuzz.sh
#   FUZZ_SEED=1 scripts/fuzz.sh      the same inputs each run (CI)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
SECONDS_EACH=${FUZZ_SECONDS:-10}
B=build-fuzz
command -v clang >/dev/null || { echo "fuzz: clang is not installed (apt-get install clang)" >&2; exit 1; }
if [ -n "${FUZZ_ONLY:-}" ] && [ ! -f fuzz/fuzz_"$FUZZ_ONLY".c ]; then
    names=
    for f in fuzz/fuzz_*.c; do n=${f#fuzz/fuzz_}; names="$names ${n%.c}"; done
    echo "fuzz: FUZZ_ONLY=$FUZZ_ONLY names no harness (there are:$names)" >&2
    exit 1
fi
make -j2 --no-print-directory BUILD=$B CC=clang OPT="-O1 -g" \
    SAN="-fsanitize=fuzzer-no-link,address,undefined" \
    WARN="-Wall -Wno-unused-parameter -Wno-cast-align" $B/lib/libsquall.a >/dev/null
llhttp_inc=$(sed -n 's/^LLHTTP_INC ?= //p' third_party/llhttp/llhttp.mk)
# the libraries the Makefile links the library with (its LIBS), so that the harnesses
# follow it when a dependency comes or goes
# shellcheck disable=SC2016  # $(LIBS) is make's, not the shell's
libs=$(printf 'fuzz-print-libs:\n\t@echo $(LIBS)\n' |
    make -s --no-print-directory -f Makefile -f - fuzz-print-libs)
[ -n "$libs" ] || { echo "fuzz: cannot read LIBS from the Makefile" >&2; exit 1; }
# The dictionary each harness gets (libFuzzer -dict): fuzz/NAME.dict when there is one,
# else this table.
dict_for() {
    local d=
    case $1 in
    request | handshake | client_response | pct_route | multipart | urlenc) d=fuzz/http.dict ;;
    ws_server | ws_client | ws_deflate) d=fuzz/ws.dict ;;
    esac
    [ -f fuzz/"$1".dict ] && d=fuzz/"$1".dict
    [ -n "$d" ] && [ -f "$d" ] && echo "$d"
    return 0
}
mkdir -p $B/bin $B/artifacts
fail=0
for src in fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    name=${name#fuzz_}
    [ -n "${FUZZ_ONLY:-}" ] && [ "$FUZZ_ONLY" != "$name" ] && continue
    # shellcheck disable=SC2086
    clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=undefined -Iinclude -Ilib -I"$llhttp_inc" \
        -o $B/bin/fuzz-"$name" "$src" $B/lib/libsquall.a $libs
    mkdir -p $B/corpus/"$name"
    dict=$(dict_for "$name")
    echo "fuzz: $name for ${SECONDS_EACH}s${dict:+ (dictionary $dict)}"
    # shellcheck disable=SC2086
    if ! UBSAN_OPTIONS=halt_on_error=1 $B/bin/fuzz-"$name" -max_total_time="$SECONDS_EACH" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_SEED:+-seed=$FUZZ_SEED} \
        ${dict:+-dict=$dict} \
        -artifact_prefix=$B/artifacts/"$name"- $B/corpus/"$name" fuzz/corpus/"$name" \
        >$B/fuzz-"$name".log 2>&1; then
        echo "fuzz: $name found a failure (input in $B/artifacts/):" >&2
        grep -E "ERROR|SUMMARY|runtime error" $B/fuzz-"$name".log | head -5 >&2
        fail=1
    else
        cov=$(grep -oE "cov: [0-9]+" $B/fuzz-"$name".log | tail -1)
        grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" $B/fuzz-"$name".log |
            tr '\n' ' ' | sed 's/^/fuzz:   /'
        echo "${cov:+edges ${cov#cov: }}"
    fi
done
exit $fail
