#!/usr/bin/env bash
# Soak test: DURATION seconds of mixed traffic at the highest rate the machine
# sustains, against one viaduct in front of an nginx origin, sampling the
# proxy's RSS and open descriptors every INTERVAL seconds.
#
#   benches/soak.sh                       # 10 minutes
#   DURATION=60 benches/soak.sh           # a quick run
#
# Traffic, all at once:
# - reverse: wrk (THREADS threads, CONNECTIONS connections, no rate limit) over
#   10,000 cacheable URLs (9,000 of 1 KiB, 1,000 of 100 KiB; max-age=MAX_AGE, so
#   they expire and are revalidated during the run) and 1,100 no-store ones
#   (pass-through; the proxy counts those as misses): hits, misses,
#   revalidations and passes;
# - forward: a second wrk, 2 connections, absolute-form requests through the
#   forward proxy (1,000 cacheable URLs and no-store ones);
# - purges: every second, by URL (200, or 404 when the URL was not cached) and
#   by prefix (reverse and forward) on the admin listener;
# - tunnels: CONNECT to the origin port through the forward proxy (curl -p),
#   two requests per tunnel, a few tunnels a second;
# - aborted clients, several a second: half a request head, a full request
#   closed before reading, a 4 MiB body cut in the middle (reverse, forward,
#   pass-through and cache fill, and in a tunnel), half a CONNECT, a tunnel
#   closed in the middle of a request, a connection that sends nothing.
# Every INTERVAL seconds the proxy's VmRSS, its open descriptors and a scrape
# of /metrics (requests by cache status, tunnels, cache entries and bytes,
# upstream errors) go to $OUT/samples.csv. The metrics have no status label:
# responses by status come from the clients (wrk, curl).
#
# At the end the traffic stops, the proxy gets SETTLE seconds to close
# connections (the soak config sets [upstream] idle_timeout = "5s" so pooled
# origin connections close too), a final sample is taken and a summary
# printed. Exit status 1 if: the proxy died, any error the traffic did not ask
# for (wrk non-2xx/3xx or socket errors, unexpected purge/tunnel statuses,
# refused connections), RSS more than RSS_LIMIT % above the warm-up sample, or
# descriptors at the end more than FD_MARGIN above the baseline (taken before
# any traffic). The warm-up sample is the first at or after 20 % of the run,
# and no earlier than MAX_AGE + INTERVAL: the working set is only complete
# once its entries have expired and been revalidated (304) once, which costs
# RSS a one-time step (about +7 % in a 60 s run on 2 cores).
#
# Needs wrk, nginx and curl (apt-get install -y wrk nginx-light curl); installs
# nothing.
# Env: DURATION (600 s), OUT (/tmp/viaduct-soak: samples.csv, wrk outputs, loop
#   logs, the proxy's log), CONNECTIONS (64), THREADS (2), INTERVAL (10 s),
#   SETTLE (10 s), MAX_AGE (30 s), RSS_LIMIT (5 %), FD_MARGIN (5),
#   BASE_PORT (19300: origin, proxy = +1, admin = +2),
#   TRAFFIC (some of "reverse forward purge tunnel abort", default all: to
#            find which part of the traffic a problem comes from),
#   VIADUCT (./target/release/viaduct; set it to skip the build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

DURATION=${DURATION:-600}
OUT=${OUT:-/tmp/viaduct-soak}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
INTERVAL=${INTERVAL:-10}
SETTLE=${SETTLE:-10}
MAX_AGE=${MAX_AGE:-30}
RSS_LIMIT=${RSS_LIMIT:-5}
FD_MARGIN=${FD_MARGIN:-5}
BASE_PORT=${BASE_PORT:-19300}
TRAFFIC=${TRAFFIC:-reverse forward purge tunnel abort}
on() { case " $TRAFFIC " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
ORIGIN_PORT=$BASE_PORT PROXY_PORT=$((BASE_PORT + 1)) ADMIN_PORT=$((BASE_PORT + 2))

for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx-light curl" >&2; exit 1; }
done
case $DURATION in '' | *[!0-9]*) echo "DURATION is whole seconds, not '$DURATION'" >&2; exit 2 ;; esac
# At least one sample after the warm-up one (see warm_t below).
[ "$DURATION" -ge $((MAX_AGE + 2 * INTERVAL)) ] && [ "$DURATION" -ge $((2 * INTERVAL)) ] ||
    { echo "DURATION must be at least MAX_AGE + 2 * INTERVAL ($((MAX_AGE + 2 * INTERVAL)) s)" >&2; exit 2; }

if [ -z "${VIADUCT:-}" ]; then
    cargo build --release --quiet --bin viaduct
    VIADUCT=./target/release/viaduct
fi

work=$(mktemp -d)
chmod 755 "$work" # nginx workers drop root and must read here
mkdir -p "$OUT" "$work/www"
rm -f "$OUT"/{samples.csv,wrk-reverse.txt,wrk-forward.txt,purge.log,tunnel.log,abort.log,viaduct.log,origin-error.log}
pids=() loops=()
cleanup() {
    touch "$work/stop" 2>/dev/null || true
    for p in "${loops[@]}"; do
        pkill -P "$p" 2>/dev/null || true
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -f "$work/origin-error.log" ] && cp "$work/origin-error.log" "$OUT/" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

head -c 1024 /dev/zero | tr '\0' x >"$work/www/1k"
head -c 102400 /dev/zero | tr '\0' y >"$work/www/100k"
head -c 4194304 /dev/zero | tr '\0' z >"$work/www/4m"
chmod -R a+rX "$work/www"

# The origin: /c/ cacheable for MAX_AGE, /p/ no-store; /c/1k/<n> etc. all exist
# (static files answer conditional requests with 304).
cat >"$work/origin.conf" <<CONF
worker_processes 1;
pid $work/origin.pid;
error_log $work/origin-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $work/www;
        location ~ ^/c/(?<size>1k|100k|4m)/ { try_files /\$size =404; add_header Cache-Control "max-age=$MAX_AGE"; }
        location ~ ^/p/(?<size>1k|100k|4m)/ { try_files /\$size =404; add_header Cache-Control "no-store"; }
    }
}
CONF
nginx -c "$work/origin.conf" -p "$work" -g 'daemon off;' 2>>"$work/origin-error.log" &
pids+=($!)

# idle_timeout 5s: pooled origin connections close within SETTLE once the
# traffic stops, so the descriptor count can return to the baseline.
cat >"$work/viaduct.toml" <<CONF
[server]
listen = ["127.0.0.1:$PROXY_PORT"]
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[cache]
capacity = "512MiB"
[log]
access = "off"
level = "warn"
[forward]
enabled = true
allow_loopback = true
connect_ports = [$ORIGIN_PORT]
[upstream]
idle_timeout = "5s"
[[route]]
name = "origin"
host = "*"
upstream = "http://127.0.0.1:$ORIGIN_PORT"
CONF
"$VIADUCT" --config "$work/viaduct.toml" >"$OUT/viaduct.log" 2>&1 &
VPID=$!
pids+=($VPID)

ready=0
for _ in $(seq 100); do
    kill -0 $VPID 2>/dev/null || break
    if curl -fs -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" &&
        curl -fs -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/c/1k/0"; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ $ready = 0 ]; then
    echo "viaduct or the origin did not start (ports $ORIGIN_PORT-$ADMIN_PORT busy?):" >&2
    tail -5 "$OUT/viaduct.log" "$work/origin-error.log" >&2
    exit 1
fi

cat >"$work/reverse.lua" <<'LUA'
-- 85 % cacheable: 9,000 URLs of 1 KiB, 1,000 of 100 KiB; 15 % no-store.
local n = 0
function setup(thread)
    n = n + 1
    thread:set("seed", os.time() * 100 + n)
end
function init(args)
    math.randomseed(seed)
end
function request()
    local r = math.random()
    local path
    if r < 0.80 then
        path = "/c/1k/" .. math.random(0, 8999)
    elseif r < 0.85 then
        path = "/c/100k/" .. math.random(0, 999)
    elseif r < 0.99 then
        path = "/p/1k/" .. math.random(0, 999)
    else
        path = "/p/100k/" .. math.random(0, 99)
    end
    return wrk.format("GET", path)
end
LUA
cat >"$work/forward.lua" <<'LUA'
-- Absolute-form requests for the origin (args[1] = host:port): 90 % of them
-- over 1,000 cacheable URLs, 10 % no-store.
local origin
function init(args)
    origin = args[1]
    math.randomseed(os.time() + 7)
end
function request()
    local path
    if math.random() < 0.9 then
        path = "/c/1k/" .. math.random(0, 999)
    else
        path = "/p/1k/" .. math.random(0, 999)
    end
    return wrk.format("GET", "http://" .. origin .. path, { Host = origin })
end
LUA

CSV=$OUT/samples.csv
echo "time_s,phase,rss_kib,fds,client_connections,tunnels_open,cache_entries,cache_bytes,requests,hit,miss,pass,revalidated,refresh,stale,collapsed,forward,tunnel,upstream_errors" >"$CSV"
T0=$SECONDS
# sample PHASE: one CSV line (descriptors counted before the scrape opens its
# admin connection).
sample() {
    local rss fds metrics
    if ! kill -0 $VPID 2>/dev/null; then
        echo "viaduct (pid $VPID) is gone" >&2
        return 1
    fi
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/$VPID/status)
    fds=$(ls /proc/$VPID/fd | wc -l)
    metrics=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" || true)
    awk -v t=$((SECONDS - T0)) -v phase="$1" -v rss="$rss" -v fds="$fds" '
        /^viaduct_requests_total\{/ {
            match($0, /mode="[a-z]+"/); mode = substr($0, RSTART + 6, RLENGTH - 7)
            match($0, /cache="[a-z]+"/); c = substr($0, RSTART + 7, RLENGTH - 8)
            total += $NF; by[c] += $NF; by_mode[mode] += $NF
        }
        /^viaduct_upstream_errors_total\{/ { uerr += $NF }
        /^viaduct_client_connections / { conns = $NF }
        /^viaduct_tunnels_open / { topen = $NF }
        /^viaduct_cache_entries / { entries = $NF }
        /^viaduct_cache_bytes / { cbytes = $NF }
        END {
            printf "%d,%s,%d,%d,%d,%d,%d,%d,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n",
                t, phase, rss, fds, conns, topen, entries, cbytes, total, by["hit"], by["miss"],
                by["pass"], by["revalidated"], by["refresh"], by["stale"], by["collapsed"],
                by_mode["forward"], by_mode["tunnel"], uerr
        }' <<<"$metrics" >>"$CSV"
    tail -1 "$CSV" >&2
}

# count FILE OK BAD: the loops' running totals, kept on disk so a kill loses nothing.
count() { echo "$2 $3" >"$1"; }

purge_loop() {
    set +e
    local ok=0 bad=0 code url admin="http://127.0.0.1:$ADMIN_PORT/purge"
    while [ ! -e "$work/stop" ]; do
        for url in "url=http://127.0.0.1:$PROXY_PORT/c/1k/$((RANDOM % 9000))" \
            "url=http://127.0.0.1:$PROXY_PORT/c/100k/$((RANDOM % 1000))" \
            "url=http://127.0.0.1:$ORIGIN_PORT/c/1k/$((RANDOM % 1000))&mode=forward" \
            "prefix=http://127.0.0.1:$PROXY_PORT/c/1k/$((RANDOM % 90 + 10))" \
            "prefix=http://127.0.0.1:$ORIGIN_PORT/c/1k/$((RANDOM % 9 + 1))&mode=forward"; do
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "$admin?$url")
            case $url:$code in
                url=*:200 | url=*:404 | prefix=*:200) ok=$((ok + 1)) ;;
                *) bad=$((bad + 1)); echo "$(date +%T) POST /purge?$url: ${code:-no response}" >>"$OUT/purge.log" ;;
            esac
        done
        count "$work/purge.count" $ok $bad
        sleep 1
    done
}

tunnel_loop() {
    set +e
    local ok=0 bad=0 out rc
    while [ ! -e "$work/stop" ]; do
        # Two requests through one tunnel; -w prints "CONNECT-status status" per
        # URL (the second reuses the tunnel: no CONNECT, 000).
        out=$(curl -s -o /dev/null -o /dev/null -w '%{http_connect} %{http_code}\n' --max-time 10 \
            -p -x "http://127.0.0.1:$PROXY_PORT" \
            "http://127.0.0.1:$ORIGIN_PORT/c/100k/$((RANDOM % 1000))" \
            "http://127.0.0.1:$ORIGIN_PORT/p/1k/$((RANDOM % 1000))")
        rc=$?
        case $rc:$(tr '\n' ' ' <<<"$out") in
            "0:200 200 000 200 " | "0:200 200 200 200 ") ok=$((ok + 1)) ;;
            *)
                bad=$((bad + 1))
                echo "$(date +%T) tunnel: curl exit $rc, $(tr '\n' ' ' <<<"$out")" >>"$OUT/tunnel.log"
                ;;
        esac
        count "$work/tunnel.count" $ok $bad
        sleep 0.2
    done
}

# One aborted client of kind K. Exit 99: could not connect (unexpected).
abort_one() {
    # The Host of wrk's requests, so the cache keys stay within wrk's URLs.
    local n=$((RANDOM % 1000)) o="127.0.0.1:$ORIGIN_PORT" h="127.0.0.1:$PROXY_PORT" rc
    case $1 in
        half-head | full-close | full-close-fwd | half-connect | tunnel-cut | silent)
            (
                exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT" || exit 99
                case $1 in
                    half-head) printf 'GET /c/1k/%d HTTP/1.1\r\nHost: %s\r\nAcc' $n $h >&3 ;;
                    full-close) printf 'GET /c/100k/%d HTTP/1.1\r\nHost: %s\r\n\r\nGET /p/100k/%d HTTP/1.1\r\nHost: %s\r\n\r\n' $n $h $((n % 100)) $h >&3 ;;
                    full-close-fwd) printf 'GET http://%s/p/100k/%d HTTP/1.1\r\nHost: %s\r\n\r\n' $o $((n % 100)) $o >&3 ;;
                    half-connect) printf 'CONNECT %s HTTP/1.1\r\nHo' $o >&3 ;;
                    tunnel-cut)
                        printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' $o $o >&3
                        sleep 0.05
                        printf 'GET /c/100k/%d HTTP/1.1\r\nHost: %s\r\n\r\n' $n $o >&3
                        sleep 0.01
                        ;;
                    silent) sleep 0.02 ;;
                esac
                exec 3>&-
            ) 2>/dev/null
            rc=$?
            [ $rc = 99 ] && return 99
            return 0
            ;;
        slow-reverse | slow-forward | slow-tunnel)
            # A 4 MiB body (more than the socket buffers hold), read slowly
            # and given up after 0.5 s (exit 28): the proxy sees the client go
            # in the middle of a pass-through body or of a cache fill (two
            # cacheable 4 MiB URLs per namespace, so the cache stays the same
            # size after the first seconds).
            local args=() path
            if [ $((n % 2)) = 0 ]; then path=/c/4m/$((n % 4 / 2)); else path=/p/4m/$((n % 100)); fi
            case $1 in
                slow-reverse) args=("http://$h$path") ;;
                slow-forward) args=(-x "http://$h" "http://$o$path") ;;
                slow-tunnel) args=(-p -x "http://$h" "http://$o/p/4m/$((n % 100))") ;;
            esac
            curl -s -o /dev/null --limit-rate 20k --max-time 0.5 "${args[@]}"
            rc=$?
            case $rc in 0 | 28) return 0 ;; *) return $rc ;; esac
            ;;
    esac
}

abort_loop() {
    set +e
    local ok=0 bad=0 kind rc kinds=(half-head full-close full-close-fwd half-connect tunnel-cut silent slow-reverse slow-forward slow-tunnel)
    local i=0
    while [ ! -e "$work/stop" ]; do
        kind=${kinds[$((i % ${#kinds[@]}))]}
        i=$((i + 1))
        abort_one "$kind"
        rc=$?
        if [ $rc = 0 ]; then
            ok=$((ok + 1))
        else
            bad=$((bad + 1))
            echo "$(date +%T) aborted client $kind: exit $rc" >>"$OUT/abort.log"
        fi
        count "$work/abort.count" $ok $bad
        sleep 0.1
    done
}

echo "soak: ${DURATION}s on $(nproc) cores, traffic: $TRAFFIC (reverse wrk -t$THREADS -c$CONNECTIONS, forward wrk -t1 -c2); samples every ${INTERVAL}s" >&2
echo "$(head -1 "$CSV")" >&2
sample baseline
BASE_FDS=$(tail -1 "$CSV" | cut -d, -f4)
BASE_RSS=$(tail -1 "$CSV" | cut -d, -f3)

T0=$SECONDS
wrks=()
if on reverse; then
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$work/reverse.lua" \
        "http://127.0.0.1:$PROXY_PORT" >"$OUT/wrk-reverse.txt" 2>&1 &
    wrks+=($!)
fi
if on forward; then
    wrk -t1 -c2 -d"${DURATION}s" --timeout 10s -s "$work/forward.lua" \
        "http://127.0.0.1:$PROXY_PORT" -- "127.0.0.1:$ORIGIN_PORT" >"$OUT/wrk-forward.txt" 2>&1 &
    wrks+=($!)
fi
pids+=("${wrks[@]}")
for kind in purge tunnel abort; do
    if on $kind; then
        ${kind}_loop &
        loops+=($!)
    fi
done

alive=1
next=$INTERVAL
while [ $next -le "$DURATION" ]; do
    wait_for=$((T0 + next - SECONDS))
    [ $wait_for -gt 0 ] && sleep $wait_for
    sample traffic || { alive=0; break; }
    next=$((next + INTERVAL))
done

# Stop: wrk ends by itself (-d) or now if the proxy died, the loops at their
# next turn.
touch "$work/stop"
[ $alive = 1 ] || for p in "${wrks[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${wrks[@]}"; do wait "$p" 2>/dev/null || true; done
for p in "${loops[@]}"; do wait "$p" 2>/dev/null || true; done
loops=()
if [ $alive = 1 ]; then
    sleep "$SETTLE"
    sample final || alive=0
fi

# ---- summary ----
# wrk_field FILE → "requests rps non2xx connect read write timeout"
wrk_field() {
    [ -f "$1" ] || { echo "0 0 0 0 0 0 0"; return; }
    awk '/requests in/ {req = $1} /Requests\/sec/ {rps = $2} /Non-2xx or 3xx/ {non = $NF}
         /Socket errors/ {gsub(",", ""); c = $4; r = $6; w = $8; t = $10}
         END {printf "%d %s %d %d %d %d %d\n", req, rps ? rps : 0, non, c, r, w, t}' "$1"
}
read -r R_REQ R_RPS R_NON R_C R_R R_W R_T <<<"$(wrk_field "$OUT/wrk-reverse.txt")"
read -r F_REQ F_RPS F_NON F_C F_R F_W F_T <<<"$(wrk_field "$OUT/wrk-forward.txt")"
read -r P_OK P_BAD <<<"$(cat "$work/purge.count" 2>/dev/null || echo 0 0)"
read -r T_OK T_BAD <<<"$(cat "$work/tunnel.count" 2>/dev/null || echo 0 0)"
read -r A_OK A_BAD <<<"$(cat "$work/abort.count" 2>/dev/null || echo 0 0)"
UNEXPECTED=$((R_NON + R_C + R_R + R_W + R_T + F_NON + F_C + F_R + F_W + F_T + P_BAD + T_BAD + A_BAD))

# RSS: the warm-up sample is the first traffic sample at or after 20 % of the
# run, and after the first wave of revalidations (MAX_AGE + INTERVAL).
warm_t=$((DURATION / 5))
[ $warm_t -ge $((MAX_AGE + INTERVAL)) ] || warm_t=$((MAX_AGE + INTERVAL))
read -r W_T W_RSS MAX_T MAX_RSS LAST_RSS END_FDS <<<"$(awk -F, -v w=$warm_t '
    NR > 1 && $2 != "baseline" {
        if (wt == "" && $2 == "traffic" && $1 >= w) { wt = $1; wr = $3 }
        if (wt != "" && $3 >= mr) { mr = $3; mt = $1 }
        last = $3; fds = $4
    }
    END { printf "%s %s %s %s %s %s\n", wt == "" ? "-" : wt, wr + 0, mt == "" ? "-" : mt, mr + 0, last + 0, fds + 0 }' "$CSV")"
drift() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%+.1f", (a - b) * 100 / b; else print "n/a" }'; }
MAX_DRIFT=$(drift "$MAX_RSS" "$W_RSS")
LAST_DRIFT=$(drift "$LAST_RSS" "$W_RSS")
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

metrics=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" || true)
UPSTREAM_ERRORS=$(awk '/^viaduct_upstream_errors_total\{/ && $NF > 0 {match($0, /kind="[^"]*"/); printf "%s%s=%s", sep, substr($0, RSTART + 6, RLENGTH - 7), $NF; sep = ", "}' <<<"$metrics")
LOG_LINES=$(grep -c -E 'WARN|ERROR' "$OUT/viaduct.log" || true)

echo
echo "=== soak summary (${DURATION}s of traffic, $(nproc) cores) ==="
printf 'reverse  %9d requests  %10s req/s  non-2xx/3xx %d  socket errors: connect %d read %d write %d timeout %d\n' \
    "$R_REQ" "$R_RPS" "$R_NON" "$R_C" "$R_R" "$R_W" "$R_T"
printf 'forward  %9d requests  %10s req/s  non-2xx/3xx %d  socket errors: connect %d read %d write %d timeout %d\n' \
    "$F_REQ" "$F_RPS" "$F_NON" "$F_C" "$F_R" "$F_W" "$F_T"
echo "purges   $P_OK as expected (200, or 404 for an uncached URL), $P_BAD unexpected$( [ "$P_BAD" -gt 0 ] && echo " (see $OUT/purge.log)")"
echo "tunnels  $T_OK as expected (CONNECT 200, then 2 x 200 inside), $T_BAD unexpected$( [ "$T_BAD" -gt 0 ] && echo " (see $OUT/tunnel.log)")"
echo "aborted  $A_OK clients, $A_BAD unexpected (refused, or an unexpected curl exit)$( [ "$A_BAD" -gt 0 ] && echo " (see $OUT/abort.log)")"
tail -1 "$CSV" | awk -F, '{printf "proxy    %d requests: %d hit, %d miss (no-store ones too), %d pass (bypass, tunnels), %d revalidated, %d refresh, %d stale, %d collapsed; %d forward, %d tunnel\n", $9, $10, $11, $12, $13, $14, $15, $16, $17, $18}'
echo "         upstream errors: ${UPSTREAM_ERRORS:-none}; warnings/errors in its log: $LOG_LINES$( [ "$LOG_LINES" -gt 0 ] && echo " ($OUT/viaduct.log)")"
echo "RSS      baseline $(mib "$BASE_RSS"), warm-up (t=${W_T}s) $(mib "$W_RSS"), max after $(mib "$MAX_RSS") (t=${MAX_T}s), last $(mib "$LAST_RSS"): drift max $MAX_DRIFT %, last $LAST_DRIFT % (limit $RSS_LIMIT %)"
echo "fds      baseline $BASE_FDS, end $END_FDS (limit baseline + $FD_MARGIN)"
echo "samples  $CSV"

fail=()
[ $alive = 1 ] || fail+=("viaduct died")
[ "$UNEXPECTED" -eq 0 ] || fail+=("$UNEXPECTED unexpected errors")
awk -v d="$MAX_DRIFT" -v l="$RSS_LIMIT" 'BEGIN { exit !(d == "n/a" || d + 0 > l + 0) }' &&
    fail+=("RSS drift $MAX_DRIFT % after warm-up")
[ "$END_FDS" -le $((BASE_FDS + FD_MARGIN)) ] || fail+=("descriptors $END_FDS at the end, baseline $BASE_FDS")
if [ ${#fail[@]} -gt 0 ]; then
    echo "FAIL: $(IFS=';'; echo "${fail[*]}" | sed 's/;/; /g')"
    exit 1
fi
echo "PASS"
