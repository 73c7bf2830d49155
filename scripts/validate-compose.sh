#!/usr/bin/env bash
# Offline checks of docker-compose.yml (no Docker engine needed):
#   - it parses, and has the services switchyard, app-v1 and app-v2
#   - the build context of switchyard has its Dockerfile
#   - every bind-mounted host path exists; the config is mounted as a
#     directory (a single-file bind mount never sees an editor's rename-save,
#     so hot reload would miss edits) and is readable by the image's uid 10001
#   - the config the gateway runs (its `-c` path, mapped back to the host
#     through the bind mounts) passes `switchyard check`
#   - the published container ports are exactly the config's listener and
#     admin ports, and those bind all interfaces (0.0.0.0 or [::]), not
#     loopback, or the published ports reach nothing
#   - upstream endpoints named by a bare host name are services of this file
#     (and, for http-echo, listen on the endpoint's port)
#   - stop_grace_period exceeds shutdown.drain_delay + shutdown.timeout
#   - yamllint (when the venv has it) and `docker compose config` (when the
#     Compose plugin is installed)
#
# Needs python3 with PyYAML from .venv-k8s (created by scripts/validate-k8s.sh;
# created here the same way when absent, gitignored) and the switchyard binary:
# target/debug/switchyard or target/release/switchyard, or SWITCHYARD_BIN=PATH.
# Prints each check; exits 1 when one fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

COMPOSE_FILE=${1:-docker-compose.yml}
VENV=.venv-k8s

fail() {
    echo "validate-compose: FAIL: $*" >&2
    exit 1
}
ok() {
    echo "validate-compose: ok: $*"
}
note() {
    echo "validate-compose: note: $*"
}

[ -f "$COMPOSE_FILE" ] || fail "$COMPOSE_FILE not found"

# --- Python with PyYAML --------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" ||
        fail "could not create $VENV (on Debian: apt-get install python3-venv)"
fi
py="$VENV/bin/python"
if ! "$py" -c 'import yaml' 2>/dev/null; then
    echo "validate-compose: installing pyyaml into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check pyyaml ||
        fail "pip install pyyaml failed"
fi

. scripts/switchyard-bin.sh

# --- YAML lint -----------------------------------------------------------------
if [ -x "$VENV/bin/yamllint" ]; then
    "$VENV/bin/yamllint" --strict -d '{extends: relaxed, rules: {line-length: disable}}' "$COMPOSE_FILE" ||
        fail "yamllint found problems in $COMPOSE_FILE"
    ok "yamllint: $COMPOSE_FILE"
else
    note "no yamllint in $VENV (scripts/validate-k8s.sh installs it): skipped"
fi

# --- The checks ----------------------------------------------------------------
"$py" - "$COMPOSE_FILE" "$bin" <<'PY' || fail "see above"
import ipaddress
import json
import os
import re
import shlex
import stat
import subprocess
import sys

import yaml

compose_path, binary = sys.argv[1], sys.argv[2]
base = os.path.dirname(os.path.abspath(compose_path))
failed = False


def ok(msg):
    print(f"validate-compose: ok: {msg}")


def bad(msg):
    global failed
    failed = True
    print(f"validate-compose: FAIL: {msg}", file=sys.stderr)


def host_path(p):
    p = os.path.expanduser(p)
    return os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))


def rel(p):
    return os.path.relpath(p, os.getcwd())


with open(compose_path) as f:
    compose = yaml.safe_load(f)
if not isinstance(compose, dict) or not isinstance(compose.get("services"), dict):
    bad(f"{compose_path}: no `services:` mapping")
    sys.exit(1)
services = compose["services"]
missing = [s for s in ("switchyard", "app-v1", "app-v2") if s not in services]
if missing:
    bad(f"{compose_path}: missing service(s) {', '.join(missing)}")
    sys.exit(1)
ok(f"services: {', '.join(services)}")
gw = services["switchyard"]
for name, svc in services.items():
    if not svc.get("image") and not svc.get("build"):
        bad(f"service {name}: neither `image` nor `build`")

# 1. The build context and its Dockerfile.
build = gw.get("build")
if build is None:
    bad("service switchyard: no `build` (it should build this checkout)")
    sys.exit(1)
context = build if isinstance(build, str) else build.get("context", ".")
dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
context_dir = host_path(context)
dockerfile_path = os.path.join(context_dir, dockerfile)
if not os.path.isdir(context_dir):
    bad(f"service switchyard: build context {context!r} is not a directory")
    sys.exit(1)
if not os.path.isfile(dockerfile_path):
    bad(f"service switchyard: no {dockerfile} in the build context {rel(context_dir)}")
    sys.exit(1)
ok(f"build: context {rel(context_dir)} has {dockerfile}")


# 2. Bind mounts: short ("./a:/b:ro") and long ({type: bind, source, target}).
def mounts(svc):
    out = []
    for v in svc.get("volumes", []) or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) == 1:
                continue  # an anonymous volume
            source, target = parts[0], parts[1]
            opts = parts[2].split(",") if len(parts) > 2 else []
            if source.startswith((".", "/", "~")):
                out.append({"source": host_path(source), "target": target, "ro": "ro" in opts, "spec": v})
        elif isinstance(v, dict) and v.get("type") == "bind":
            out.append({"source": host_path(v["source"]), "target": v["target"],
                        "ro": bool(v.get("read_only")), "spec": f"{v['source']}:{v['target']}"})
    return out


binds = {}
for name, svc in services.items():
    binds[name] = mounts(svc)
    for m in binds[name]:
        if not os.path.exists(m["source"]):
            bad(f"service {name}: bind mount {m['spec']!r}: {rel(m['source'])} does not exist")
if not failed:
    n = sum(len(b) for b in binds.values())
    ok(f"bind mounts: {n} host path(s) exist ({', '.join(m['spec'] for b in binds.values() for m in b)})")


# 3. The config the gateway runs: `-c PATH` of its command, else of the
# Dockerfile's CMD, else SWITCHYARD_CONFIG.
def args_of(value):
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(a) for a in value]


def config_arg(args):
    for i, a in enumerate(args or []):
        if a in ("-c", "--config") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def dockerfile_cmd():
    cmd = None
    with open(dockerfile_path) as f:
        for line in f:
            m = re.match(r"\s*CMD\s+(\[.*\])\s*$", line)
            if m:
                cmd = json.loads(m.group(1))
    return cmd


env = gw.get("environment") or {}
if isinstance(env, list):
    env = dict(e.split("=", 1) for e in env if "=" in e)
command = args_of(gw.get("command"))
config_in_container = (config_arg(command) or (None if command else config_arg(dockerfile_cmd()))
                       or env.get("SWITCHYARD_CONFIG"))
if not config_in_container:
    bad("service switchyard: no `-c FILE` in its command nor in the Dockerfile's CMD, and no SWITCHYARD_CONFIG")
    sys.exit(1)
mount = None
for m in binds["switchyard"]:
    t = m["target"].rstrip("/")
    if config_in_container == t or config_in_container.startswith(t + "/"):
        if mount is None or len(t) > len(mount["target"].rstrip("/")):
            mount = m
if mount is None:
    bad(f"service switchyard: {config_in_container} is not on a bind mount: the gateway would run the config baked into the image")
    sys.exit(1)
t = mount["target"].rstrip("/")
config_host = mount["source"] if config_in_container == t else os.path.join(mount["source"], config_in_container[len(t) + 1:])
if os.path.isfile(mount["source"]):
    bad(f"service switchyard: {mount['spec']!r} mounts a single file; mount its directory so that edits hot-reload")
if not os.path.isfile(config_host):
    bad(f"service switchyard: {config_in_container} is {rel(config_host)} on the host, which does not exist")
    sys.exit(1)
mode = os.stat(config_host).st_mode
dir_mode = os.stat(os.path.dirname(config_host)).st_mode
if not mode & stat.S_IROTH or not dir_mode & stat.S_IXOTH:
    bad(f"{rel(config_host)}: not readable by other users, and the gateway runs as uid 10001")
r = subprocess.run([binary, "check", "-c", rel(config_host)], capture_output=True, text=True)
if r.returncode != 0:
    bad(f"switchyard check of {rel(config_host)} (mounted at {config_in_container}):\n{r.stderr}")
    sys.exit(1)
ok(f"config: {config_in_container} is {rel(config_host)}, from the directory mount {mount['spec']!r}; {r.stdout.strip()}")
with open(config_host) as f:
    config = yaml.safe_load(f)


# 4. Published ports against the config's listeners and admin.
def published(svc):
    out = []
    for p in svc.get("ports", []) or []:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p.get("published", "")), int(p["target"])))
            continue
        spec = str(p).split("/")[0]
        parts = spec.rsplit(":", 2) if not spec.startswith("[") else re.match(r"(\[.*\]):(.*):(.*)", spec).groups()
        if "-" in parts[-1]:
            bad(f"service switchyard: port range {p!r} not understood by this script")
            continue
        host_ip = parts[0] if len(parts) == 3 else ""
        pub = parts[-2] if len(parts) >= 2 else ""
        out.append((host_ip, pub, int(parts[-1])))
    return out


def addr(bind):
    host, port = str(bind).rsplit(":", 1)
    return host.strip("[]"), int(port)


wanted = {f"listener {l['name']}": addr(l["bind"]) for l in config["listeners"]}
wanted["admin"] = addr((config.get("admin") or {}).get("bind", "127.0.0.1:9901"))
ports = published(gw)
targets = {t for _, _, t in ports}
for what, (host, port) in wanted.items():
    if port not in targets:
        bad(f"service switchyard: the config's {what} port {port} is not published")
    if ipaddress.ip_address(host).is_loopback:
        bad(f"{rel(config_host)}: {what} binds {host}: loopback inside the container, unreachable through a published port; bind 0.0.0.0")
for host_ip, pub, target in ports:
    if target not in {p for _, p in wanted.values()}:
        bad(f"service switchyard: publishes container port {target}, which is none of the config's listener or admin ports")
if not failed:
    shown = ", ".join(f"{(h + ':') if h else ''}{p or 'random'}->{t}" for h, p, t in ports)
    ok(f"ports: {shown} publish the config's {', '.join(f'{w} {p}' for w, (_, p) in wanted.items())}")

# 5. Upstreams named by a bare host name are services here.
checked = 0
for bname, backend in (config.get("backends") or {}).items():
    for vname, version in backend.get("versions", {}).items():
        for ep in version.get("endpoints", []):
            host, port = ep.rsplit(":", 1)
            if "." in host or host.startswith("[") or host == "localhost":
                continue
            checked += 1
            svc = services.get(host)
            if svc is None:
                bad(f"{rel(config_host)}: backend {bname} {vname} endpoint {ep}: no service {host!r} in {compose_path}")
                continue
            listen = next((a.split("=", 1)[1] for a in args_of(svc.get("command")) or [] if a.startswith("-listen=")), None)
            if listen is not None and listen.rsplit(":", 1)[-1] != port:
                bad(f"{rel(config_host)}: endpoint {ep}, but service {host} listens on {listen!r}")
if checked and not failed:
    ok(f"upstreams: {checked} endpoint(s) are services of {compose_path}")

# 6. Graceful stop.
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
HUMANE = {"msec": 1e-3, "sec": 1, "second": 1, "seconds": 1, "min": 60, "minute": 60,
          "minutes": 60, "hr": 3600, "hour": 3600, "hours": 3600, **UNITS}


def seconds(value, what):
    text = str(value).strip()
    if not re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]+)+\s*", text):
        bad(f"{what}: duration {value!r} not understood by this script")
        return 0.0
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if unit not in HUMANE:
            bad(f"{what}: unit {unit!r} not understood by this script")
            return 0.0
        total += float(number) * HUMANE[unit]
    return total


shutdown = config.get("shutdown") or {}
drain = seconds(shutdown.get("drain_delay", "5s"), "shutdown.drain_delay")
timeout = seconds(shutdown.get("timeout", "30s"), "shutdown.timeout")
grace = seconds(gw.get("stop_grace_period", "10s"), "stop_grace_period")
if grace > drain + timeout:
    ok(f"stop_grace_period {grace:g}s > drain_delay {drain:g}s + timeout {timeout:g}s")
else:
    bad(f"service switchyard: stop_grace_period {grace:g}s must exceed shutdown.drain_delay + shutdown.timeout = {drain + timeout:g}s, or `docker compose down` kills requests in flight")

sys.exit(1 if failed else 0)
PY

# --- Docker Compose itself, where installed -----------------------------------
if docker compose version >/dev/null 2>&1; then
    docker compose -f "$COMPOSE_FILE" config --quiet || fail "docker compose config rejects $COMPOSE_FILE"
    ok "docker compose config: $COMPOSE_FILE"
else
    note "no docker compose plugin: skipping 'docker compose config'"
fi

echo "validate-compose: $COMPOSE_FILE passed"
