#!/usr/bin/env bash
# Slow and abusive clients against a local gateway, with a legitimate client
# measured during each attack (issue 9, point 1; figures in docs/reliability.md).
#
#   scripts/slow-clients.sh                 # every mode, 20 s each
#   SECS=8 scripts/slow-clients.sh          # the CI-sized run
#   scripts/slow-clients.sh headers read    # some modes only
#
# Modes:
#   headers  slowhttptest -H (slowloris): heads that never end
#   body     slowhttptest -B (R-U-Dead-Yet): bodies sent a few bytes a second
#   read     slowhttptest -X (slow read): responses read a few bytes a second
#   flood    connections opened past max_connections that send nothing
#
# Starts, all on 127.0.0.1: two python3 backends (v1, v2), the gateway
# (header_read_timeout 2s, idle_timeout 3s, route timeout 3s, max_connections
# 200, 2 workers; a canary release of v2 at weight 50 with analysis on) and
# the attack, while a curl loop sends one legitimate request every 20 ms. Each
# mode then checks: at least 99 % of the legitimate requests answered 200; the
# gateway cut slow connections; its open fds back to where they were 3 s after
# the attack; the gateway still running; and the attack was counted as the
# clients' doing (SPEC §3): the release still progressing (no rollback), no
# endpoint ejected, no upstream error. Exits 1 if any check fails.
# Everything it starts is stopped by PID on exit. Needs slowhttptest
# (apt-get install -y slowhttptest), curl, python3 and a built binary (cargo
# build; SWITCHYARD_BIN overrides target/debug/switchyard).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNS=${CONNS:-300}
SECS=${SECS:-20}
RATE=${RATE:-150}
MODES=("$@")
[[ ${#MODES[@]} -gt 0 ]] || MODES=(headers body read flood)

script=slow-clients
source scripts/local-run.sh
need_tools slowhttptest curl python3

backend_port=$(free_port)
backend2_port=$(free_port)
gw_port=$(free_port)
admin_port=$(free_port)

# The backend: GET / answers "hello", GET /big 4 MiB, POST reads the whole
# body and answers its length.
cat >"$work/backend.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIG = b"x" * (4 << 20)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(BIG if self.path.startswith("/big") else b"hello\n")

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        got = 0
        while got < n:
            chunk = self.rfile.read(min(65536, n - got))
            if not chunk:
                return
            got += len(chunk)
        self.answer(str(got).encode())

ThreadingHTTPServer.daemon_threads = True
# A listen backlog like a production server's (NGINX: 511): Python's default
# of 5 leaves the attack's bursts of upstream connects waiting in SYN
# retransmits, and the backend's slowness is then rightly the version's.
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
python3 "$work/backend.py" "$backend_port" >"$work/backend.log" 2>&1 &
pids+=($!)
python3 "$work/backend.py" "$backend2_port" >"$work/backend2.log" 2>&1 &
pids+=($!)
# Both backends answer before the gateway starts: a request sent while one
# is still starting would be a refused connect, counted against its version.
for port in "$backend_port" "$backend2_port"; do
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
    curl -sf -o /dev/null "http://127.0.0.1:$port/" ||
        { echo "slow-clients: backend on port $port did not start" >&2; cat "$work"/backend*.log >&2; exit 1; }
done

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
  idle_timeout: 3s
  max_connections: 200
routes:
  - name: all
    backend: app
    timeout: 3s
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:$backend_port"] }
      v2: { endpoints: ["127.0.0.1:$backend2_port"] }
    release:
      strategy: canary
      stable: v1
      canary: v2
      weight: 50
      analysis: { interval: 1s, window: 30s, min_requests: 20, max_error_rate: 0.05, max_p99_latency: 3s }
EOF
# Each failed request is logged (debug, by the request path), so that an upstream
# error counted here can be told apart.
RUST_LOG=${RUST_LOG:-info,switchyard::proxy=debug} \
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
curl -sf -o /dev/null "http://127.0.0.1:$gw_port/" || { echo "slow-clients: gateway not ready" >&2; cat "$work/gateway.log" >&2; exit 1; }

rss() { awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status"; }
fds() { find "/proc/$gw_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# The gateway's own count of open client connections.
active() {
    curl -s --max-time 2 "http://127.0.0.1:$admin_port/metrics" |
        awk '/^switchyard_active_connections\{/ {n += $2} END {print n + 0}'
}

# The flood: keeps FLOOD connections open that send nothing, opening a new one
# whenever the gateway closes one, for SECS seconds; reports how many the
# gateway closed and how long the closed ones had lived.
cat >"$work/flood.py" <<'EOF'
import selectors, socket, sys, time
port, want, secs, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
sel = selectors.DefaultSelector()
opened = closed = 0
lives = []
def open_one():
    global opened
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    sel.register(s, selectors.EVENT_READ, time.monotonic())
    opened += 1
end = time.monotonic() + secs
while time.monotonic() < end:
    while len(sel.get_map()) < want and time.monotonic() < end:
        open_one()
    for key, _ in sel.select(timeout=0.1):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:
            lives.append(time.monotonic() - key.data)
            closed += 1
            sel.unregister(key.fileobj)
            key.fileobj.close()
left = len(sel.get_map())
lives.sort()
with open(out, "w") as f:
    f.write(f"{opened} {closed} {left} {lives[-1] if lives else 0:.2f}\n")
EOF

# attack MODE: runs one attack for SECS seconds in the background; sets
# attack_pid.
attack() {
    local mode=$1 url flags
    case $mode in
        headers) flags=(-H -i 1 -x 24 -t GET) url=/ ;;
        body) flags=(-B -i 1 -x 10 -s 100000 -t POST) url=/upload ;;
        read) flags=(-X -k 3 -n 1 -w 512 -y 1024 -z 32 -t GET) url=/big ;;
        flood)
            python3 "$work/flood.py" "$gw_port" $((CONNS * 2)) "$SECS" "$work/flood-result.txt" \
                >"$work/flood.log" 2>&1 &
            attack_pid=$!
            pids+=("$attack_pid")
            return
            ;;
        *) echo "slow-clients: unknown mode $mode (headers, body, read, flood)" >&2; exit 1 ;;
    esac
    # slowhttptest ends a wave once the server has closed all its
    # connections, so a new wave starts at once until SECS seconds have
    # passed (at most 100 waves).
    (
        end=$((SECONDS + SECS))
        wave=0
        while ((SECONDS < end && wave < 100)); do
            slowhttptest "${flags[@]}" -c "$CONNS" -r "$RATE" -l $((end - SECONDS)) -p 3 \
                -u "http://127.0.0.1:$gw_port$url" -g -o "$work/$mode-slow-$wave" \
                >"$work/$mode-slowhttptest-$wave.log" 2>&1 || true
            wave=$((wave + 1))
        done
    ) &
    attack_pid=$!
    pids+=("$attack_pid")
}

failed=0
summary=()
for mode in "${MODES[@]}"; do
    rss_before=$(rss)
    fds_before=$(fds)
    attack "$mode"

    # The legitimate client: one request every 20 ms, each bounded to 5 s,
    # until the attack is over (at most SECS + 5 s, at most 2000 requests).
    : >"$work/$mode-legit.txt"
    : >"$work/$mode-active.txt"
    rss_peak=$rss_before
    fds_peak=$fds_before
    start=$(date +%s)
    n=0
    while kill -0 "$attack_pid" 2>/dev/null && ((n < 2000)) && (($(date +%s) - start < SECS + 5)); do
        # One line per request: status, seconds, curl's exit code (curl
        # prints the -w line on failure too, with status 000).
        reply=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}' \
            "http://127.0.0.1:$gw_port/") && rc=0 || rc=$?
        echo "${reply:-000 5} $rc" >>"$work/$mode-legit.txt"
        n=$((n + 1))
        r=$(rss) && ((r > rss_peak)) && rss_peak=$r
        f=$(fds) && ((f > fds_peak)) && fds_peak=$f
        active >>"$work/$mode-active.txt"
        sleep 0.02
    done
    wait "$attack_pid" || true

    # Slow connections still open 3 s after the attack (none expected).
    sleep 3
    fds_after=$(fds)
    rss_after=$(rss)
    alive=yes
    kill -0 "$gw_pid" 2>/dev/null || alive=no
    curl -s --max-time 2 "http://127.0.0.1:$admin_port/status" >"$work/$mode-status.json" || true
    curl -s --max-time 2 "http://127.0.0.1:$admin_port/metrics" >"$work/$mode-metrics.txt" || true

    if ! line=$(python3 - "$mode" "$work" "$rss_before" "$rss_peak" "$rss_after" \
        "$fds_before" "$fds_peak" "$fds_after" "$alive" <<'EOF'
import csv, glob, os, sys
mode, work = sys.argv[1], sys.argv[2]
rss_before, rss_peak, rss_after, fds_before, fds_peak, fds_after = map(int, sys.argv[3:9])
alive = sys.argv[9] == "yes"
rows = [l.split() for l in open(os.path.join(work, f"{mode}-legit.txt")) if l.strip()]
ok = sum(1 for c, _, _ in rows if c == "200")
lat = sorted(float(t) for _, t, _ in rows)
failed = [f"{c} after {float(t):.3f} s (curl exit {rc})" for c, t, rc in rows if c != "200"]
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else float("nan")
rate = 100 * ok / max(1, len(rows))
# Connections the gateway closed, as seen by the gateway: the sum of the falls
# of its open-connection gauge between samples (a lower bound).
active = [int(float(l)) for l in open(os.path.join(work, f"{mode}-active.txt")) if l.strip()]
closed = sum(max(0, a - b) for a, b in zip(active, active[1:]))
if mode == "flood":
    opened, cut, left, longest = open(os.path.join(work, "flood-result.txt")).read().split()
    opened, cut, left = int(opened), int(cut), int(left)
    slow = f"{opened} opened, {cut} cut (longest lived {longest} s incl. the accept queue), {left} open at the end"
    cut = closed
else:
    waves = opened = cut = left = 0
    for path in sorted(glob.glob(os.path.join(work, f"{mode}-slow-*.csv"))):
        with open(path) as f:
            table = list(csv.reader(f))
        if not table:
            continue
        col = {name.strip().lower(): i for i, name in enumerate(table[0])}
        data = [r for r in table[1:] if r]
        if not data:
            continue
        waves += 1
        n = max(int(r[col["connected"]]) + int(r[col["closed"]]) for r in data)
        opened += n
        log = open(path.replace("-slow-", "-slowhttptest-").replace(".csv", ".log"), errors="replace").read()
        if "No open connections left" in log:
            cut += n  # the gateway closed every connection of the wave
        else:
            cut += max(int(r[col["closed"]]) for r in data)
            left += int(data[-1][col["connected"]])
    slow = f"{opened} opened in {waves} waves, {cut} seen cut by slowhttptest, {left} within their timeout at the end"
    # A slow reader sees the close only after draining what was already sent
    # to it, so the gateway's count is the one to trust.
    cut = closed
# Whose failure: the release, ejections and upstream errors after the attack.
import json
try:
    app = json.load(open(os.path.join(work, f"{mode}-status.json")))["backends"]["app"]
except (OSError, ValueError, KeyError):
    app = {}
phase = app.get("phase", "unknown")
ejected = sum(1 for v in app.get("versions", {}).values() for e in v.get("endpoints", []) if e.get("ejected"))
def metric(name):
    total = 0.0
    for l in open(os.path.join(work, f"{mode}-metrics.txt"), errors="replace"):
        if l.startswith(name + "{") or l.startswith(name + " "):
            total += float(l.rsplit(" ", 1)[1])
    return int(total)
upstream_errors, aborts = metric("switchyard_upstream_errors_total"), metric("switchyard_client_aborts_total")
problems = []
if phase != "progressing":
    problems.append(f"the release is {phase}: {app.get('reason')}")
if ejected:
    problems.append(f"{ejected} endpoint(s) ejected")
if upstream_errors:
    series = [l.strip() for l in open(os.path.join(work, f"{mode}-metrics.txt"), errors="replace")
              if l.startswith("switchyard_upstream_errors_total{") and not l.rstrip().endswith(" 0")]
    failures = [l.strip() for l in open(os.path.join(work, "gateway.log"), errors="replace")
                if "request failed" in l and "upstream" in l][:3]
    problems.append(f"{upstream_errors} upstream errors counted: " + "; ".join(series + failures))
if len(rows) < 3:
    problems.append(f"only {len(rows)} legitimate requests were sent")
if rate < 99:
    problems.append(f"legitimate success {rate:.1f} % < 99 %: " + "; ".join(failed[:5]))
if cut == 0:
    problems.append("the gateway cut no slow connection")
if fds_after > fds_before + 5:
    problems.append(f"{fds_after - fds_before} more fds open 3 s after the attack")
if not alive:
    problems.append("the gateway died")
print(f"| {mode} | {len(rows)}, {rate:.1f} % 200 | {pct(50) * 1000:.1f} / {pct(99) * 1000:.0f} / {lat[-1] * 1000 if lat else 0:.0f} ms "
      f"| {slow} | {closed}, peak {max(active, default=0)} open | {rss_before // 1024} / {rss_peak // 1024} / {rss_after // 1024} MiB | {fds_before} / {fds_peak} / {fds_after} "
      f"| {phase}, {ejected} ejected, {upstream_errors} upstream errors, {aborts} client aborts |")
for p in problems:
    print(f"FAIL {mode}: {p}", file=sys.stderr)
if rate >= 99:
    for f in failed:
        print(f"note {mode}: a legitimate request failed: {f}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    ); then
        failed=1
    fi
    summary+=("$line")
    echo "$line"
done

echo
echo "| mode | legitimate requests | legitimate p50 / p99 / max | slow connections | closed by the gateway | RSS before / peak / after | fds before / peak / after | release after (cumulative counts) |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
echo "(CONNS=$CONNS RATE=$RATE SECS=$SECS, binary $BIN)"
if ((failed)); then
    echo "slow-clients: FAILED" >&2
    exit 1
fi
echo "slow-clients: all checks passed"
