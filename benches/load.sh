#!/usr/bin/env bash
# Load benchmark: viaduct, nginx proxy_cache (upstream keepalive) and Varnish
# (-s malloc) in front of the same nginx origin, plus the ceiling (a bare hyper
# server answering the same bytes from memory, benches/ceiling.rs), driven by
# wrk in alternating turns in one run. Prints a markdown table of req/s, p99,
# errors and peak RSS, with the ratios viaduct/peer and viaduct/ceiling.
#
#   benches/load.sh                  # all scenarios
#   benches/load.sh hit1k pass       # some of: hit1k hit100k pass churn hit1k-log
#                                    #          tls-hit1k h2-hit1k hit1k-group pass-group
#
# Every access log is off except in hit1k-log, where viaduct, nginx and
# Varnish (varnishncsa) each log every request to a file. tls-hit1k (wrk,
# HTTP/1.1 over TLS, keep-alive) and h2-hit1k (h2load, h2 over TLS, 10 streams
# per connection) compare viaduct's TLS listener with nginx `ssl http2` and
# the same cache (Varnish has no TLS; the ceiling is plain HTTP).
# hit1k-group and pass-group compare a route to an [[upstream.group]] of two
# servers (the origin on two ports) with the single-URL route, in one run.
#
# Needs wrk and nginx (apt-get install -y wrk nginx-light), openssl, and for
# h2-hit1k h2load (apt-get install -y nghttp2-client); Varnish is used when
# installed (apt-get install -y varnish) and skipped with a message if not.
# Env: DURATION (10s), CONNECTIONS (64), TURNS (3), THREADS (1),
#   WORKERS (worker threads/processes of viaduct, nginx and the ceiling;
#            default: cores, or 1 with PIN=1),
#   PIN=1   (servers on core 0, wrk on core 1: per-core numbers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
TURNS=${TURNS:-3}
THREADS=${THREADS:-1}
PIN=${PIN:-0}
if [ "$PIN" = 1 ]; then WORKERS=${WORKERS:-1}; else WORKERS=${WORKERS:-$(nproc)}; fi
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(hit1k hit100k pass churn hit1k-log tls-hit1k h2-hit1k)
ORIGIN_PORT=19100 VIADUCT_PORT=19101 NGINX_PORT=19102 VARNISH_PORT=19103
CEILING_PORT=19104 VIADUCT_LOG_PORT=19105 NGINX_LOG_PORT=19106
VIADUCT_TLS_PORT=19107 NGINX_TLS_PORT=19108 VIADUCT_GROUP_PORT=19109 ORIGIN_PORT2=19110
# PIN=1: the servers share core 0, wrk has core 1.
SERVE=() LOAD=()
if [ "$PIN" = 1 ]; then SERVE=(taskset -c 0) LOAD=(taskset -c 1); fi
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
    [ -f "$work/ncsa.pid" ] && kill "$(cat "$work/ncsa.pid")" 2>/dev/null || true
    sleep 0.2
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --bin viaduct --example ceiling
mkdir -p "$work/www" "$work/logs"
# One self-signed certificate for both TLS listeners (P-256, as most sites).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$work/site.key" -out "$work/site.pem" 2>/dev/null
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
        listen 127.0.0.1:$ORIGIN_PORT2 reuseport;
        root $work/www;
        location /hit/ { alias $work/www/; add_header Cache-Control max-age=600; }
        location /pass/ { alias $work/www/; add_header Cache-Control no-store; }
        location /churn/ { try_files /1k =404; add_header Cache-Control max-age=600; }
    }
}
CONF
"${SERVE[@]}" nginx -c "$work/origin.conf" -p "$work" -g 'daemon off;' &
pids+=($!)

# The nginx peer: proxy_cache with upstream keepalive, WORKERS processes; a
# second server logs every request (hit1k-log).
cat > "$work/peer.conf" <<CONF
worker_processes $WORKERS;
pid $work/peer.pid;
error_log $work/logs/peer-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # As viaduct: no cap on requests per client connection (nginx's default
    # 1000 closes an h2 connection, and h2load does not reconnect).
    keepalive_requests 1000000;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    proxy_cache_path $work/nginx-cache keys_zone=hot:64m max_size=512m inactive=1h;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $work/site.pem;
        ssl_certificate_key $work/site.key;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hot;
        }
    }
    server {
        listen 127.0.0.1:$NGINX_LOG_PORT;
        access_log $work/logs/nginx-access.log combined;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hot;
        }
    }
}
CONF
"${SERVE[@]}" nginx -c "$work/peer.conf" -p "$work" -g 'daemon off;' &
NGINX_PID=$!
pids+=($NGINX_PID)

# viaduct: WORKERS worker threads; a second instance logs every request to a
# file (hit1k-log).
viaduct_conf() { # PORT ACCESS
    cat <<CONF
[server]
listen = ["127.0.0.1:$1"]
workers = $WORKERS
[admin]
listen = "127.0.0.1:0"
[cache]
capacity = "512MiB"
[log]
access = "$2"
level = "warn"
[[route]]
host = "*"
upstream = "http://127.0.0.1:$ORIGIN_PORT"
CONF
}
viaduct_conf $VIADUCT_PORT off > "$work/viaduct.toml"
cat >> "$work/viaduct.toml" <<CONF
[tls]
listen = ["127.0.0.1:$VIADUCT_TLS_PORT"]
[[tls.certificate]]
cert = "$work/site.pem"
key = "$work/site.key"
CONF
viaduct_conf $VIADUCT_LOG_PORT "$work/logs/viaduct-access.log" > "$work/viaduct-log.toml"
"${SERVE[@]}" ./target/release/viaduct -c "$work/viaduct.toml" &
VIADUCT_PID=$!
pids+=($VIADUCT_PID)
"${SERVE[@]}" ./target/release/viaduct -c "$work/viaduct-log.toml" &
pids+=($!)
# The same viaduct with its route on a group of two servers.
viaduct_conf $VIADUCT_GROUP_PORT off | sed "s|^upstream = .*|upstream = \"app\"|" > "$work/viaduct-group.toml"
cat >> "$work/viaduct-group.toml" <<CONF
[[upstream.group]]
name = "app"
servers = ["http://127.0.0.1:$ORIGIN_PORT", "http://127.0.0.1:$ORIGIN_PORT2"]
CONF
"${SERVE[@]}" ./target/release/viaduct -c "$work/viaduct-group.toml" &
pids+=($!)
"${SERVE[@]}" ./target/release/examples/ceiling 127.0.0.1:$CEILING_PORT "$WORKERS" &
pids+=($!)

if [ $HAVE_VARNISH = 1 ]; then
    mkdir -p "$work/varnish"
    "${SERVE[@]}" varnishd -a 127.0.0.1:$VARNISH_PORT -b 127.0.0.1:$ORIGIN_PORT -s malloc,512m \
        -n "$work/varnish" -P "$work/varnish.pid" -p default_ttl=0 >"$work/logs/varnish.log" 2>&1 \
        || { HAVE_VARNISH=0; echo "varnishd did not start: skipping Varnish ($(tail -1 "$work/logs/varnish.log"))" >&2; }
fi
sleep 1

# Warm every cache on the hit paths.
for port in $VIADUCT_PORT $VIADUCT_LOG_PORT $VIADUCT_GROUP_PORT $NGINX_PORT $NGINX_LOG_PORT $([ $HAVE_VARNISH = 1 ] && echo $VARNISH_PORT); do
    for path in /hit/1k /hit/100k /pass/1k; do curl -fsS -o /dev/null "http://127.0.0.1:$port$path"; done
done
for port in $VIADUCT_TLS_PORT $NGINX_TLS_PORT; do
    curl -fsSk -o /dev/null "https://127.0.0.1:$port/hit/1k"
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
    if [ "$2" = h2-hit1k ]; then
        # h2load reports the mean time per request, not a p99.
        local out
        out=$("${LOAD[@]}" h2load -t"$THREADS" -c"$CONNECTIONS" -m10 -D "${DURATION%s}" \
            "https://127.0.0.1:$1/hit/1k" 2>&1)
        awk '/^finished in/ {rps=$4} /^requests:/ {err=$10+$12+$14}
             /^time for request:/ {mean=$6} END {print rps, "mean:" mean, err+0}' <<<"$out"
        return
    fi
    case $2 in
        tls-hit1k) url="https://127.0.0.1:$1/hit/1k" ;;
        hit1k | hit1k-log | hit1k-group) url="$url/hit/1k" ;;
        pass-group) url="$url/pass/1k" ;;
        hit100k) url="$url/hit/100k" ;;
        pass) url="$url/pass/1k" ;;
        churn) args+=(-s "$work/churn.lua") ;;
    esac
    local out rps p99 errors
    out=$("${LOAD[@]}" wrk "${args[@]}" "$url")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {for (i=3;i<=NF;i+=2) n+=$i} END {print n+0}' <<<"$out")
    echo "$rps $p99 $errors"
}

declare -A BEST P99 ERR
port_of() { # WHO SCENARIO
    case $1/$2 in
        group/*) echo $VIADUCT_GROUP_PORT ;;
        viaduct/tls-* | viaduct/h2-*) echo $VIADUCT_TLS_PORT ;;
        nginx/tls-* | nginx/h2-*) echo $NGINX_TLS_PORT ;;
        viaduct/hit1k-log) echo $VIADUCT_LOG_PORT ;;
        viaduct/*) echo $VIADUCT_PORT ;;
        nginx/hit1k-log) echo $NGINX_LOG_PORT ;;
        nginx/*) echo $NGINX_PORT ;;
        varnish/*) echo $VARNISH_PORT ;;
        ceiling/*) echo $CEILING_PORT ;;
    esac
}
# The ceiling only answers from memory: it has a row where viaduct hits.
contenders_of() {
    local who=(viaduct nginx)
    case $1 in tls-* | h2-*) echo "${who[@]}"; return ;; esac
    case $1 in *-group) echo viaduct group; return ;; esac
    [ $HAVE_VARNISH = 1 ] && who+=(varnish)
    case $1 in hit*) who+=(ceiling) ;; esac
    echo "${who[@]}"
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, best of $TURNS alternating turns, $(nproc) cores, WORKERS=$WORKERS PIN=$PIN" >&2
for scenario in "${SCENARIOS[@]}"; do
    if [ "$scenario" = hit1k-log ] && [ $HAVE_VARNISH = 1 ]; then
        varnishncsa -n "$work/varnish" -w "$work/logs/varnish-access.log" -D -P "$work/ncsa.pid"
    fi
    for turn in $(seq "$TURNS"); do
        for who in $(contenders_of "$scenario"); do
            read -r rps p99 errors <<<"$(run "$(port_of "$who" "$scenario")" "$scenario")"
            echo "  $scenario turn $turn: $who $rps req/s p99 $p99 errors $errors" >&2
            key="$scenario/$who"
            if awk -v a="$rps" -v b="${BEST[$key]:-0}" 'BEGIN{exit !(a>b)}'; then
                BEST[$key]=$rps
                P99[$key]=$p99
            fi
            ERR[$key]=$(( ${ERR[$key]:-0} + errors ))
        done
    done
    if [ -f "$work/ncsa.pid" ]; then
        kill "$(cat "$work/ncsa.pid")" 2>/dev/null || true
        rm -f "$work/ncsa.pid"
    fi
done
for f in "$work"/logs/*-access.log; do
    [ -f "$f" ] && echo "  $(basename "$f"): $(wc -l <"$f") lines" >&2
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }'; }
echo
header="| scenario | viaduct req/s | p99 | errors | nginx req/s | p99 | viaduct/nginx |"
rule="| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
if [ $HAVE_VARNISH = 1 ]; then
    header="$header varnish req/s | p99 | viaduct/varnish |"
    rule="$rule ---: | ---: | ---: |"
fi
header="$header ceiling req/s | viaduct/ceiling |"
rule="$rule ---: | ---: |"
echo "$header"
echo "$rule"
for scenario in "${SCENARIOS[@]}"; do
    case $scenario in *-group) continue ;; esac
    v=${BEST[$scenario/viaduct]:-0} n=${BEST[$scenario/nginx]:-0}
    line="| $scenario | $v | ${P99[$scenario/viaduct]:-} | ${ERR[$scenario/viaduct]:-0} | $n | ${P99[$scenario/nginx]:-} | $(ratio "$v" "$n") |"
    if [ $HAVE_VARNISH = 1 ]; then
        w=${BEST[$scenario/varnish]:-0}
        line="$line $w | ${P99[$scenario/varnish]:-} | $(ratio "$v" "$w") |"
    fi
    c=${BEST[$scenario/ceiling]:-0}
    line="$line $c | $(ratio "$v" "$c") |"
    echo "$line"
done
echo
echo "peak RSS: viaduct $(( $(rss_kb $VIADUCT_PID) / 1024 )) MiB, nginx peer $(( $(rss_kb $NGINX_PID) / 1024 )) MiB$([ $HAVE_VARNISH = 1 ] && echo ", varnish $(( $(rss_kb "$(varnish_root)") / 1024 )) MiB")"
group_rows=0
for scenario in "${SCENARIOS[@]}"; do
    case $scenario in *-group) ;; *) continue ;; esac
    if [ $group_rows = 0 ]; then
        echo
        echo "| scenario | single-URL route req/s | p99 | group of 2 req/s | p99 | group/single |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
        group_rows=1
    fi
    v=${BEST[$scenario/viaduct]:-0} g=${BEST[$scenario/group]:-0}
    echo "| $scenario | $v | ${P99[$scenario/viaduct]:-} | $g | ${P99[$scenario/group]:-} | $(ratio "$g" "$v") |"
done
