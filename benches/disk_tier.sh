#!/usr/bin/env bash
# The disk tier (issue 19) against nginx proxy_cache, the same run:
#
#   benches/disk_tier.sh hits      disk-hit req/s for 1 KiB and 1 MiB objects, page cache
#                                  warm and cold (dropped before the run, when allowed)
#   benches/disk_tier.sh restart   time to the first disk hit, and until the index is
#                                  whole, after a restart with OBJECTS (1,000,000) on disk
#   benches/disk_tier.sh rss       viaduct's RSS while serving a working set 10x its
#                                  memory tier
#   benches/disk_tier.sh large     32 MiB objects (too large for memory): the miss that
#                                  writes them to disk as they stream, the disk hit
#
# viaduct's memory tier is kept small (4 MiB) so that requests spread over many URLs
# are answered by the disk; nginx's proxy_cache always serves from its files.
# Needs wrk and nginx (apt-get install -y wrk nginx-light). Env: DURATION (8s),
# ROUNDS (3, best of), CONNECTIONS (64), OBJECTS, OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin"
WHAT=${1:-hits}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
OUT=${OUT:-/tmp/viaduct-disk-bench}
ORIGIN=19311 CACHE=19312 VIADUCT=19313 ADMIN=19314
for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
cargo build --release --quiet --bin viaduct
rm -rf "$OUT" && mkdir -p "$OUT/www" "$OUT/ngx-cache" "$OUT/disk"
chmod 755 "$OUT"
head -c 1024 /dev/urandom >"$OUT/www/1k.bin"
head -c 1048576 /dev/urandom >"$OUT/www/1m.bin"
head -c 65536 /dev/urandom >"$OUT/www/64k.bin"
head -c 33554432 /dev/urandom >"$OUT/www/32m.bin"
chmod -R a+rX "$OUT"
cat >"$OUT/nginx.conf" <<CONF
worker_processes 2;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    proxy_cache_path $OUT/ngx-cache levels=1:2 keys_zone=z:256m max_size=20g inactive=1d use_temp_path=off;
    server {
        listen 127.0.0.1:$ORIGIN;
        root $OUT/www;
        add_header Cache-Control "max-age=86400";
        location /k/ { rewrite ^ /1k.bin break; }
        location /m/ { rewrite ^ /1m.bin break; }
        location /s/ { rewrite ^ /64k.bin break; }
        location /b/ { rewrite ^ /32m.bin break; }
        location /t/ { return 200 "x"; }
    }
    server {
        listen 127.0.0.1:$CACHE;
        location / {
            proxy_pass http://127.0.0.1:$ORIGIN;
            proxy_cache z;
            proxy_cache_valid 200 1d;
        }
    }
}
CONF
config() {
    cat >"$OUT/viaduct.toml" <<CONF
[server]
listen = ["127.0.0.1:$VIADUCT"]
workers = 2
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
access = "off"
level = "warn"
[cache]
capacity = "${1:-4MiB}"
max_object_size = "2MiB"
[cache.disk]
path = "$OUT/disk"
capacity = "20GiB"
[[route]]
host = "*"
upstream = "http://127.0.0.1:$ORIGIN"
CONF
}
nginx -c "$OUT/nginx.conf" -p "$OUT" -g 'daemon on;'
VPID=
start_viaduct() {
    ./target/release/viaduct -c "$OUT/viaduct.toml" 2>"$OUT/viaduct.log" &
    VPID=$!
    for _ in $(seq 3000); do curl -fs -o /dev/null "http://127.0.0.1:$ADMIN/healthz" && return; sleep 0.01; done
}
stop_viaduct() { kill "$VPID" 2>/dev/null || true; wait "$VPID" 2>/dev/null || true; }
trap 'kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true; stop_viaduct' EXIT

# A wrk script asking for /$1/<0..N-1> at random.
cat >"$OUT/spread.lua" <<'LUA'
local prefix = os.getenv("PREFIX")
local n = tonumber(os.getenv("N"))
request = function()
    return wrk.format(nil, "/" .. prefix .. "/" .. math.random(0, n - 1))
end
LUA
# A wrk script asking for /$PREFIX/<i> once each: thread t of T asks for t, t+T, ...
cat >"$OUT/fill.lua" <<'LUA'
local threads = 0
function setup(thread)
    thread:set("first", threads)
    threads = threads + 1
end
function init(args)
    i = first - 2
end
request = function()
    i = i + 2
    return wrk.format(nil, "/" .. os.getenv("PREFIX") .. "/" .. i)
end
LUA

fill() { # PORT PREFIX N: asks for each URL once
    local i
    for i in $(seq 0 $(($3 - 1))); do echo "url = \"http://127.0.0.1:$1/$2/$i\""; echo "output = /dev/null"; done >"$OUT/urls"
    curl -s -K "$OUT/urls" --parallel --parallel-max 4 2>/dev/null
}
run() { # PORT PREFIX N -> "req/s p99"
    local out
    out=$(PREFIX=$2 N=$3 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/spread.lua" "http://127.0.0.1:$1")
    echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")"
}
disk_writes() { curl -s "http://127.0.0.1:$ADMIN/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin)["disk"]; print(d["writes"], d["writes_dropped"])'; }
settle() { # waits until the disk writers are idle
    local last="" now
    while now=$(disk_writes) && [ "$now" != "$last" ]; do last=$now; sleep 1; done
    echo "disk writes, dropped: $now" >&2
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null && echo dropped || echo kept; }

case "$WHAT" in
hits)
    config
    start_viaduct
    echo "| objects | page cache | viaduct req/s | p99 | nginx req/s | p99 | viaduct/nginx |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    for spec in "k 20000 1 KiB" "m 400 1 MiB"; do
        read -r prefix n label unit <<<"$spec"
        fill $VIADUCT "$prefix" "$n"
        settle
        # Again: what the writers dropped while the fill outran them is
        # fetched and offered once more.
        fill $VIADUCT "$prefix" "$n"
        settle
        fill $CACHE "$prefix" "$n"
        for cache in warm cold; do
            # Best of ROUNDS, taking turns: on two shared cores one run
            # of either swings by a third.
            v=0 g=0
            for _ in $(seq "$ROUNDS"); do
                if [ $cache = cold ]; then state=$(drop); else state=warm; fi
                read -r v1 p1 < <(run $VIADUCT "$prefix" "$n")
                [ $cache = cold ] && state=$(drop)
                read -r g1 p2 < <(run $CACHE "$prefix" "$n")
                if awk -v a="$v1" -v b="$v" 'BEGIN {exit !(a > b)}'; then v=$v1 p99v=$p1; fi
                if awk -v a="$g1" -v b="$g" 'BEGIN {exit !(a > b)}'; then g=$g1 p99g=$p2; fi
            done
            ratio=$(awk -v a="$v" -v b="$g" 'BEGIN {printf "%.2f", a / b}')
            echo "| $n x $label $unit | $state | $v | $p99v | $g | $p99g | **$ratio** |"
        done
    done
    curl -s "http://127.0.0.1:$ADMIN/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin)["disk"]; print("disk:", d)'
    ;;
restart)
    OBJECTS=${OBJECTS:-1000000}
    config
    start_viaduct
    echo "filling $OBJECTS objects..."
    t0=$(date +%s)
    PREFIX=t wrk -t2 -c64 -d"$((OBJECTS / 1000 + 60))s" -s "$OUT/fill.lua" "http://127.0.0.1:$VIADUCT" >/dev/null &
    WRK=$!
    while kill -0 $WRK 2>/dev/null; do
        stored=$(curl -s "http://127.0.0.1:$ADMIN/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["disk"]["writes"])')
        if [ "$stored" -ge "$OBJECTS" ]; then kill $WRK; break; fi
        sleep 2
    done
    wait $WRK 2>/dev/null || true
    sleep 3
    echo "filled in $(($(date +%s) - t0)) s: $(find "$OUT/disk/v1" -type f | wc -l) files, $(du -sh "$OUT/disk" | cut -f1)"
    stop_viaduct
    for cache in warm cold; do
        [ $cache = cold ] && drop >/dev/null
        t0=$(date +%s%N)
        start_viaduct
        up=$((($(date +%s%N) - t0) / 1000000))
        first=
        while [ -z "$first" ]; do
            if curl -s -D - -o /dev/null "http://127.0.0.1:$VIADUCT/t/7" | grep -qi 'detail=disk'; then
                first=$((($(date +%s%N) - t0) / 1000000))
            else
                sleep 0.01
            fi
        done
        while [ "$(curl -s "http://127.0.0.1:$ADMIN/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["disk"]["recovering"])')" = True ]; do sleep 0.2; done
        whole=$((($(date +%s%N) - t0) / 1000000))
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$VPID/status")
        echo "page cache $cache: listening after $up ms, first disk hit after $first ms, index whole after $whole ms, RSS $((rss / 1024)) MiB"
        stop_viaduct
    done
    ;;
rss)
    config 64MiB
    start_viaduct
    n=10240 # x 64 KiB = 640 MiB, 10x the memory tier
    fill $VIADUCT s $n
    sleep 3
    base=$(awk '/VmRSS/ {print $2}' "/proc/$VPID/status")
    read -r v p99 < <(run $VIADUCT s $n)
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$VPID/status")
    now=$(awk '/VmRSS/ {print $2}' "/proc/$VPID/status")
    echo "working set $n x 64 KiB (640 MiB), memory tier 64 MiB: $v req/s, p99 $p99; RSS after the fill $((base / 1024)) MiB, after the run $((now / 1024)) MiB, peak $((peak / 1024)) MiB"
    curl -s "http://127.0.0.1:$ADMIN/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("memory entries:", d["cache"]["entries"] if "cache" in d else "?", "disk:", d["disk"])'
    ;;
large)
    # Objects too large for memory (32 MiB, memory's limit 2 MiB): the miss
    # that spools them to disk against the same miss without a disk tier,
    # then the disk hits; RSS over the whole run.
    n=24
    get_all() { # PORT -> seconds for n sequential GETs of /b/0..n-1
        local t0 i
        t0=$(date +%s%N)
        for i in $(seq 0 $((n - 1))); do curl -fs -o /dev/null "http://127.0.0.1:$1/b/$i"; done
        awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN {printf "%.2f", ns / 1e9}'
    }
    config
    sed -i '/^\[cache.disk\]/,/^capacity/d' "$OUT/viaduct.toml"
    start_viaduct
    plain=$(get_all $VIADUCT)
    stop_viaduct
    config
    start_viaduct
    spooled=$(get_all $VIADUCT)
    settle
    hits=$(get_all $VIADUCT)
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$VPID/status")
    ngx_miss=$(get_all $CACHE)
    ngx_hit=$(get_all $CACHE)
    mb=$((n * 32))
    rate() { awk -v s="$1" -v mb=$mb 'BEGIN {printf "%.0f MiB/s", mb / s}'; }
    echo "$n x 32 MiB, one at a time: miss without a disk tier $(rate "$plain"), miss spooled to disk $(rate "$spooled"), disk hit $(rate "$hits"); nginx miss $(rate "$ngx_miss"), hit $(rate "$ngx_hit"); viaduct peak RSS $((peak / 1024)) MiB"
    ;;
esac
