#!/usr/bin/env bash
# Offline checks of the Dockerfile (no Docker engine needed):
#   - every COPY source from the build context exists and is not .dockerignored
#   - the binary the image runs is the [[bin]] name from Cargo.toml
#   - the final user is not root
#   - the build is multi-stage (at least two FROM lines)
# Prints each check; exits 1 with a message on the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dockerfile=${1:-Dockerfile}
fail() {
    echo "lint-dockerfile: FAIL: $*" >&2
    exit 1
}
ok() {
    echo "lint-dockerfile: ok: $*"
}

[ -f "$dockerfile" ] || fail "$dockerfile not found"

# Instructions one per line: continuation lines joined, comments and blank
# lines dropped.
instructions=$(sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' "$dockerfile" |
    sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta')

# 1. Multi-stage.
froms=$(grep -ciE '^[[:space:]]*FROM[[:space:]]' <<<"$instructions" || true)
[ "$froms" -ge 2 ] || fail "expected a multi-stage build (>= 2 FROM lines), found $froms"
ok "multi-stage build: $froms FROM lines"

# 2. COPY sources from the build context.
ignored=()
if [ -f .dockerignore ]; then
    while IFS= read -r pattern; do
        pattern=${pattern%/}
        [ -n "$pattern" ] && [ "${pattern:0:1}" != "#" ] && ignored+=("$pattern")
    done <.dockerignore
fi
copies=0
while IFS= read -r line; do
    read -ra words <<<"$line"
    args=()
    from_stage=0
    for word in "${words[@]:1}"; do
        case "$word" in
            --from=*) from_stage=1 ;;
            --*) ;;
            *) args+=("$word") ;;
        esac
    done
    [ "$from_stage" -eq 1 ] && continue
    if [ "${args[0]:0:1}" = "[" ]; then
        fail "JSON-form COPY is not checked by this script: $line"
    fi
    [ "${#args[@]}" -ge 2 ] || fail "COPY needs a source and a destination: $line"
    for src in "${args[@]:0:${#args[@]}-1}"; do
        src=${src#./}
        # A source may be a glob.
        compgen -G "$src" >/dev/null || fail "COPY source '$src' does not exist in the repository"
        for pattern in "${ignored[@]}"; do
            # shellcheck disable=SC2053
            if [[ "$src" == $pattern || "$src" == $pattern/* ]]; then
                fail "COPY source '$src' is excluded by .dockerignore ('$pattern')"
            fi
        done
        ok "COPY source exists: $src"
        copies=$((copies + 1))
    done
done < <(grep -iE '^[[:space:]]*(COPY|ADD)[[:space:]]' <<<"$instructions" || true)
[ "$copies" -gt 0 ] || fail "no COPY from the build context found"

# 3. The binary name.
bin=$(awk '
    /^\[\[bin\]\]/ { in_bin = 1; next }
    /^\[/ { in_bin = 0 }
    in_bin && /^[[:space:]]*name[[:space:]]*=/ { gsub(/.*=[[:space:]]*"|".*/, ""); print; exit }
' Cargo.toml)
[ -n "$bin" ] || fail "no [[bin]] name in Cargo.toml"
grep -qE "target/release/$bin([^A-Za-z0-9_-]|\$)" <<<"$instructions" ||
    fail "the Dockerfile never takes target/release/$bin (Cargo.toml [[bin]] name is '$bin')"
entrypoint=$(grep -iE '^[[:space:]]*ENTRYPOINT[[:space:]]' <<<"$instructions" | tail -n 1 || true)
[ -n "$entrypoint" ] || fail "no ENTRYPOINT"
grep -qE "/$bin\"?([],[:space:]]|\$)" <<<"$entrypoint" ||
    fail "ENTRYPOINT does not run '$bin' (Cargo.toml [[bin]] name): $entrypoint"
ok "binary name matches Cargo.toml [[bin]]: $bin"

# 4. A non-root user in the final stage.
final_stage=$(awk 'toupper($1) == "FROM" { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' <<<"$instructions")
user=$(grep -iE '^[[:space:]]*USER[[:space:]]' <<<"$final_stage" | tail -n 1 | awk '{ print $2 }' || true)
[ -n "$user" ] || fail "the final stage has no USER: the image would run as root"
case "${user%%:*}" in
    root | 0) fail "the final stage runs as root (USER $user)" ;;
esac
ok "final stage runs as a non-root user: $user"

echo "lint-dockerfile: $dockerfile passed"
