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

# 5. The build stage has what the compiler reads: every file an
# include_str!/include_bytes! in src/ names is under a COPY of the build stage,
# and every [[bench]] of Cargo.toml gets its placeholder before the
# dependency build (cargo refuses a manifest whose targets are missing).
build_stage=$(awk 'toupper($1) == "FROM" { n++ } n == 1 { print }' <<<"$instructions")
python3 - "$build_stage" <<'PY' || exit 1
import os, re, sys
stage = sys.argv[1]
copied = []
for line in stage.splitlines():
    words = line.split()
    if words and words[0].upper() in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
        args = [w for w in words[1:] if not w.startswith("--")]
        copied += [os.path.normpath(a) for a in args[:-1]]
def covered(path):
    return any(path == c or path.startswith(c + "/") or c == "." for c in copied)
bad = 0
for root, _, files in os.walk("src"):
    for name in files:
        if not name.endswith(".rs"):
            continue
        source = os.path.join(root, name)
        with open(source, encoding="utf-8") as f:
            text = f.read()
        for rel in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
            target = os.path.normpath(os.path.join(root, rel))
            if covered(target):
                print(f"lint-dockerfile: ok: {source} includes {target}, copied into the build stage")
            else:
                print(f"lint-dockerfile: FAIL: {source} includes {target}, which no COPY of the build stage brings", file=sys.stderr)
                bad += 1
manifest = open("Cargo.toml", encoding="utf-8").read()
benches = re.findall(r'\[\[bench\]\]\s*\nname\s*=\s*"([^"]+)"', manifest)
first_copy = re.search(r"(?im)^\s*COPY\s+(\S+/)?benches", stage)
before = stage[: first_copy.start()] if first_copy else stage
for bench in benches:
    if f"benches/{bench}.rs" in before:
        print(f"lint-dockerfile: ok: bench {bench} has a placeholder for the dependency build")
    else:
        print(f"lint-dockerfile: FAIL: Cargo.toml has [[bench]] {bench} but the build stage makes no benches/{bench}.rs placeholder before copying benches/", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY

echo "lint-dockerfile: $dockerfile passed"
