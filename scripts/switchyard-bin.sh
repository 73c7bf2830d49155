# Sourced by the validation scripts: sets `bin` to the switchyard binary to
# use ($SWITCHYARD_BIN, else target/debug, else target/release), or calls the
# caller's `fail` with how to get one.
bin=${SWITCHYARD_BIN:-}
if [ -z "$bin" ]; then
    for candidate in target/debug/switchyard target/release/switchyard; do
        if [ -x "$candidate" ]; then
            bin=$candidate
            break
        fi
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] ||
    fail "no switchyard binary (looked for target/debug/switchyard and target/release/switchyard): run 'cargo build' first, or set SWITCHYARD_BIN"
