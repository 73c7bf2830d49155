#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite:
#   ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# need_apt PKG...: installs the Debian packages that are missing. Runs
# `apt-get update` once per script run, and only as root; otherwise prints the
# command to run and exits 1.
apt_updated=0
need_apt() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: missing packages: ${missing[*]}" >&2
        echo "test.sh: install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found: install Rust from https://rustup.rs" >&2
    exit 1
fi

# --- What the tests need -------------------------------------------------------
# chromium: the dashboard is rendered in a real headless browser (tests/browser.rs).
# prometheus: promtool parses /metrics, and a real server drives the fleet-wide
# analysis (tests/admin.rs, tests/fleet.rs).
# openssl: makes PKCS#1 and SEC1 keys for the TLS key-format test (tests/tls.rs).
# slowhttptest, curl: slow and abusive clients (scripts/slow-clients.sh).
# sslscan: the TLS listener audit (scripts/tls-audit.sh).
# dnsmasq-base: a real DNS server whose answers the discovery tests change
# (tests/discovery.rs, tests/fleet.rs, scripts/fleet.sh).
# python3-grpcio: gRPC C-core as client and server around the gateway
# (scripts/grpc-interop.py), beside the tonic stack of tests/grpc.rs.
need_apt chromium prometheus openssl slowhttptest curl sslscan dnsmasq-base python3-grpcio
command -v python3 >/dev/null 2>&1 ||
    need_apt python3
# ------------------------------------------------------------------------------

cargo test --all-targets "$@"

# With a test filter or cargo arguments, only the tests asked for.
if [ "$#" -gt 0 ]; then
    exit 0
fi
# The attack scripts against the binary the tests just built (CI-sized:
# 8 s per slow-client mode; docs/reliability.md has the longer runs).
SECS=8 bash scripts/slow-clients.sh
bash scripts/tls-audit.sh
# Every gRPC call kind through both listeners to h2c and h2/TLS upstreams,
# with grpcio on both sides (Debian's interpreter: the package's).
/usr/bin/python3 scripts/grpc-interop.py target/debug/switchyard
# A fleet on one machine: dnsmasq, five loopback pods, three replicas.
SWITCHYARD_BIN=target/debug/switchyard bash scripts/fleet.sh
