#!/usr/bin/env bash
# bench/h2.sh — HTTP/2 through the gateway beside NGINX, measured with h2load.
#
# The same job for every target: h2load (h2c, prior knowledge) → proxy →
# two NGINX backends (100-byte answers), split 90/10. Targets:
#   nginx        NGINX 1.22, h2c listener, grpc_pass (its HTTP/2 upstream) with
#                weights 9/1 and keepalive
#   switchyard   the gateway, h2c listener, `protocol: h2` upstreams (one
#                multiplexed connection per endpoint and worker)
#   nginx-h1     NGINX with the same h2c listener and proxy_pass over
#                HTTP/1.1 keepalive to the backends' HTTP/1.1 ports
#   switchyard-h1 the gateway with `protocol: http1` upstreams (the same
#                HTTP/1.1 ports): HTTP/2 clients beside nginx-h1
# One worker each. For each target and round: a warm-up, then h2load for
# DURATION seconds (-c CONNS -m STREAMS -t 1) while the proxy's CPU time
# (utime+stime of its process tree, /proc) is sampled; p50/p99 come from
# h2load's per-request log. Everything on 127.0.0.1, stopped by PID.
#
#   bench/h2.sh                               # 3 rounds, 10 s, -c 64 -m 10
#   ROUNDS=1 DURATION=5 bench/h2.sh           # a quick look
#   CONNS=8 STREAMS=1 bench/h2.sh nginx switchyard
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
STREAMS=${STREAMS:-10}
BIN=${SWITCHYARD_BIN:-$PWD/target/release/switchyard}
WORK=${BENCH_WORK:-$PWD/target/bench-h2}
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(nginx switchyard nginx-h1 switchyard-h1)
need "apt-get install -y nginx nghttp2-client curl python3 iproute2" nginx h2load curl python3 ss
need_binary
rm -rf "$WORK"; mkdir -p "$WORK"
# A previous run's processes may still be draining: wait for the ports to be
# free rather than measuring whoever still holds them.
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }
wait_free() {
    for _ in $(seq 1 100); do
        local busy=0
        for p in "$@"; do port_busy "$p" && busy=1; done
        [[ $busy == 0 ]] && return 0
        sleep 0.1
    done
    echo "ports $* still in use after 10 s; stop what holds them (ss -ltnp)" >&2
    exit 1
}
wait_free 19411 19412 19421 19422 18190 18191

body='a small fixed body of about one hundred bytes..........................'
# Backends: an h2c port (prior knowledge) and an HTTP/1.1 port each.
for v in v1:19411:19421 v2:19412:19422; do
    IFS=: read -r name h2 h1 <<<"$v"
    dir=$WORK/$name
    nginx_conf "$dir" <<CONF
  server { listen 127.0.0.1:$h2 http2; listen 127.0.0.1:$h1;
    location = / { default_type text/plain; return 200 'hello from $name, $body'; } }
CONF
    start_nginx "$dir"
done
for port in 19421 19422; do
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$port/" >/dev/null || { echo "backend on $port did not start; see $WORK/v*/error.log" >&2; exit 1; }
done

proxy_port=18190
write_target() {
    local target=$1 dir=$WORK/$1
    mkdir -p "$dir/tmp"
    case $target in
        nginx|nginx-h1)
            # grpc_pass (HTTP/2 upstream), or proxy_pass over HTTP/1.1.
            local v1=19411 v2=19412 location="grpc_pass grpc://backends;"
            [[ $target == nginx-h1 ]] && {
                v1=19421; v2=19422
                location='proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection "";'
            }
            nginx_conf "$dir" <<CONF
  upstream backends { server 127.0.0.1:$v1 weight=9; server 127.0.0.1:$v2 weight=1; keepalive 64; }
  server { listen 127.0.0.1:$proxy_port http2; location / { $location } }
CONF
            echo "nginx -c $dir/nginx.conf -p $dir" ;;
        switchyard|switchyard-h1)
            local v1=19411 v2=19412 protocol=h2
            [[ $target == switchyard-h1 ]] && { v1=19421; v2=19422; protocol=http1; }
            cat > "$dir/switchyard.yaml" <<CONF
workers: 1
access_log: false
listeners: [ { name: http, bind: "127.0.0.1:$proxy_port" } ]
admin: { bind: "127.0.0.1:18191" }
shutdown: { drain_delay: 0s, timeout: 1s }
routes: [ { name: all, backend: app } ]
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:$v1"], protocol: $protocol }
      v2: { endpoints: ["127.0.0.1:$v2"], protocol: $protocol }
    release: { strategy: canary, stable: v1, canary: v2, weight: 10 }
CONF
            echo "$BIN run -c $dir/switchyard.yaml" ;;
        *) echo "unknown target $target (nginx, switchyard, nginx-h1, switchyard-h1)" >&2; exit 2 ;;
    esac
}

hz=$(getconf CLK_TCK)

results=$WORK/results.tsv
: > "$results"
for round in $(seq 1 "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        cmd=$(write_target "$target")
        wait_free "$proxy_port" 18191
        $cmd >"$WORK/$target/out.log" 2>&1 & pid=$!; PIDS+=($pid)
        up=0
        for _ in $(seq 1 100); do
            h2load -n 1 -c 1 "http://127.0.0.1:$proxy_port/" 2>/dev/null | grep -q "1 succeeded" && { up=1; break; }
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null || up=0
        [[ $up == 1 ]] || { echo "$target did not answer over h2c; see $WORK/$target" >&2; exit 1; }
        h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$WARMUP" "http://127.0.0.1:$proxy_port/" >/dev/null 2>&1 || true
        before=$(cpu_ticks "$pid")
        h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$DURATION" --log-file="$WORK/$target/requests.log" \
            "http://127.0.0.1:$proxy_port/" > "$WORK/$target/h2load.txt" 2>&1 || true
        after=$(cpu_ticks "$pid")
        kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
        python3 - "$target" "$round" "$WORK/$target" "$before" "$after" "$hz" "$DURATION" >> "$results" <<'EOF'
import re, sys
target, rnd, d, before, after, hz, secs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
text = open(f"{d}/h2load.txt").read()
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
done, ok, failed, errored = int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6))
status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
non2xx = sum(int(status.group(i)) for i in (2, 3, 4)) if status else -1
times = sorted(int(l.split()[2]) for l in open(f"{d}/requests.log") if len(l.split()) >= 3)
pct = lambda p: times[min(len(times) - 1, int(p / 100 * len(times)))] / 1000 if times else float("nan")
cpu_us = (after - before) / hz * 1e6
print(f"{target}\t{rnd}\t{ok / secs:.0f}\t{cpu_us / max(ok, 1):.2f}\t{pct(50):.3f}\t{pct(99):.3f}\t{failed + errored}\t{non2xx}")
EOF
        tail -1 "$results"
    done
done

python3 - "$results" "$CONNS" "$STREAMS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
targets = list(dict.fromkeys(r[0] for r in rows))
by = {t: [r for r in rows if r[0] == t] for t in targets}
rounds = sorted({r[1] for r in rows})
def ratio(t, col):
    vals = []
    for rnd in rounds:
        a = [float(r[col]) for r in by[t] if r[1] == rnd]
        peer = "nginx-h1" if t.endswith("-h1") else "nginx"
        b = [float(r[col]) for r in by.get(peer, []) if r[1] == rnd]
        if a and b and b[0]:
            vals.append(a[0] / b[0])
    return f"{statistics.median(vals):.2f}" if vals else "–"
print(f"\nh2load -c {sys.argv[2]} -m {sys.argv[3]}, medians over {len(rounds)} round(s):\n")
print("| target | req/s | proxy CPU µs/req | CPU × NGINX (same upstream protocol) | p50 ms | p99 ms | failed | non-2xx |")
print("|---|---|---|---|---|---|---|---|")
for t in targets:
    med = lambda c: statistics.median(float(r[c]) for r in by[t])
    print(f"| {t} | {med(2):,.0f} | {med(3):.2f} | {ratio(t, 3)} | {med(4):.3f} | {med(5):.3f} | {sum(int(r[6]) for r in by[t])} | {sum(int(r[7]) for r in by[t])} |")
EOF
