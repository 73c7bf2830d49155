#!/usr/bin/env bash
# Slowloris against a local gateway, with a legitimate client measured during
# the attack (issue 9, point 1; figures in docs/reliability.md).
#
#   scripts/slowloris.sh            # 300 slow connections for 20 s
#   CONNS=500 SECS=60 scripts/slowloris.sh
#
# Starts, all on 127.0.0.1: a python3 http.server backend, the gateway
# (header_read_timeout 2s, max_connections 200) and slowhttptest in slowloris
# mode (-H), while a curl loop measures the legitimate success rate and
# latency. Everything it starts is stopped by PID on exit. Needs slowhttptest
# (apt-get install -y slowhttptest), curl, python3 and a built binary
# (cargo build; SWITCHYARD_BIN overrides target/debug/switchyard).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNS=${CONNS:-300}
SECS=${SECS:-20}
RATE=${RATE:-150}
BIN=${SWITCHYARD_BIN:-target/debug/switchyard}

for tool in slowhttptest curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y $tool)" >&2; exit 1; }
done
[[ -x $BIN ]] || { echo "missing $BIN: run cargo build (or set SWITCHYARD_BIN)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n ${KEEP:-} ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
backend_port=$(free_port)
gw_port=$(free_port)
admin_port=$(free_port)

mkdir -p "$work/www"
echo "hello" >"$work/www/index.html"
python3 -m http.server "$backend_port" --bind 127.0.0.1 --directory "$work/www" \
    >"$work/backend.log" 2>&1 &
pids+=($!)

cat >"$work/switchyard.yaml" <<EOF
workers: 2
access_log: false
listeners:
  - name: http
    bind: "127.0.0.1:$gw_port"
admin:
  bind: "127.0.0.1:$admin_port"
limits:
  header_read_timeout: 2s
  max_connections: 200
routes:
  - name: all
    backend: app
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:$backend_port"] }
EOF
"$BIN" --log-format json run -c "$work/switchyard.yaml" 2>"$work/gateway.log" &
gw_pid=$!
pids+=("$gw_pid")

# Ready within 10 s, backend included.
for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$admin_port/readyz" &&
        curl -sf -o /dev/null "http://127.0.0.1:$gw_port/"; then
        break
    fi
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$gw_port/" || { echo "gateway not ready" >&2; cat "$work/gateway.log" >&2; exit 1; }

rss() { awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status"; }
fds() { find "/proc/$gw_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss_before=$(rss)
fds_before=$(fds)

# The attack: waves of CONNS connections opened at RATE/s, each sending one
# more header line every second and never finishing its head. slowhttptest
# ends a wave once the server has closed all its connections, so a new wave
# starts at once until SECS seconds have passed (at most 100 waves).
(
    end=$((SECONDS + SECS))
    wave=0
    while ((SECONDS < end && wave < 100)); do
        slowhttptest -H -c "$CONNS" -r "$RATE" -i 1 -x 24 -l $((end - SECONDS)) -p 3 -t GET \
            -u "http://127.0.0.1:$gw_port/" -g -o "$work/slow-$wave" >"$work/slowhttptest-$wave.log" 2>&1 || true
        wave=$((wave + 1))
    done
) &
slow_pid=$!
pids+=("$slow_pid")

# The legitimate client: one request every 50 ms, each bounded to 5 s,
# until the attack is over (at most SECS + 5 s, at most 2000 requests).
: >"$work/legit.txt"
rss_peak=$rss_before
fds_peak=$fds_before
start=$(date +%s)
n=0
while kill -0 "$slow_pid" 2>/dev/null && ((n < 2000)) && (($(date +%s) - start < SECS + 5)); do
    curl -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}\n' \
        "http://127.0.0.1:$gw_port/" >>"$work/legit.txt" || echo "000 5" >>"$work/legit.txt"
    n=$((n + 1))
    r=$(rss) && ((r > rss_peak)) && rss_peak=$r
    f=$(fds) && ((f > fds_peak)) && fds_peak=$f
    sleep 0.05
done
wait "$slow_pid" || true

# Slow connections still open 3 s after the attack (none expected).
sleep 3
fds_after=$(fds)
rss_after=$(rss)

python3 - "$work/legit.txt" "$work" <<'EOF'
import csv, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
ok = [float(t) for c, t in rows if c == "200"]
lat = sorted(float(t) for _, t in rows)
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else float("nan")
print(f"legit requests: {len(rows)}, 200: {len(ok)} ({100 * len(ok) / max(1, len(rows)):.1f} %)")
print(f"legit latency: p50 {pct(50) * 1000:.1f} ms, p99 {pct(99) * 1000:.1f} ms, max {lat[-1] * 1000 if lat else 0:.1f} ms")
import glob, os
waves, opened, cut, left = 0, 0, 0, 0
for path in sorted(glob.glob(os.path.join(sys.argv[2], "slow-*.csv"))):
    with open(path) as f:
        table = list(csv.reader(f))
    col = {name.strip().lower(): i for i, name in enumerate(table[0])}
    data = [r for r in table[1:] if r]
    if not data:
        continue
    waves += 1
    n = max(int(r[col["connected"]]) + int(r[col["closed"]]) for r in data)
    opened += n
    log = open(path.replace("slow-", "slowhttptest-").replace(".csv", ".log"), errors="replace").read()
    if "No open connections left" in log:
        cut += n  # the gateway closed every connection of the wave
    else:
        cut += max(int(r[col["closed"]]) for r in data)
        left += int(data[-1][col["connected"]])
print(f"slowhttptest: {waves} waves, {opened} slow connections, {cut} cut by the gateway, "
      f"{left} still open when the time limit ended the last wave")
EOF
echo "gateway RSS: before ${rss_before} kB, peak ${rss_peak} kB, after ${rss_after} kB"
echo "gateway open fds: before ${fds_before}, peak ${fds_peak}, 3 s after the attack ${fds_after}"
echo "attack: waves of slowhttptest -H -c $CONNS -r $RATE -i 1 -x 24 -l <seconds left> -p 3 -t GET -u http://127.0.0.1:$gw_port/ for $SECS s"
kill -0 "$gw_pid" && echo "gateway still running: yes"
