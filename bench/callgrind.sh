#!/usr/bin/env bash
# bench/callgrind.sh — user-space instructions per proxied request.
#
# Wall-clock figures drift on shared machines; instruction counts barely do,
# so this is how a change on the request path is judged before a load run.
# Starts two NGINX backends (100-byte answers, keep-alive) and the gateway
# (target/release/switchyard, one worker, access log off, a canary at weight
# 10, as in the load harness) under `valgrind --tool=callgrind`; after a 3 s
# warm-up the counters are zeroed, `wrk -t1 -c8` runs for DURATION seconds,
# and the dump is divided by wrk's request count. Everything on 127.0.0.1,
# stopped by PID.
#
#   bench/callgrind.sh                       # DURATION=10
#   SWITCHYARD_BIN=/tmp/old-build bench/callgrind.sh
#   KEEP=1 bench/callgrind.sh                # keep the dump for callgrind_annotate
#   UPSTREAM=h2 bench/callgrind.sh           # HTTP/2 (h2c) upstreams instead
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
DURATION=${DURATION:-10}
BIN=${SWITCHYARD_BIN:-$PWD/target/release/switchyard}
WORK=${BENCH_WORK:-$PWD/target/bench-callgrind}
UPSTREAM=${UPSTREAM:-http1}
case $UPSTREAM in
    http1) v1=19311; v2=19312 ;;
    h2) v1=19313; v2=19314 ;;
    *) echo "UPSTREAM must be http1 or h2" >&2; exit 2 ;;
esac
need "apt-get install -y nginx valgrind wrk curl (or ../shared/bench/setup.sh)" \
    nginx valgrind callgrind_control callgrind_annotate wrk curl
need_binary
rm -rf "$WORK"; mkdir -p "$WORK"

body='a small fixed body of about one hundred bytes..........................'
for v in v1:19311:19313 v2:19312:19314; do
    IFS=: read -r name port h2port <<<"$v"; dir=$WORK/$name
    nginx_conf "$dir" <<CONF
  server { listen 127.0.0.1:$port; listen 127.0.0.1:$h2port http2;
    location = / { default_type text/plain; return 200 'hello from $name, $body'; } }
CONF
    start_nginx "$dir"
done
cat > "$WORK/switchyard.yaml" <<CONF
workers: 1
access_log: false
listeners: [ { name: http, bind: "127.0.0.1:18097" } ]
admin: { bind: "127.0.0.1:18098" }
shutdown: { drain_delay: 0s, timeout: 1s }
routes: [ { name: all, backend: app } ]
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:$v1"], protocol: $UPSTREAM }
      v2: { endpoints: ["127.0.0.1:$v2"], protocol: $UPSTREAM }
    release: { strategy: canary, stable: v1, canary: v2, weight: 10 }
CONF
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN" run -c "$WORK/switchyard.yaml" >/dev/null 2>"$WORK/switchyard.log" &
VG=$!; PIDS+=($VG)
up=0
for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:18097/ -o /dev/null && { up=1; break; }
    sleep 0.1
done
[[ $up == 1 ]] || { echo "the gateway did not answer under valgrind; see $WORK/switchyard.log" >&2; exit 1; }
wrk -t1 -c8 -d3s http://127.0.0.1:18097/ >/dev/null
callgrind_control -z "$VG" >/dev/null 2>&1
wrk -t1 -c8 -d"${DURATION}s" http://127.0.0.1:18097/ > "$WORK/wrk.txt"
callgrind_control -d "$VG" >/dev/null 2>&1
kill -INT "$VG"; wait "$VG" 2>/dev/null || true
requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
dump=$(ls "$WORK"/callgrind.out.* | head -1)
instructions=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
[[ -n $requests && -n $instructions && $requests -gt 0 ]] || { echo "no measurement (see $WORK)" >&2; exit 1; }
echo "requests: $requests, instructions: $instructions, per request: $((instructions / requests))"
if [[ -n ${KEEP:-} ]]; then
    echo "dump: $dump (callgrind_annotate --inclusive=yes $dump | less)"
fi
