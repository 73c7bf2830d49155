# Sourced by the scripts that run the gateway against local attack or audit
# tools (slow-clients.sh, tls-audit.sh). The caller sets `script` (its name,
# for messages) and calls `need_tools TOOL...`. Provides:
#   BIN          the binary under test ($SWITCHYARD_BIN, else target/debug/switchyard)
#   work         a temporary directory, removed on exit (kept with KEEP=1)
#   pids         processes to stop by PID on exit (append with pids+=($!))
#   free_port    prints a free TCP port on 127.0.0.1
BIN=${SWITCHYARD_BIN:-target/debug/switchyard}

# need_tools TOOL...: exits 1, naming the package to install, if one is missing.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null ||
            { echo "$script: missing $tool (apt-get install -y $tool)" >&2; exit 1; }
    done
    [[ -x $BIN ]] ||
        { echo "$script: missing $BIN: run cargo build (or set SWITCHYARD_BIN)" >&2; exit 1; }
}

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
