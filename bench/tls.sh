#!/usr/bin/env bash
# bench/tls.sh — the TLS variant of the load benchmark: NGINX and Switchyard
# terminating TLS (TLS 1.3, ECDSA P-256, keep-alive) in front of the same two
# NGINX backends, split 90/10, one worker each, measured by wrk over https.
#
#   bench/tls.sh                     # 3 rounds x (c64, c8), 10 s each
#   ROUNDS=1 DURATION=3 bench/tls.sh # smoke run
#
# Needs nginx, wrk and openssl (../shared/bench/setup.sh installs the first
# two) and target/release/switchyard (cargo build --release). Everything runs
# on 127.0.0.1; every process started here is stopped by PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-"64 8"}
BIN=${SWITCHYARD_BIN:-$PWD/target/release/switchyard}
WORK=${BENCH_WORK:-$PWD/target/bench-tls}
need "../shared/bench/setup.sh installs nginx and wrk; apt-get install -y openssl" nginx wrk openssl
need_binary
rm -rf "$WORK"; mkdir -p "$WORK"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

body=$(printf '{"served-by":"%s","note":"fixed reply from the tls bench backend, 100 bytes long........"}' v1 | head -c 100)
backend() {  # backend NAME PORT
    local dir=$WORK/$1
    local reply=${body/v1/$1}
    nginx_conf "$dir" 8192 <<CONF
  server { listen 127.0.0.1:$2 backlog=4096; location = / { default_type text/plain; return 200 '$reply'; } }
CONF
    start_nginx "$dir"
}
backend v1 19201; backend v2 19202

proxy_nginx() {
    local dir=$WORK/nginx-proxy
    nginx_conf "$dir" 8192 <<CONF
  upstream split { server 127.0.0.1:19201 weight=9; server 127.0.0.1:19202 weight=1; keepalive 256; }
  server { listen 127.0.0.1:18443 ssl backlog=4096; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://split; proxy_http_version 1.1; proxy_set_header Connection ""; } }
CONF
    nginx -c "$dir/nginx.conf" -p "$dir" >/dev/null 2>&1 & echo $!
}
proxy_switchyard() {
    cat > "$WORK/switchyard.yaml" <<CONF
workers: 1
access_log: false
listeners:
  - name: https
    bind: "127.0.0.1:18443"
    tls: { certs: [ { cert: "$WORK/cert.pem", key: "$WORK/key.pem" } ] }
admin: { bind: "127.0.0.1:18444" }
shutdown: { drain_delay: 0s, timeout: 2s }
routes: [ { name: all, backend: app } ]
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:19201"] }
      v2: { endpoints: ["127.0.0.1:19202"] }
    release: { strategy: canary, stable: v1, canary: v2, weight: 10 }
CONF
    RUST_LOG=warn "$BIN" run -c "$WORK/switchyard.yaml" >/dev/null 2>"$WORK/switchyard.log" & echo $!
}
wait_up() {
    for _ in $(seq 1 100); do curl -sk --resolve bench.test:18443:127.0.0.1 https://bench.test:18443/ -o /dev/null && return 0; sleep 0.05; done
    echo "bench/tls.sh: target did not come up" >&2; return 1
}
hz=$(getconf CLK_TCK)
echo "| round | target | conns | req/s | p50 ms | p99 ms | errors | proxy CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do
        for target in nginx switchyard; do
            pid=$("proxy_$target"); PIDS+=("$pid"); wait_up
            wrk -t1 -c"$c" -d"${WARMUP}s" https://127.0.0.1:18443/ > /dev/null
            before=$(cpu_ticks "$pid")
            out=$(wrk -t1 -c"$c" -d"${DURATION}s" --latency https://127.0.0.1:18443/)
            after=$(cpu_ticks "$pid")
            requests=$(awk '/requests in/ {print $1}' <<<"$out")
            rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
            errors=$(awk '/Non-2xx|Socket errors/ {n++} END {print n+0}' <<<"$out")
            cpu=$(python3 -c "print(round(($after-$before)/$hz*1e6/$requests, 2))")
            echo "| $round | $target | $c | $rps | $p50 | $p99 | $errors | $cpu |"
            kill "$pid"; wait "$pid" 2>/dev/null || true
        done
    done
done
