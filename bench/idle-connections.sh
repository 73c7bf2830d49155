#!/usr/bin/env bash
# bench/idle-connections.sh — memory per idle keep-alive client connection.
#
# Starts the gateway (target/release/switchyard, one worker) in front of a
# local NGINX backend, opens N client connections (default 10,000) that each
# make one request and then stay open and idle, and reports the gateway's RSS
# before and after. Everything on 127.0.0.1, bounded, stopped by PID.
#
#   bench/idle-connections.sh            # N=10000, opened as fast as possible
#   N=2000 bench/idle-connections.sh
#   RATE=2500 bench/idle-connections.sh  # at most 2,500 new connections a second
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
N=${N:-10000}
RATE=${RATE:-0}
BIN=${SWITCHYARD_BIN:-$PWD/target/release/switchyard}
WORK=${BENCH_WORK:-$PWD/target/bench-idle}
need "../shared/bench/setup.sh installs it" nginx
need_binary
rm -rf "$WORK"; mkdir -p "$WORK"
nginx_conf "$WORK" 1024 <<CONF
  server { listen 127.0.0.1:19401; location = / { return 200 'ok'; } }
CONF
start_nginx "$WORK"
cat > "$WORK/switchyard.yaml" <<CONF
workers: 1
access_log: false
limits: { max_connections: 30000, idle_timeout: 300s }
listeners: [ { name: http, bind: "127.0.0.1:18095" } ]
admin: { bind: "127.0.0.1:18096" }
shutdown: { drain_delay: 0s, timeout: 2s }
routes: [ { name: all, backend: app } ]
backends: { app: { versions: { v1: { endpoints: ["127.0.0.1:19401"] } } } }
CONF
RUST_LOG=warn "$BIN" run -c "$WORK/switchyard.yaml" >/dev/null 2>"$WORK/switchyard.log" & GW=$!; PIDS+=($GW)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18095/ -o /dev/null && break; sleep 0.05; done
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
before=$(rss "$GW")
python3 - "$N" "$GW" "$RATE" <<'PY'
import socket, sys, time, resource
n, gw, rate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
started = time.time()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = []
deadline = time.time() + 120
for i in range(n):
    s = socket.create_connection(("127.0.0.1", 18095))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conns.append(s)
    if rate > 0:
        # Paced: connection i opens no earlier than i / rate seconds in.
        ahead = (i + 1) / rate - (time.time() - started)
        if ahead > 0:
            time.sleep(ahead)
    if time.time() > deadline:
        break
ok = 0
for s in conns:
    s.settimeout(10)
    if s.recv(4096).startswith(b"HTTP/1.1 200"):
        ok += 1
opened_in = time.time() - started
print(f"connections: {len(conns)} opened in {opened_in:.1f} s, answered 200: {ok}", flush=True)
def rss():
    return int([l for l in open(f"/proc/{gw}/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
print(f"gateway RSS when the last answer arrived: {rss():.1f} MiB", flush=True)
# Idle connections are parked within about a second (PARK_AFTER + a tick).
time.sleep(3)
print(f"gateway RSS with all idle for 3 s: {rss():.1f} MiB", flush=True)
# Still usable: every connection gets a second answer (one at a time, so
# the upstream sees one request at once).
again = 0
seen = {}
for s in conns:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        got = s.recv(4096)
    except OSError as e:
        got = repr(e).encode()
    if got.startswith(b"HTTP/1.1 200"):
        again += 1
    else:
        key = got[:40]
        seen[key] = seen.get(key, 0) + 1
for k, v in list(seen.items())[:5]:
    print(f"  other answer x{v}: {k!r}", flush=True)
print(f"second request on each idle connection, answered 200: {again}", flush=True)
print(f"gateway RSS after the second requests: {rss():.1f} MiB", flush=True)
time.sleep(1)
for s in conns:
    s.close()
PY
after_close=$(rss "$GW")
echo "gateway RSS before: $((before / 1024)) MiB; after the connections closed: $((after_close / 1024)) MiB"
