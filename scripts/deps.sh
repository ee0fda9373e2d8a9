#!/usr/bin/env bash
# Installs the Debian packages (and npm test peers) squall needs, when one is missing.
# Idempotent and quiet when everything is there. Run as root (or with sudo available).
set -euo pipefail

# Build and test: the first line (openssl: the TLS tests make their certificates with it;
# ca-certificates: the system store the clients trust by default). Peers and tools of the test suite and of the scripts
# (bench-peers.sh: nginx, h2o, uvicorn with uvloop and httptools, gnuplot, taskset from
# util-linux; wrk for comparing squall-bench; mem-idle.sh: ss from iproute2,
# pgrep from procps; the hub's Redis tests: redis-server; the chat page's browser test:
# chromium): the rest.
pkgs=(build-essential pkg-config libuv1-dev node-llhttp libjansson-dev
      libcriterion-dev libssl-dev zlib1g-dev libhiredis-dev openssl ca-certificates
      redis-server chromium curl wrk nginx-light valgrind nodejs npm python3 python3-websockets python3-aiohttp python3-requests
      python3-uvicorn python3-uvloop python3-httptools h2o gnuplot-nox iproute2 util-linux procps)
# make fuzz: clang and its libFuzzer runtime
pkgs+=(clang libclang-rt-14-dev)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm may come with a Node.js that was not installed from Debian's npm package.
if [[ " ${missing[*]} " == *" npm "* ]] && command -v npm >/dev/null 2>&1; then
    missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node test peers (the WebSocket `ws` package; playwright-core, which drives chromium for
# the browser tests; @apidevtools/swagger-parser and ajv, which validate the OpenAPI
# documents) live in tests/peers/node_modules.
here=$(cd "$(dirname "$0")/.." && pwd)
# A tree is (re)installed when it is missing or older than its lock file (a package added).
stale() {
    [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]
}
if [ -f "$here/tests/peers/package.json" ] &&
   { stale "$here/tests/peers" ||
     [ ! -d "$here/tests/peers/node_modules/ws" ] ||
     [ ! -d "$here/tests/peers/node_modules/playwright-core" ] ||
     [ ! -d "$here/tests/peers/node_modules/@apidevtools/swagger-parser" ] ||
     [ ! -d "$here/tests/peers/node_modules/ajv" ]; }; then
    echo "deps: installing npm test peers"
    (cd "$here/tests/peers" && npm install --silent --no-audit --no-fund >/dev/null)
fi
# Assets squall serves at run time: swagger-ui-dist, the /docs page's (sq_openapi_mount
# finds it in web/node_modules by default).
if [ -f "$here/web/package.json" ] &&
   { stale "$here/web" || [ ! -f "$here/web/node_modules/swagger-ui-dist/swagger-ui-bundle.js" ]; }; then
    echo "deps: installing npm web assets (swagger-ui-dist)"
    (cd "$here/web" && npm install --silent --no-audit --no-fund --ignore-scripts >/dev/null)
fi
exit 0
