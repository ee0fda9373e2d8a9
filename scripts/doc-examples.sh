#!/usr/bin/env bash
# The examples the README and docs/*.md show are real files: each page includes one
# between `<!-- example: docs/examples/FILE [run] -->` and `<!-- /example -->`, in a fenced
# C block.
# This checks that the block is FILE's text, byte for byte, compiles FILE against the
# static library of BUILD (default build) with -Werror, and runs those marked `run` (a
# Criterion test file runs its tests; a program must exit 0); then runs the command lines
# the README shows under its example, as a reader would type them. Run after `make`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
BUILD=${BUILD:-build}
CC=${CC:-cc}
lib="$BUILD/lib/libsquall.a"
[ -f "$lib" ] || { echo "doc-examples: $lib is not built (run make first)" >&2; exit 1; }
libs="$(pkg-config --libs libuv jansson libcrypto zlib hiredis)"
cflags="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -Iinclude
        $(pkg-config --cflags libuv jansson)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

n=0
fail=0
for page in README.md docs/*.md; do
    # one line per example: FILE RUN START_LINE
    while read -r file run; do
        n=$((n + 1))
        if [ ! -f "$file" ]; then
            echo "doc-examples: $page names $file, which does not exist" >&2
            fail=1
            continue
        fi
        # the fenced block between the markers, without its fences
        /usr/bin/python3 - "$page" "$file" >"$out/block" <<'EOF'
import re, sys
page, file = sys.argv[1], sys.argv[2]
text = open(page, encoding="utf-8").read()
m = re.search(r"<!-- example: " + re.escape(file) + r"(?: run)? -->\n```c\n(.*?)```\n<!-- /example -->",
              text, re.S)
if m is None:
    sys.exit("doc-examples: %s: no ```c block between the markers of %s" % (page, file))
sys.stdout.write(m.group(1))
EOF
        if ! cmp -s "$out/block" "$file"; then
            echo "doc-examples: $page shows $file, but the two differ:" >&2
            diff -u "$file" "$out/block" | head -20 >&2 || true
            fail=1
            continue
        fi
        bin="$out/$(basename "$file" .c)"
        extra=""
        grep -q '<criterion/criterion.h>' "$file" && extra="-lcriterion"
        # shellcheck disable=SC2086
        if ! $CC $cflags -o "$bin" "$file" "$lib" $libs $extra -lm -lpthread; then
            echo "doc-examples: $file (shown in $page) does not compile" >&2
            fail=1
            continue
        fi
        if [ "$run" = run ]; then
            if ! (cd "$out" && timeout 60 "$bin" >"$out/log" 2>&1); then
                echo "doc-examples: $file (shown in $page) failed when run:" >&2
                tail -20 "$out/log" >&2
                fail=1
                continue
            fi
        fi
        echo "doc-examples: $file ok (${run:-compiled})"
    done < <(sed -n 's/^<!-- example: \(docs\/examples\/[^ ]*\)\( run\)\? -->$/\1\2/p' "$page")
done
[ "$n" -gt 0 ] || { echo "doc-examples: no example found" >&2; exit 1; }

# The README's own command lines for its example, run as a reader would type them (in a
# folder holding the example as items.c; the paths to include/ and build/ made absolute).
/usr/bin/python3 - "$here" "$BUILD" >"$out/readme.sh" <<'EOF'
import re, sys
here, build = sys.argv[1], sys.argv[2]
text = open(here + "/README.md", encoding="utf-8").read()
m = re.search(r"<!-- /example -->\n\n((?:    .*\n)+)", text[text.index("readme_items.c run"):])
if m is None:
    sys.exit("doc-examples: README.md shows no command after its example")
cmd = "".join(l[4:] for l in m.group(1).splitlines(True))
cmd = re.sub(r"[ \t]+#.*", "", cmd)
cmd = cmd.replace("-Iinclude", "-I" + here + "/include").replace("build/lib/", here + "/" + build + "/lib/")
print("set -e\n" + cmd)
EOF
mkdir -p "$out/readme"
cp docs/examples/readme_items.c "$out/readme/items.c"
if (cd "$out/readme" && bash "$out/readme.sh" >"$out/readme.log" 2>&1); then
    echo "doc-examples: README.md's commands ok ($(grep -o 'Tested: [0-9]* | Passing: [0-9]*' "$out/readme.log"))"
else
    echo "doc-examples: README.md's commands fail as shown:" >&2
    tail -5 "$out/readme.log" >&2
    fail=1
fi
exit $fail
