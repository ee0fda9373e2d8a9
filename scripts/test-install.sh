#!/usr/bin/env bash
# test-install.sh — does an installed squall work for an out-of-tree program?
#
# `make install PREFIX=<temp>`, then compiles README.md's embedding example (the C block
# after the "example: embed.c" marker, so the README can never show code that does not
# build) with `pkg-config --cflags --libs squall`, twice:
#   shared   linked to libsquall.so, run with LD_LIBRARY_PATH
#   static   `pkg-config --static`, with libsquall.so removed so libsquall.a is linked
# Each binary is started, asked one request with curl, checked, and stopped with SIGINT
# (it must shut down cleanly and exit 0).
# The version is checked to be one everywhere: include/squall/version.h's numbers, the
# installed library's name and SONAME (libsquall.so.<SQ_VERSION_ABI>, with libsquall.so a
# link to it), squall.pc's Version, and what sq_version()/sq_version_string() return.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/squall-install.XXXXXX)
pid=""
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "test-install: FAIL: $*" >&2
    exit 1
}

# The version as the one header that holds it says.
vnum() {
    sed -n "s/^#define SQ_VERSION_$1 \([0-9][0-9]*\)\$/\1/p" "$root/include/squall/version.h"
}
want_version="$(vnum MAJOR).$(vnum MINOR).$(vnum PATCH)"
abi=$(vnum ABI)
[[ $want_version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ && -n $abi ]] ||
    fail "include/squall/version.h has no SQ_VERSION_MAJOR/MINOR/PATCH/ABI numbers"
soname=libsquall.so.$abi

prefix=$tmp/prefix
make --no-print-directory -s -C "$root" install PREFIX="$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "make install PREFIX=$prefix"; }
for f in include/squall.h include/squall/server.h include/squall/version.h \
    lib/libsquall.a lib/libsquall.so "lib/$soname" lib/pkgconfig/squall.pc; do
    [ -e "$prefix/$f" ] || fail "make install did not install $f"
done
[ "$(readlink "$prefix/lib/libsquall.so")" = "$soname" ] ||
    fail "lib/libsquall.so is not a link to $soname"
[ ! -L "$prefix/lib/$soname" ] || fail "lib/$soname is a link, not the library"
dyn=$(readelf -d "$prefix/lib/$soname") || fail "readelf -d lib/$soname"
grep -q "(SONAME).*\[$soname\]" <<<"$dyn" || fail "lib/$soname does not have SONAME $soname"
stale=$(find "$prefix/lib" -name 'libsquall.so.*' ! -name "$soname")
[ -z "$stale" ] || fail "make install left other library names: $stale"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
version=$(pkg-config --modversion squall) || fail "pkg-config does not find squall.pc"
[ "$version" = "$want_version" ] ||
    fail "squall.pc says $version, include/squall/version.h $want_version"
echo "test-install: squall $version installed in $prefix ($soname)"

awk '/<!-- example: embed.c -->/ { found = 1; next }
     found == 1 && /^```c$/ { found = 2; next }
     found == 2 && /^```$/ { exit }
     found == 2 { print }' "$root/README.md" >"$tmp/embed.c"
[ -s "$tmp/embed.c" ] || fail "README.md has no C block after <!-- example: embed.c -->"

# run_check BIN [ENV...]: start BIN, read its URL, one request, SIGINT, clean exit.
run_check() {
    local bin=$1 url body rc _
    shift
    env "$@" "$bin" >"$tmp/out.txt" 2>"$tmp/err.txt" &
    pid=$!
    for _ in $(seq 1 50); do
        [ -s "$tmp/out.txt" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    url=$(head -n1 "$tmp/out.txt")
    [ -n "$url" ] || { cat "$tmp/err.txt" >&2; fail "$bin printed no URL"; }
    body=$(curl -fsS --max-time 5 "$url?name=installer") || fail "curl $url"
    [ "$body" = "Hello, installer!" ] || fail "$url answered '$body'"
    kill -INT "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rc=0
    wait "$pid" || rc=$?
    pid=""
    [ "$rc" = 0 ] || { cat "$tmp/err.txt" >&2; fail "$bin exited with $rc after SIGINT"; }
    echo "test-install: $(basename "$bin"): GET $url?name=installer -> $body"
}

cflags=(-Wall -Wextra -Wno-unused-parameter -Werror)

# The header's version and the library's, as a program sees them.
cat >"$tmp/version.c" <<'EOF'
#include <stdio.h>
#include <squall.h>
int main(void)
{
    int hex_ok = sq_version() == SQ_VERSION_HEX &&
                 SQ_VERSION_HEX == (SQ_VERSION_MAJOR << 16 | SQ_VERSION_MINOR << 8 |
                                    SQ_VERSION_PATCH);
    printf("%s %s %d\n", SQ_VERSION_STRING, sq_version_string(), hex_ok);
    return 0;
}
EOF
# check_version BIN [ENV...]
check_version() {
    local bin=$1 out
    shift
    out=$(env "$@" "$bin") || fail "$bin failed"
    [ "$out" = "$want_version $want_version 1" ] ||
        fail "$(basename "$bin"): header, library, hex say '$out'; want $want_version"
}

# The hub on Redis links hiredis: a program that makes one (nobody listens on port 1, so
# it only starts the hub's thread, tries, and is destroyed) must link both ways, which
# for the static library means squall.pc brings hiredis.
cat >"$tmp/hub.c" <<'EOF'
#include <stdio.h>
#include <squall.h>
int main(void)
{
    sq_hub_opts_t opts;
    sq_hub_opts_init(&opts);
    opts.redis_url = "redis://127.0.0.1:1";
    sq_hub_t *hub;
    int rc = sq_hub_create(&hub, &opts);
    if (rc != 0) {
        fprintf(stderr, "sq_hub_create: %s\n", sq_strerror(rc));
        return 1;
    }
    sq_hub_destroy(hub);
    puts("hub ok");
    return 0;
}
EOF
# check_hub BIN [ENV...]
check_hub() {
    local bin=$1 out
    shift
    out=$(env "$@" "$bin" 2>"$tmp/hub.err") || { cat "$tmp/hub.err" >&2; fail "$bin failed"; }
    [ "$out" = "hub ok" ] || fail "$(basename "$bin") said '$out'"
}

# Shared: the program needs $soname from the prefix.
# shellcheck disable=SC2046
cc "${cflags[@]}" -o "$tmp/embed-shared" "$tmp/embed.c" $(pkg-config --cflags --libs squall) ||
    fail "compiling against the shared library"
# ldd's output is taken whole first: `ldd | grep -q` under pipefail fails whenever grep
# quits at the match before ldd has written everything (ldd dies of SIGPIPE).
deps=$(LD_LIBRARY_PATH=$prefix/lib ldd "$tmp/embed-shared")
grep -q "$soname => $prefix/lib/$soname" <<<"$deps" ||
    fail "embed-shared is not linked to $prefix/lib/$soname"
run_check "$tmp/embed-shared" LD_LIBRARY_PATH="$prefix/lib"
# shellcheck disable=SC2046
cc "${cflags[@]}" -o "$tmp/version-shared" "$tmp/version.c" $(pkg-config --cflags --libs squall) ||
    fail "compiling version.c against the shared library"
check_version "$tmp/version-shared" LD_LIBRARY_PATH="$prefix/lib"
# shellcheck disable=SC2046
cc "${cflags[@]}" -o "$tmp/hub-shared" "$tmp/hub.c" $(pkg-config --cflags --libs squall) ||
    fail "compiling hub.c against the shared library"
check_hub "$tmp/hub-shared" LD_LIBRARY_PATH="$prefix/lib"

# Static: with only libsquall.a left, --static must bring every private dependency.
rm -f "$prefix"/lib/libsquall.so*
# shellcheck disable=SC2046
cc "${cflags[@]}" -o "$tmp/embed-static" "$tmp/embed.c" $(pkg-config --static --cflags --libs squall) ||
    fail "compiling against the static library"
deps=$(ldd "$tmp/embed-static")
! grep -q libsquall <<<"$deps" || fail "embed-static still wants libsquall.so"
run_check "$tmp/embed-static"
# shellcheck disable=SC2046
cc "${cflags[@]}" -o "$tmp/version-static" "$tmp/version.c" \
    $(pkg-config --static --cflags --libs squall) ||
    fail "compiling version.c against the static library"
check_version "$tmp/version-static"
# shellcheck disable=SC2046
cc "${cflags[@]}" -o "$tmp/hub-static" "$tmp/hub.c" $(pkg-config --static --cflags --libs squall) ||
    fail "compiling hub.c against the static library (does squall.pc bring hiredis?)"
check_hub "$tmp/hub-static"
echo "test-install: a hub on Redis links shared and static"
echo "test-install: $want_version in version.h, squall.pc and the library (shared and static)"

echo "test-install: OK (shared and static)"
