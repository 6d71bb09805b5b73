#!/usr/bin/env bash
# Static files: viaduct's `root` route against nginx `root`, the same two
# files (1 KiB and 1 MiB) from the same directory, wrk in alternating turns.
# Prints req/s, p99 and the ratio viaduct/nginx per file.
#
#   benches/files.sh
#
# Needs wrk and nginx (apt-get install -y wrk nginx-light).
# Env: DURATION (8s), CONNECTIONS (64), TURNS (2), WORKERS (cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin"
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-64}
TURNS=${TURNS:-2}
WORKERS=${WORKERS:-$(nproc)}
OUT=${OUT:-/tmp/viaduct-files-bench}
NGINX_PORT=19301 VIADUCT_PORT=19302
for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
cargo build --release --quiet --bin viaduct
mkdir -p "$OUT/www"
chmod 755 "$OUT"
head -c 1024 /dev/urandom >"$OUT/www/1k.bin"
head -c 1048576 /dev/urandom >"$OUT/www/1m.bin"
chmod -R a+rX "$OUT/www"
cat >"$OUT/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=20s;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $OUT/www;
    }
}
CONF
cat >"$OUT/viaduct.toml" <<CONF
[server]
listen = ["127.0.0.1:$VIADUCT_PORT"]
workers = $WORKERS
[admin]
listen = "127.0.0.1:0"
[log]
access = "off"
level = "warn"
[[route]]
host = "*"
root = "$OUT/www"
CONF
nginx -c "$OUT/nginx.conf" -p "$OUT" -g 'daemon on;'
./target/release/viaduct -c "$OUT/viaduct.toml" &
VIADUCT=$!
trap 'kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true; kill $VIADUCT 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$VIADUCT_PORT/1k.bin" && break; sleep 0.1; done

# run PORT PATH -> "req/s p99"
run() {
    local out rps p99
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$1$2")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "$rps $p99"
}

echo "| file | viaduct req/s | p99 | nginx req/s | p99 | viaduct/nginx |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for file in ${FILES:-1k.bin 1m.bin}; do
    best_v=0 best_n=0 p99_v= p99_n=
    for _ in $(seq "$TURNS"); do
        read -r rps p99 < <(run $VIADUCT_PORT "/$file")
        if awk -v a="$rps" -v b="$best_v" 'BEGIN {exit !(a > b)}'; then best_v=$rps p99_v=$p99; fi
        read -r rps p99 < <(run $NGINX_PORT "/$file")
        if awk -v a="$rps" -v b="$best_n" 'BEGIN {exit !(a > b)}'; then best_n=$rps p99_n=$p99; fi
    done
    ratio=$(awk -v a="$best_v" -v b="$best_n" 'BEGIN {printf "%.2f", a / b}')
    echo "| $file | $best_v | $p99_v | $best_n | $p99_n | **$ratio** |"
done
