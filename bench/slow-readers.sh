#!/usr/bin/env bash
# bench/slow-readers.sh — what slow readers cost in gateway memory.
#
# NGINX serves a 2 MiB file; the gateway (one worker, the release build)
# proxies it; slowhttptest -X opens CONNS connections that each read the
# response a few bytes at a time (the slow-read attack) for SECS seconds.
# Samples the gateway's RSS (/proc) before, every 0.2 s during (peak), at
# the end of the attack, and a minute after; prints the peak per slow
# reader and the RSS a minute after against the RSS before. Everything on
# 127.0.0.1, stopped by PID.
#
#   bench/slow-readers.sh                      # CONNS=500 SECS=30 AFTER=60
#   CONNS=200 SECS=10 AFTER=10 bench/slow-readers.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
CONNS=${CONNS:-500}
SECS=${SECS:-30}
AFTER=${AFTER:-60}
BIN=${SWITCHYARD_BIN:-$PWD/target/release/switchyard}
need "apt-get install -y nginx slowhttptest curl python3 iproute2" nginx slowhttptest curl python3 ss
need_binary
WORK=$(mktemp -d /tmp/slow-readers.XXXXXX)
chmod 755 "$WORK"   # NGINX's worker (nobody) reads the file
cleanup() {
    stop_all
    if [[ -n ${KEEP:-} ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend=$(free_port); listen=$(free_port); admin=$(free_port)

mkdir -p "$WORK/www"
head -c $((2 << 20)) /dev/zero | tr '\0' 'x' > "$WORK/www/big"
nginx_conf "$WORK" <<CONF
  server { listen 127.0.0.1:$backend; root $WORK/www; }
CONF
start_nginx "$WORK"
cat > "$WORK/switchyard.yaml" <<CONF
workers: 1
access_log: false
listeners: [ { name: http, bind: "127.0.0.1:$listen" } ]
admin: { bind: "127.0.0.1:$admin" }
shutdown: { drain_delay: 0s, timeout: 1s }
routes: [ { name: all, backend: app } ]
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:$backend"] }
CONF
"$BIN" run -c "$WORK/switchyard.yaml" > "$WORK/gateway.log" 2>&1 & gw=$!; PIDS+=($gw)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$listen/big" || { echo "the gateway does not serve /big" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$gw/status"; }
sleep 1
before=$(rss)

slowhttptest -X -c "$CONNS" -r $((CONNS / 2)) -w 512 -y 1024 -n 5 -z 32 -k 3 -l "$SECS" -p 5 \
    -u "http://127.0.0.1:$listen/big" > "$WORK/slowhttptest.log" 2>&1 & attack=$!; PIDS+=($attack)
peak=$before; open_peak=0
while kill -0 "$attack" 2>/dev/null; do
    r=$(rss); ((r > peak)) && peak=$r
    o=$(ss -Htn state established "( sport = :$listen )" | wc -l); ((o > open_peak)) && open_peak=$o
    sleep 0.2
done
end=$(rss)
sleep "$AFTER"
after=$(rss)
python3 - "$before" "$peak" "$end" "$after" "$open_peak" "$CONNS" "$AFTER" <<'EOF'
import sys
before, peak, end, after, open_peak, conns, wait = map(int, sys.argv[1:])
per = (peak - before) / max(open_peak, 1)
print(f"slow readers: {conns} asked, {open_peak} open at most")
print(f"RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, at the end {end / 1024:.1f} MiB, {wait} s after {after / 1024:.1f} MiB")
print(f"peak per open slow reader: {per:.0f} KiB; {wait} s after: {after / before:.2f}x the RSS before")
EOF
