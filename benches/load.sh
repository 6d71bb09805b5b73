#!/usr/bin/env bash
# Load benchmark: viaduct against nginx (proxy_pass with upstream keepalive) in
# front of the same origin, driven by wrk in alternating turns, same run.
#
#   benches/load.sh            # needs: wrk, nginx (apt-get install -y wrk nginx-light)
#
# Scenarios: (a) cache hit of a 1 KiB response (origin: max-age=600; nginx
# peer uses proxy_cache), (c) pass-through of a 1 KiB response the origin marks
# no-store.
# Env: DURATION (default 10s), CONNECTIONS (64), TURNS (3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
TURNS=${TURNS:-3}
ORIGIN_PORT=19100 VIADUCT_PORT=19101 NGINX_PORT=19102

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin"
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx-light" >&2; exit 1; }
done

work=$(mktemp -d)
chmod 755 "$work"   # nginx workers drop root and must read the files
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet
mkdir -p "$work/www" "$work/logs"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/1k"
chmod -R a+rX "$work/www"

# One nginx process serves as origin (ORIGIN_PORT) and as the peer proxy (NGINX_PORT).
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    proxy_cache_path $work/nginx-cache keys_zone=hot:16m max_size=256m;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $work/www;
        location /pass/ { alias $work/www/; add_header Cache-Control no-store; }
        location /hit/ { alias $work/www/; add_header Cache-Control max-age=600; }
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hot;
        }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!)

cat > "$work/viaduct.toml" <<CONF
[server]
listen = ["127.0.0.1:$VIADUCT_PORT"]
[admin]
listen = "127.0.0.1:0"
[log]
access = "off"
level = "warn"
[[route]]
host = "*"
upstream = "http://127.0.0.1:$ORIGIN_PORT"
CONF
./target/release/viaduct -c "$work/viaduct.toml" &
pids+=($!)
sleep 1
for port in $VIADUCT_PORT $NGINX_PORT; do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/pass/1k"
    curl -fsS -o /dev/null "http://127.0.0.1:$port/hit/1k"
done

# wrk prints "Requests/sec: N" and a latency distribution with --latency.
run() {
    local out
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$1$2")
    local rps p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    echo "$rps $p99 ${errors:-none}"
}
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

scenario() {
    local name=$1 path=$2 best_v=0 best_n=0
    echo "== $name"
    for turn in $(seq "$TURNS"); do
        read -r v vp99 verr <<<"$(run $VIADUCT_PORT "$path")"
        read -r n np99 nerr <<<"$(run $NGINX_PORT "$path")"
        printf 'turn %s: viaduct %10.0f req/s p99 %-8s | nginx %10.0f req/s p99 %-8s errors: %s / %s\n' \
            "$turn" "$v" "$vp99" "$n" "$np99" "$verr" "$nerr"
        best_v=$(awk -v a="$best_v" -v b="$v" 'BEGIN{print (b>a)?b:a}')
        best_n=$(awk -v a="$best_n" -v b="$n" 'BEGIN{print (b>a)?b:a}')
    done
    awk -v a="$best_v" -v b="$best_n" -v name="$name" \
        'BEGIN{printf "%s: best viaduct %.0f req/s, nginx %.0f req/s, ratio viaduct/nginx %.2f\n\n", name, a, b, a/b}'
}

echo "wrk -t1 -c$CONNECTIONS -d$DURATION, best of $TURNS alternating turns"
scenario "hit 1 KiB" /hit/1k
scenario "pass-through 1 KiB (no-store)" /pass/1k
printf 'viaduct peak RSS %s KiB\n' "$(rss_kb "${pids[1]}")"
