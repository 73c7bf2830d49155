#!/usr/bin/env bash
# TLS audit of a gateway TLS listener with sslscan (issue 9, point 6; result
# in docs/reliability.md). Makes a throwaway certificate with openssl, starts
# the gateway on 127.0.0.1 with one TLS listener, runs sslscan against it and
# checks that only TLS 1.2/1.3 are enabled, no weak cipher is offered, and
# the server's cipher order decides (openssl s_client offering two suites in
# both orders).
# Needs sslscan (apt-get install -y sslscan), openssl, curl, python3 and a
# built binary (SWITCHYARD_BIN overrides target/debug/switchyard).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
script=tls-audit
source scripts/local-run.sh
need_tools sslscan openssl curl python3

tls_port=$(free_port)
admin_port=$(free_port)
backend_port=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/switchyard.yaml" <<EOF
workers: 1
access_log: false
listeners:
  - name: https
    bind: "127.0.0.1:$tls_port"
    tls:
      certs:
        - { cert: $work/cert.pem, key: $work/key.pem }
admin:
  bind: "127.0.0.1:$admin_port"
routes:
  - name: all
    backend: app
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:$backend_port"] }
EOF
"$BIN" --log-format json run -c "$work/switchyard.yaml" 2>"$work/gateway.log" &
pids+=($!)
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$admin_port/readyz" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$admin_port/readyz" || { cat "$work/gateway.log" >&2; exit 1; }

echo "command: sslscan --no-colour --show-sigs 127.0.0.1:$tls_port"
sslscan --no-colour --show-sigs "127.0.0.1:$tls_port" | tee "$work/sslscan.txt"

# Checks: protocols, then every accepted cipher is an AEAD suite with ECDHE
# (TLS 1.2) or a TLS 1.3 suite, of 128 bits or more.
fail=0
for proto in SSLv2 SSLv3 TLSv1.0 TLSv1.1; do
    grep -Eq "^$proto +disabled" "$work/sslscan.txt" || { echo "FAIL: $proto not disabled"; fail=1; }
done
for proto in TLSv1.2 TLSv1.3; do
    grep -Eq "^$proto +enabled" "$work/sslscan.txt" || { echo "FAIL: $proto not enabled"; fail=1; }
done
while read -r line; do
    suite=$(awk '{print $5}' <<<"$line")
    bits=$(awk '{print $3}' <<<"$line")
    case $suite in
        TLS_AES_*_GCM_*|TLS_CHACHA20_POLY1305_*|ECDHE-*-GCM-*|ECDHE-*-CHACHA20-POLY1305) ;;
        *) echo "FAIL: weak or unexpected suite: $line"; fail=1 ;;
    esac
    ((bits >= 128)) || { echo "FAIL: under 128 bits: $line"; fail=1; }
done < <(grep -E "^(Preferred|Accepted) " "$work/sslscan.txt")
# (Debian's sslscan cannot probe compression; rustls never implements it.)
if grep -q "Compression enabled" "$work/sslscan.txt"; then echo "FAIL: TLS compression"; fail=1; fi
# Server cipher order (testssl.sh's "Has server cipher order?"): a client
# offering two suites in either order gets the same one, the server's pick.
negotiated() { # negotiated PROTO-FLAG CIPHER-FLAG LIST
    openssl s_client -connect "127.0.0.1:$tls_port" -servername localhost "$1" "$2" "$3" </dev/null 2>/dev/null |
        sed -n 's/^New, .*Cipher is \(.*\)$/\1/p' | head -1
}
order12a=$(negotiated -tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384)
order12b=$(negotiated -tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305)
order13a=$(negotiated -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384)
order13b=$(negotiated -tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256)
echo "server cipher order: TLS 1.2 -> $order12a / $order12b, TLS 1.3 -> $order13a / $order13b"
if [[ -z $order12a || $order12a != "$order12b" ]]; then echo "FAIL: TLS 1.2 follows the client's cipher order"; fail=1; fi
if [[ -z $order13a || $order13a != "$order13b" ]]; then echo "FAIL: TLS 1.3 follows the client's cipher order"; fail=1; fi
if ((fail)); then echo "TLS audit: FAILED"; exit 1; fi
echo "TLS audit: passed (TLS 1.2/1.3 only, AEAD suites with forward secrecy only, server cipher order)"
