#!/usr/bin/env bash
# Instructions per request under callgrind: a count that does not depend on
# what else the machine is doing, so a change to the hit or pass path can be
# measured on a busy or noisy machine. One worker thread, an nginx origin, wrk
# with 8 connections for 10 s against each process under valgrind; counters
# are zeroed after a warm-up, so start-up is not counted.
#
#   benches/callgrind.sh            # viaduct hit, pass, hit with the access log on; the ceiling
#   benches/callgrind.sh hit        # some of: hit hit-tags hit-shared pass hit-log ceiling
#
# hit-shared: a hit in memory on a node with the shared tier on (a local
# redis-server on port 19202): what the tier costs on the memory-hit path.
#
# Needs valgrind, wrk, nginx (apt-get install -y valgrind wrk nginx-light).
# The profiles stay in $OUT (default /tmp/viaduct-callgrind) for
# `callgrind_annotate --threshold=100 --auto=no FILE`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin"
OUT=${OUT:-/tmp/viaduct-callgrind}
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(hit pass hit-log ceiling)
ORIGIN_PORT=19200 PORT=19201
# VIADUCT=path measures another build (e.g. the previous commit's) the same way.
VIADUCT=${VIADUCT:-./target/release/viaduct}
for tool in valgrind callgrind_control wrk nginx; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release --quiet --bin viaduct --example ceiling
mkdir -p "$OUT/www"
chmod 755 "$OUT"
head -c 1024 /dev/zero | tr '\0' x >"$OUT/www/1k"
chmod -R a+rX "$OUT/www"
cat >"$OUT/origin.conf" <<CONF
worker_processes 1;
pid $OUT/origin.pid;
error_log $OUT/origin-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location /hit/ { alias $OUT/www/; add_header Cache-Control max-age=6000; }
        location /pass/ { alias $OUT/www/; add_header Cache-Control no-store; }
        location /tags/ { alias $OUT/www/; add_header Cache-Control max-age=6000; add_header Surrogate-Key "product-42 category-shoes sale"; }
    }
}
CONF
nginx -c "$OUT/origin.conf" -p "$OUT" -g 'daemon on;'
trap 'kill "$(cat "$OUT/origin.pid")" 2>/dev/null || true' EXIT

conf() { # ACCESS [EXTRA TOML before the route]
    cat <<CONF
[server]
listen = ["127.0.0.1:$PORT"]
workers = 1
[admin]
listen = "127.0.0.1:0"
[log]
access = "$1"
level = "warn"
${2:-}
[[route]]
host = "*"
upstream = "http://127.0.0.1:$ORIGIN_PORT"
CONF
}

# measure NAME PATH CMD...
measure() {
    local name=$1 path=$2
    shift 2
    rm -f "$OUT/$name.out"*
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$@" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$PORT$path" && break; sleep 0.3; done
    for _ in $(seq 200); do curl -fs -o /dev/null "http://127.0.0.1:$PORT$path"; done
    callgrind_control -z "$pid" >/dev/null 2>&1
    local requests
    requests=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$PORT$path" | awk '/requests in/ {print $1}')
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local total
    total=$(callgrind_annotate "$OUT/$name.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    printf '%-8s %7d requests %14d instructions %7d per request\n' \
        "$name" "$requests" "$total" $((total / requests))
}

for case in "${CASES[@]}"; do
    case $case in
        hit) conf off >"$OUT/v.toml"; measure hit /hit/1k "$VIADUCT" -c "$OUT/v.toml" ;;
        # A hit on an entry stored with three tags (issue 16: at most 2% more).
        hit-tags) conf off >"$OUT/v.toml"; measure hit-tags /tags/1k "$VIADUCT" -c "$OUT/v.toml" ;;
        hit-shared)
            redis-server --port 19202 --save '' --appendonly no --daemonize yes --pidfile "$OUT/redis.pid" >/dev/null
            conf off $'[cache.shared]\nredis = ["redis://127.0.0.1:19202"]' >"$OUT/v.toml"
            measure hit-shared /hit/1k "$VIADUCT" -c "$OUT/v.toml"
            redis-cli -p 19202 shutdown nosave >/dev/null 2>&1 || true
            ;;
        pass) conf off >"$OUT/v.toml"; measure pass /pass/1k "$VIADUCT" -c "$OUT/v.toml" ;;
        hit-log)
            conf "$OUT/access.log" >"$OUT/v.toml"
            measure hit-log /hit/1k "$VIADUCT" -c "$OUT/v.toml"
            ;;
        ceiling) measure ceiling /hit/1k ./target/release/examples/ceiling "127.0.0.1:$PORT" 1 ;;
        *) echo "unknown case $case" >&2; exit 2 ;;
    esac
done
