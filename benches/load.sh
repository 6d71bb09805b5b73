#!/usr/bin/env bash
# Load benchmark: viaduct, nginx proxy_cache (upstream keepalive) and Varnish
# (-s malloc) in front of the same nginx origin, driven by wrk in alternating
# turns in one run. Prints a markdown table of req/s, p99, errors and peak RSS,
# with the ratio viaduct/peer.
#
#   benches/load.sh                  # all scenarios
#   benches/load.sh hit1k pass       # some of: hit1k hit100k pass churn
#
# Needs wrk and nginx (apt-get install -y wrk nginx-light); Varnish is used
# when installed (apt-get install -y varnish) and skipped with a message if not.
# Env: DURATION (10s), CONNECTIONS (64), TURNS (3), THREADS (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
TURNS=${TURNS:-3}
THREADS=${THREADS:-1}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(hit1k hit100k pass churn)
ORIGIN_PORT=19100 VIADUCT_PORT=19101 NGINX_PORT=19102 VARNISH_PORT=19103
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
HAVE_VARNISH=1
command -v varnishd >/dev/null || { HAVE_VARNISH=0; echo "varnishd not found: skipping Varnish (apt-get install -y varnish)" >&2; }

work=$(mktemp -d)
chmod 755 "$work"   # nginx workers and varnish drop root and must read here
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/varnish.pid" ] && kill "$(cat "$work/varnish.pid")" 2>/dev/null || true
    sleep 0.2
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
mkdir -p "$work/www" "$work/logs"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/1k"
head -c 102400 /dev/zero | tr '\0' 'y' > "$work/www/100k"
chmod -R a+rX "$work/www"

# The origin: its own nginx, one worker.
cat > "$work/origin.conf" <<CONF
worker_processes 1;
pid $work/origin.pid;
error_log $work/logs/origin-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN_PORT reuseport;
        root $work/www;
        location /hit/ { alias $work/www/; add_header Cache-Control max-age=600; }
        location /pass/ { alias $work/www/; add_header Cache-Control no-store; }
        location /churn/ { try_files /1k =404; add_header Cache-Control max-age=600; }
    }
}
CONF
nginx -c "$work/origin.conf" -p "$work" -g 'daemon off;' &
pids+=($!)

# The nginx peer: proxy_cache with upstream keepalive, as many workers as cores.
cat > "$work/peer.conf" <<CONF
worker_processes auto;
pid $work/peer.pid;
error_log $work/logs/peer-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    proxy_cache_path $work/nginx-cache keys_zone=hot:64m max_size=512m inactive=1h;
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
nginx -c "$work/peer.conf" -p "$work" -g 'daemon off;' &
NGINX_PID=$!
pids+=($NGINX_PID)

# viaduct: worker threads = cores (its default).
cat > "$work/viaduct.toml" <<CONF
[server]
listen = ["127.0.0.1:$VIADUCT_PORT"]
[admin]
listen = "127.0.0.1:0"
[cache]
capacity = "512MiB"
[log]
access = "off"
level = "warn"
[[route]]
host = "*"
upstream = "http://127.0.0.1:$ORIGIN_PORT"
CONF
./target/release/viaduct -c "$work/viaduct.toml" &
VIADUCT_PID=$!
pids+=($VIADUCT_PID)

if [ $HAVE_VARNISH = 1 ]; then
    mkdir -p "$work/varnish"
    varnishd -a 127.0.0.1:$VARNISH_PORT -b 127.0.0.1:$ORIGIN_PORT -s malloc,512m \
        -n "$work/varnish" -P "$work/varnish.pid" -p default_ttl=0 >"$work/logs/varnish.log" 2>&1 \
        || { HAVE_VARNISH=0; echo "varnishd did not start: skipping Varnish ($(tail -1 "$work/logs/varnish.log"))" >&2; }
fi
sleep 1

# Warm every cache on the hit paths.
for port in $VIADUCT_PORT $NGINX_PORT $([ $HAVE_VARNISH = 1 ] && echo $VARNISH_PORT); do
    for path in /hit/1k /hit/100k /pass/1k; do curl -fsS -o /dev/null "http://127.0.0.1:$port$path"; done
done

cat > "$work/churn.lua" <<'LUA'
-- 100k distinct keys, picked at random: a working set that mostly misses at first.
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/churn/" .. math.random(1, 100000))
end
LUA

# Peak RSS (KiB) of a process and its children.
rss_kb() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" 2>/dev/null || true); do
        total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo $total
}
varnish_root() { [ -f "$work/varnish.pid" ] && cat "$work/varnish.pid" || echo 0; }

# run PORT SCENARIO → "req/s p99 errors"
run() {
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency)
    local url="http://127.0.0.1:$1"
    case $2 in
        hit1k) url="$url/hit/1k" ;;
        hit100k) url="$url/hit/100k" ;;
        pass) url="$url/pass/1k" ;;
        churn) args+=(-s "$work/churn.lua") ;;
    esac
    local out rps p99 errors
    out=$(wrk "${args[@]}" "$url")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {for (i=3;i<=NF;i+=2) n+=$i} END {print n+0}' <<<"$out")
    echo "$rps $p99 $errors"
}

declare -A BEST P99 ERR
contenders=(viaduct nginx)
[ $HAVE_VARNISH = 1 ] && contenders+=(varnish)
port_of() { case $1 in viaduct) echo $VIADUCT_PORT ;; nginx) echo $NGINX_PORT ;; varnish) echo $VARNISH_PORT ;; esac; }

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, best of $TURNS alternating turns, $(nproc) cores" >&2
for scenario in "${SCENARIOS[@]}"; do
    for turn in $(seq "$TURNS"); do
        for who in "${contenders[@]}"; do
            read -r rps p99 errors <<<"$(run "$(port_of "$who")" "$scenario")"
            echo "  $scenario turn $turn: $who $rps req/s p99 $p99 errors $errors" >&2
            key="$scenario/$who"
            if awk -v a="$rps" -v b="${BEST[$key]:-0}" 'BEGIN{exit !(a>b)}'; then
                BEST[$key]=$rps
                P99[$key]=$p99
            fi
            ERR[$key]=$(( ${ERR[$key]:-0} + errors ))
        done
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }'; }
echo
header="| scenario | viaduct req/s | p99 | errors | nginx req/s | p99 | viaduct/nginx |"
rule="| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
if [ $HAVE_VARNISH = 1 ]; then
    header="$header varnish req/s | p99 | viaduct/varnish |"
    rule="$rule ---: | ---: | ---: |"
fi
echo "$header"
echo "$rule"
for scenario in "${SCENARIOS[@]}"; do
    v=${BEST[$scenario/viaduct]:-0} n=${BEST[$scenario/nginx]:-0}
    line="| $scenario | $v | ${P99[$scenario/viaduct]:-} | ${ERR[$scenario/viaduct]:-0} | $n | ${P99[$scenario/nginx]:-} | $(ratio "$v" "$n") |"
    if [ $HAVE_VARNISH = 1 ]; then
        w=${BEST[$scenario/varnish]:-0}
        line="$line $w | ${P99[$scenario/varnish]:-} | $(ratio "$v" "$w") |"
    fi
    echo "$line"
done
echo
echo "peak RSS: viaduct $(( $(rss_kb $VIADUCT_PID) / 1024 )) MiB, nginx peer $(( $(rss_kb $NGINX_PID) / 1024 )) MiB$([ $HAVE_VARNISH = 1 ] && echo ", varnish $(( $(rss_kb "$(varnish_root)") / 1024 )) MiB")"
