# bench/lib.sh — what the bench scripts share. Sourced, never run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets PIDS (what the script starts, stopped by PID on exit) and traps EXIT
# to stop them; a script with more to clean defines its own trap calling
# stop_all.

PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT

# need HINT TOOL...: exits 2 naming HINT (how to install) when a tool is
# missing.
need() {
    local hint=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool not found: $hint" >&2; exit 2; }
    done
}

# need_binary: exits 2 unless $BIN (the gateway build) is there.
need_binary() {
    [[ -x $BIN ]] || { echo "no binary at $BIN: cargo build --release" >&2; exit 2; }
}

# nginx_conf DIR [WORKER_CONNECTIONS]: writes DIR/nginx.conf, one worker, no
# access log, keep-alive without a request limit, its pid, error log and
# temp paths under DIR; stdin goes inside `http { }`.
nginx_conf() {
    local dir=$1 connections=${2:-4096}
    mkdir -p "$dir/tmp"
    {
        cat <<CONF
worker_processes 1; daemon off; pid $dir/nginx.pid; error_log $dir/error.log warn;
events { worker_connections $connections; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp; uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
CONF
        cat
        echo "}"
    } > "$dir/nginx.conf"
}

# start_nginx DIR: runs DIR/nginx.conf in the background, its PID in PIDS.
start_nginx() {
    nginx -c "$1/nginx.conf" -p "$1" >/dev/null 2>&1 &
    PIDS+=($!)
}

# cpu_ticks PID: utime + stime of a process and its children, in clock ticks.
cpu_ticks() {
    local total=0 p f
    for p in $1 $(pgrep -P "$1" || true); do
        read -r -a f 2>/dev/null < "/proc/$p/stat" || continue
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}
