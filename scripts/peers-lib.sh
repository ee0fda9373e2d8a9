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

# wait_http URL PID: waits up to 10 s for URL to answer 200 while process PID lives.
wait_http() {
    local _
    for _ in $(seq 1 100); do
        curl -fs -o /dev/null --max-time 1 "$1" && return 0
        proc_alive "$2" || { echo "server (pid $2) exited before answering $1" >&2; return 1; }
        sleep 0.1
    done
    echo "no answer from $1 within 10 s" >&2
    return 1
}

# nginx_conf PORT WORKER_CONNECTIONS KEEPALIVE_TIMEOUT: writes $TMPD/nginx/nginx.conf, a
# self-contained configuration (its own prefix, pid file, logs and temp folders) with one
# worker answering `GET /plaintext` as hello does, keep-alive on, no access log.
nginx_conf() {
    local d=$TMPD/nginx
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
        listen 127.0.0.1:$1;
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
