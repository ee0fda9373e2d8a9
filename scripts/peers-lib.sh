# Helpers shared by scripts/bench-peers.sh and scripts/mem-idle.sh. Sourced, not run.
# shellcheck shell=bash
# They expect `set -euo pipefail` and a scratch folder in $TMPD that the caller removes.

# Prints a TCP port that nothing listens on, between 20000 and 29999 (below Linux's
# ephemeral range, so no client socket can be holding it).
free_port() {
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 10000))
        if [ -z "$(ss -Htln "( sport = :$p )")" ]; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# wait_http URL PID: waits up to 10 s for URL to answer 200 while process PID lives (an
# https:// URL's certificate is not checked: the benchmarks make their own).
wait_http() {
    local _
    for _ in $(seq 1 100); do
        curl -fsk -o /dev/null --max-time 1 "$1" && return 0
        proc_alive "$2" || { echo "server (pid $2) exited before answering $1" >&2; return 1; }
        sleep 0.1
    done
    echo "no answer from $1 within 10 s" >&2
    return 1
}

# nginx_conf PORT WORKER_CONNECTIONS KEEPALIVE_TIMEOUT [CERT KEY]: writes
# $TMPD/nginx/nginx.conf, a self-contained configuration (its own prefix, pid file, logs
# and temp folders) with one worker answering `GET /plaintext` as hello does, keep-alive
# on, no access log; with CERT and KEY, over TLS (1.2 and 1.3) with them.
nginx_conf() {
    local d=$TMPD/nginx ssl="" tls=""
    if [ $# -ge 5 ]; then
        ssl=" ssl"
        tls="ssl_certificate $4; ssl_certificate_key $5; ssl_protocols TLSv1.2 TLSv1.3;"
    fi
    mkdir -p "$d/logs"
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events {
    worker_connections $2;
}
http {
    access_log off;
    default_type text/plain;
    keepalive_timeout $3;
    keepalive_requests 100000000;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server {
        listen 127.0.0.1:$1$ssl;
        $tls
        location = /plaintext { return 200 "Hello, world"; }
    }
}
EOF
}

# nginx_cmd: the command line that runs nginx on $TMPD/nginx/nginx.conf in the foreground.
nginx_cmd() {
    echo "nginx -p $TMPD/nginx/ -c $TMPD/nginx/nginx.conf -e $TMPD/nginx/logs/error.log"
}

# proc_pids PID: PID and its children (nginx: master and worker).
proc_pids() {
    echo "$1"
    pgrep -P "$1" || true
}

# cpu_ticks PID...: user + system CPU time of the processes, in clock ticks (fields 14
# and 15 of /proc/PID/stat, counted after the command name, which may contain spaces).
cpu_ticks() {
    local p sum=0 t
    for p in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')
        sum=$((sum + t))
    done
    echo "$sum"
}

# rss_kib PID...: the sum of VmRSS of the processes, in KiB.
rss_kib() {
    local p sum=0 t
    for p in "$@"; do
        t=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status")
        sum=$((sum + t))
    done
    echo "$sum"
}

# proc_alive PID: true while PID runs (an exited child not yet reaped counts as gone).
proc_alive() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $1 }') || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL. Only for processes we started.
stop_pid() {
    local pid=$1 _
    if proc_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            proc_alive "$pid" || break
            sleep 0.1
        done
        proc_alive "$pid" && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
}

# wait_tcp PORT PID: waits up to 15 s for a listener on 127.0.0.1:PORT while PID lives
# (WebSocket servers, which answer no plain GET).
wait_tcp() {
    local _
    for _ in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        proc_alive "$2" || { echo "server (pid $2) exited before listening on $1" >&2; return 1; }
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 within 15 s" >&2
    return 1
}

# h2o_conf PORT: writes $TMPD/h2o/h2o.conf, one thread answering `GET /plaintext` with
# "Hello, world" from an mruby handler (h2o has no fixed-response directive), keep-alive
# two minutes, room for 20000 connections.
h2o_conf() {
    local d=$TMPD/h2o
    mkdir -p "$d"
    cat >"$d/h2o.conf" <<EOF
num-threads: 1
max-connections: 20000
http1-request-timeout: 120
hosts:
  default:
    listen:
      host: 127.0.0.1
      port: $1
    paths:
      /plaintext:
        mruby.handler: |
          Proc.new do |env|
            [200, {"content-type" => "text/plain"}, ["Hello, world"]]
          end
EOF
}

# tls_files DIR: a P-256 key and a self-signed certificate for 127.0.0.1 and localhost in
# DIR (key.pem, cert.pem), and DIR/client.cnf, an OpenSSL configuration that makes a client
# (wrk) offer only ECDHE with AES-128-GCM (TLS 1.3's TLS_AES_128_GCM_SHA256, TLS 1.2's
# ECDHE-ECDSA-AES128-GCM-SHA256): every server is measured with the same cipher.
tls_files() {
    mkdir -p "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
    cat >"$1/client.cnf" <<EOF
openssl_conf = conf
[conf]
ssl_conf = ssl
[ssl]
system_default = sys
[sys]
Ciphersuites = TLS_AES_128_GCM_SHA256
CipherString = ECDHE-ECDSA-AES128-GCM-SHA256
EOF
}

# wrk_json: a wrk script whose done() prints, as its last line, what squall-bench --json
# gives for a load run (requests, requests_per_s, latency_us.p99, errors).
wrk_json() {
    cat <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format('{"requests": %d, "requests_per_s": %.1f, "latency_us": ' ..
        '{"p99": %d}, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, ' ..
        '"timeout": %d}}\n', summary.requests, summary.requests / (summary.duration / 1e6),
        latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
}
