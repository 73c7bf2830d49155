#!/usr/bin/env bash
# scripts/fleet.sh — a fleet on one machine: three gateway replicas sharing
# one config, a real DNS server (dnsmasq) and five "pods" on loopback
# addresses 127.0.0.2-6, the shape of a Kubernetes deployment with a
# headless Service, without a cluster.
#
# It runs a scenario and checks it (exit 1 when a check fails):
#   1. the name app.fleet.test answers 2 pods; every replica discovers both
#   2. scaled to 5 under load: the time until each new pod gets traffic
#   3. one pod stops answering: it alone is ejected, the others serve
#   4. scaled to 1: the other pods stop getting requests
#   5. dnsmasq stops answering (SIGSTOP): the last set keeps serving and
#      switchyard_discovery_errors_total counts the failed lookups
# and zero failed requests over all of it. KEEP=1 leaves the fleet running
# afterwards (dashboards at the admin URLs printed) until Ctrl-C.
#
#   scripts/fleet.sh                  # needs dnsmasq (apt-get install dnsmasq-base),
#                                     # python3, curl, and a built switchyard
#   KEEP=1 scripts/fleet.sh
#   SWITCHYARD_BIN=target/debug/switchyard scripts/fleet.sh
#
# Everything listens on 127.0.0.0/8 only and is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${SWITCHYARD_BIN:-}
if [[ -z $BIN ]]; then
    # The newer of the two builds.
    for candidate in target/release/switchyard target/debug/switchyard; do
        [[ -x $candidate ]] && { [[ -z $BIN || $candidate -nt $BIN ]] && BIN=$PWD/$candidate; }
    done
fi
[[ -n $BIN && -x $BIN ]] || { echo "fleet.sh: build first (cargo build --release) or set SWITCHYARD_BIN" >&2; exit 2; }
for tool in dnsmasq python3 curl; do
    command -v "$tool" >/dev/null || {
        echo "fleet.sh: $tool not found: apt-get install -y dnsmasq-base python3 curl" >&2
        exit 2
    }
done
DNS_PORT=${DNS_PORT:-15353}
POD_PORT=${POD_PORT:-18480}
WORK=$(mktemp -d /tmp/switchyard-fleet.XXXXXX)
PIDS=()
failures=0
cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if (( failures == 0 )); then rm -rf "$WORK"; fi
}
trap cleanup EXIT
check() { # check DESCRIPTION CONDITION...
    local what=$1; shift
    if "$@"; then echo "  ok: $what"; else echo "  FAILED: $what"; failures=$((failures + 1)); fi
}

# --- DNS: dnsmasq, authoritative for fleet.test, answering from a hosts file.
hosts=$WORK/hosts
set_pods() { # set_pods N...: app.fleet.test answers 127.0.0.N for each N
    : > "$hosts.next"
    for n in "$@"; do echo "127.0.0.$n app.fleet.test" >> "$hosts.next"; done
    mv "$hosts.next" "$hosts"
    kill -HUP "$DNS_PID"
}
: > "$hosts"
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --listen-address=127.0.0.1 --bind-interfaces --port="$DNS_PORT" \
    --local=/fleet.test/ --addn-hosts="$hosts" --pid-file= --user=root \
    --log-facility="$WORK/dnsmasq.log" &
DNS_PID=$!; PIDS+=("$DNS_PID")
sleep 0.3
kill -0 "$DNS_PID" 2>/dev/null || {
    echo "fleet.sh: dnsmasq did not start (port $DNS_PORT taken? DNS_PORT=... to move it):" >&2
    cat "$WORK/dnsmasq.log" >&2 2>/dev/null || true
    exit 1
}

# --- Pods: a tiny HTTP server per loopback address, naming itself and
# counting its requests in a file (hits-N).
cat > "$WORK/pod.py" <<'PY'
import http.server, os, sys, threading
name, addr, port, hits = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
count, lock = [0], threading.Lock()
class Pod(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with lock:
            count[0] += 1
            # Whole or not at all: a reader never sees the file truncated.
            with open(hits + ".tmp", "w") as f:
                f.write(str(count[0]))
            os.replace(hits + ".tmp", hits)
        body = f"{name}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((addr, port), Pod).serve_forever()
PY
declare -A POD_PID
start_pod() {
    python3 "$WORK/pod.py" "pod-$1" "127.0.0.$1" "$POD_PORT" "$WORK/hits-$1" &
    POD_PID[$1]=$!; PIDS+=("$!")
}
for n in 2 3 4 5 6; do echo 0 > "$WORK/hits-$n"; start_pod "$n"; done
hits() { cat "$WORK/hits-$1" 2>/dev/null || echo 0; }
served() { (( $(hits "$1") > 0 )); }

# --- Three replicas, one config (only the ports differ).
replica_config() { # replica_config LISTEN ADMIN
    cat <<YAML
listeners: [ { name: http, bind: "127.0.0.1:$1" } ]
admin: { bind: "127.0.0.1:$2" }
access_log: false
workers: 1
shutdown: { drain_delay: 0s, timeout: 2s }
routes: [ { name: app, backend: app } ]
backends:
  app:
    versions:
      v1:
        discover: { dns: app.fleet.test, port: $POD_PORT, interval: 1s, resolver: "127.0.0.1:$DNS_PORT", hold_empty: 10s }
    load_balancing: least_request
    outlier: { consecutive_failures: 3, ejection_time: 30s }
YAML
}
set_pods 2 3
LISTEN=(18481 18482 18483); ADMIN=(19481 19482 19483)
for i in 0 1 2; do
    replica_config "${LISTEN[$i]}" "${ADMIN[$i]}" > "$WORK/replica-$i.yaml"
    "$BIN" run -c "$WORK/replica-$i.yaml" --log-format text > "$WORK/replica-$i.log" 2>&1 &
    PIDS+=("$!")
done
for i in 0 1 2; do
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${ADMIN[$i]}/readyz" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:${ADMIN[$i]}/readyz" >/dev/null || {
        echo "fleet.sh: replica $i did not start:" >&2; cat "$WORK/replica-$i.log" >&2; failures=1; exit 1
    }
done
endpoints() { # endpoints REPLICA: the discovered addresses, sorted, one line
    curl -sf "http://127.0.0.1:${ADMIN[$1]}/status" | python3 -c '
import json, sys
eps = json.load(sys.stdin)["backends"]["app"]["versions"]["v1"]["endpoints"]
print(" ".join(sorted(e["address"] + ("(ejected)" if e["ejected"] else "") for e in eps)))'
}
same_everywhere() { # same_everywhere EXPECTED: every replica lists EXPECTED
    local i; for i in 0 1 2; do [[ $(endpoints "$i") == "$1" ]] || return 1; done
}
wait_for() { # wait_for SECONDS COMMAND...: polls every 0.1 s
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do (( SECONDS < deadline )) || return 1; sleep 0.1; done
}
addrs() { local out=() n; for n in "$@"; do out+=("127.0.0.$n:$POD_PORT"); done; echo "${out[*]}"; }

# --- Load through all three replicas, counting failures.
cat > "$WORK/load.py" <<'PY'
import http.client, sys, time
ports, stop, out = [int(p) for p in sys.argv[1].split(",")], sys.argv[2], sys.argv[3]
ok = failed = 0
conns = {p: None for p in ports}
import os
while not os.path.exists(stop):
    for p in ports:
        try:
            if conns[p] is None:
                conns[p] = http.client.HTTPConnection("127.0.0.1", p, timeout=5)
            conns[p].request("GET", "/")
            r = conns[p].getresponse(); r.read()
            if r.status == 200: ok += 1
            else: failed += 1; print(f"load: {p} answered {r.status}", file=sys.stderr)
        except Exception as e:
            failed += 1; conns[p] = None; print(f"load: {p}: {e}", file=sys.stderr)
    open(out, "w").write(f"{ok} {failed}")
open(out, "w").write(f"{ok} {failed}")
PY
python3 "$WORK/load.py" "$(IFS=,; echo "${LISTEN[*]}")" "$WORK/stop" "$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!; PIDS+=("$LOAD_PID")

echo "1. app.fleet.test -> 2 pods"
check "every replica discovered both" wait_for 5 same_everywhere "$(addrs 2 3)"

echo "2. scaled to 5 pods under load"
start=$(date +%s.%N)
set_pods 2 3 4 5 6
for n in 4 5 6; do
    if wait_for 10 served "$n"; then
        printf '  pod 127.0.0.%s served %.2f s after the DNS change (interval 1s)\n' "$n" "$(echo "$(date +%s.%N) - $start" | bc)"
    fi
done
check "every replica lists the 5 pods" wait_for 5 same_everywhere "$(addrs 2 3 4 5 6)"

echo "3. pod 127.0.0.6 stops answering (its address stays in DNS)"
kill "${POD_PID[6]}"; wait "${POD_PID[6]}" 2>/dev/null || true
ejected_alone() { same_everywhere "$(addrs 2 3 4 5) 127.0.0.6:$POD_PORT(ejected)"; }
check "it alone is ejected, on every replica" wait_for 10 ejected_alone

echo "4. scaled to 1 pod"
set_pods 2
check "every replica lists only 127.0.0.2" wait_for 5 same_everywhere "$(addrs 2)"
before=(); for n in 3 4 5; do before+=("$(hits "$n")"); done
sleep 2
after=(); for n in 3 4 5; do after+=("$(hits "$n")"); done
check "the removed pods get no new requests" test "${before[*]}" == "${after[*]}"

echo "5. the DNS server stops answering"
kill -STOP "$DNS_PID"
counted() { # some failed lookup counted on replica 0
    curl -sf "http://127.0.0.1:${ADMIN[0]}/metrics" |
        awk '/^switchyard_discovery_errors_total/ {n += $2} END {exit !(n > 0)}'
}
check "failed lookups are counted" wait_for 10 counted
served=$(hits 2); sleep 2
check "the last set keeps serving" test "$(hits 2)" -gt "$served"
kill -CONT "$DNS_PID"

touch "$WORK/stop"; wait "$LOAD_PID" 2>/dev/null || true
read -r ok failed < "$WORK/load.out" || true
if (( failed > 0 )); then sed "s/^/  /" "$WORK/load.err"; fi
echo "load: $ok requests answered, $failed failed"
check "no request failed" test "$failed" -eq 0

if [[ -n ${KEEP:-} ]]; then
    echo
    echo "The fleet keeps running (Ctrl-C stops it):"
    for i in 0 1 2; do echo "  replica $i: http://127.0.0.1:${LISTEN[$i]}/  dashboard http://127.0.0.1:${ADMIN[$i]}/"; done
    echo "  pods: 127.0.0.{2..5}:$POD_PORT; change the DNS answer by editing $hosts and: kill -HUP $DNS_PID"
    wait "$DNS_PID" || true
fi
if (( failures > 0 )); then
    echo "fleet.sh: $failures check(s) failed; logs were in $WORK" >&2
    exit 1
fi
echo "fleet.sh: all checks passed"
