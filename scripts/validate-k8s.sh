#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in k8s/ (no cluster needed):
#   - yamllint (relaxed, no line-length limit) over every YAML file in k8s/
#   - the kustomizations: base/ lists every manifest file, what each lists
#     exists, k8s/ and overlays/monitoring take in base/ and grafana/
#   - kubernetes-validate --strict against the Kubernetes 1.32 schemas, for every
#     manifest in k8s/base/ (unknown fields are errors); the ServiceMonitor of
#     overlays/monitoring is a CRD with no schema there: it gets yamllint and a
#     structural check against the Service instead
#   - the Grafana dashboard JSON parses and has its variables; its PromQL parses
#     (promtool, when installed)
#   - the gateway config inside the ConfigMap passes `switchyard check`, and so
#     does its commented Prometheus analysis source variant
#   - the Deployment agrees with that config: terminationGracePeriodSeconds >
#     shutdown.drain_delay + shutdown.timeout, ports, probes, a directory (not
#     subPath) config mount, a writable state_file directory, upstream Services
#     (a discovered name must be a headless Service, whose DNS answer is its pods)
#   - `kubectl kustomize` renders the base and the monitoring overlay, and the
#     rendered base validates too (only where kubectl is installed)
#
# Needs python3 (with venv) and the switchyard binary: target/debug/switchyard
# or target/release/switchyard (cargo build), or SWITCHYARD_BIN=PATH. The Python
# tools go into .venv-k8s (gitignored), installed once from PyPI.
# Prints each check; exits 1 when one fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBE_VERSION=1.32.0
VENV=.venv-k8s
# Pinned so that a new release of a checker cannot fail CI on unchanged files.
PY_PACKAGES=(kubernetes-validate==1.37.0 yamllint==1.38.0 pyyaml)

fail() {
    echo "validate-k8s: FAIL: $*" >&2
    exit 1
}
ok() {
    echo "validate-k8s: ok: $*"
}
note() {
    echo "validate-k8s: note: $*"
}

[ -d k8s ] || fail "no k8s/ directory"

# --- Python tools --------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" ||
        fail "could not create $VENV (on Debian: apt-get install python3-venv)"
fi
py="$VENV/bin/python"
if ! "$py" - <<'PY' 2>/dev/null; then
import importlib.metadata as m
import yaml, yamllint  # noqa: F401
assert m.version("kubernetes-validate") == "1.37.0"
assert m.version("yamllint") == "1.38.0"
PY
    echo "validate-k8s: installing ${PY_PACKAGES[*]} into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" ||
        fail "pip install ${PY_PACKAGES[*]} failed"
fi
ok "tools: kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | awk '{ print $NF }'), $("$VENV/bin/yamllint" --version)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- YAML lint -----------------------------------------------------------------
"$VENV/bin/yamllint" --strict -d '{extends: relaxed, rules: {line-length: disable}}' k8s/ ||
    fail "yamllint found problems in k8s/"
ok "yamllint: $(find k8s -name '*.yaml' | wc -l) YAML files"

# --- Schemas -------------------------------------------------------------------
# The base manifests: every YAML file in k8s/base/ but the kustomization.
manifests=()
for f in k8s/base/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
[ "${#manifests[@]}" -gt 0 ] || fail "no manifests in k8s/base/"
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "${manifests[@]}" ||
    fail "kubernetes-validate --strict -k $KUBE_VERSION: see above"
ok "kubernetes-validate --strict -k $KUBE_VERSION: ${manifests[*]}"
note "k8s/overlays/monitoring/servicemonitor.yaml is a Prometheus Operator CRD (no schema in kubernetes-validate): checked by yamllint and structurally below"

# --- The rest: consistency, the dashboard, the gateway config ------------------
. scripts/switchyard-bin.sh
promtool=$(command -v promtool || true)
[ -n "$promtool" ] || note "promtool not found: the dashboard's PromQL is not parsed (apt-get install prometheus)"

"$py" - "$bin" "$tmp" "$promtool" <<'PY' || fail "see above"
import json
import os
import re
import subprocess
import sys

import yaml

binary, tmp, promtool = sys.argv[1], sys.argv[2], sys.argv[3]
failed = False


def ok(msg):
    print(f"validate-k8s: ok: {msg}")


def bad(msg):
    global failed
    failed = True
    print(f"validate-k8s: FAIL: {msg}", file=sys.stderr)


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(objects, kind, name):
    for o in objects:
        if o.get("kind") == kind and o.get("metadata", {}).get("name") == name:
            return o
    bad(f"no {kind} {name} in k8s/base/")
    sys.exit(1)


# 1. The kustomizations: what each lists exists; base/ lists every manifest;
# k8s/ and the monitoring overlay both take in base/ and grafana/.
def kustomization(d):
    k = docs(os.path.join(d, "kustomization.yaml"))[0]
    for r in k.get("resources", []):
        if not os.path.exists(os.path.join(d, r)):
            bad(f"{d}/kustomization.yaml lists {r}, which does not exist")
    for gen in k.get("configMapGenerator", []):
        for f in gen.get("files", []):
            if not os.path.isfile(os.path.join(d, f.split("=", 1)[-1])):
                bad(f"{d}/kustomization.yaml: configMapGenerator {gen['name']}: {f} does not exist")
    return k


base = kustomization("k8s/base")
listed = set(base.get("resources", []))
present = {f for f in os.listdir("k8s/base") if f.endswith(".yaml") and f != "kustomization.yaml"}
for f in sorted(present - listed):
    bad(f"k8s/base/{f} is not listed in k8s/base/kustomization.yaml resources")
grafana = kustomization("k8s/grafana")
if not any("switchyard-dashboard.json" in f for g in grafana.get("configMapGenerator", []) for f in g.get("files", [])):
    bad("k8s/grafana/kustomization.yaml does not generate a ConfigMap from switchyard-dashboard.json")
for d, want in (("k8s", {"base", "grafana"}),
                ("k8s/overlays/monitoring", {"../../base", "../../grafana", "servicemonitor.yaml"})):
    got = {r.rstrip("/") for r in kustomization(d).get("resources", [])}
    if not want <= got:
        bad(f"{d}/kustomization.yaml: resources should include {sorted(want - got)}")
if not failed:
    ok(f"kustomizations: base/ lists all {len(listed)} manifests; grafana/ generates the dashboard ConfigMap; k8s/ and overlays/monitoring include both")

namespace = base.get("namespace", "default")
objects = [o for f in sorted(present) for o in docs(os.path.join("k8s/base", f))]
deploy = find(objects, "Deployment", "switchyard")
service = find(objects, "Service", "switchyard")
configmap = find(objects, "ConfigMap", "switchyard-config")
pod = deploy["spec"]["template"]["spec"]
pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
container = next(c for c in pod["containers"] if c["name"] == "switchyard")
named_ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}

# 2. The ServiceMonitor, structurally (its CRD schema is not available offline).
sm = docs("k8s/overlays/monitoring/servicemonitor.yaml")[0]
problems = []
if sm.get("apiVersion") != "monitoring.coreos.com/v1" or sm.get("kind") != "ServiceMonitor":
    problems.append("not a monitoring.coreos.com/v1 ServiceMonitor")
spec = sm.get("spec", {})
selector = spec.get("selector", {}).get("matchLabels", {})
if not selector or any(service["metadata"].get("labels", {}).get(k) != v for k, v in selector.items()):
    problems.append(f"selector {selector} does not match the labels of Service switchyard")
service_ports = {p.get("name") for p in service["spec"]["ports"]}
endpoints = spec.get("endpoints") or []
if not endpoints:
    problems.append("no endpoints")
for e in endpoints:
    if e.get("port") not in service_ports:
        problems.append(f"endpoint port {e.get('port')!r} is not a port name of Service switchyard {sorted(service_ports)}")
    if e.get("path", "/metrics") != "/metrics":
        problems.append(f"endpoint path {e.get('path')!r} is not /metrics")
for p in problems:
    bad(f"k8s/overlays/monitoring/servicemonitor.yaml: {p}")
if not problems:
    ok(f"ServiceMonitor: selects Service switchyard, scrapes port {endpoints[0]['port']} /metrics every {endpoints[0].get('interval', 'default')}")

# 3. The Grafana dashboard.
dash_path = "k8s/grafana/switchyard-dashboard.json"
try:
    with open(dash_path) as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    bad(f"{dash_path}: {e}")
    sys.exit(1)
variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds = variables.get("datasource", {})
if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    bad(f"{dash_path}: no `datasource` variable of type datasource for prometheus")
if "label_values(switchyard_requests_total, backend)" not in json.dumps(variables.get("backend", {})):
    bad(f"{dash_path}: no `backend` variable from label_values(switchyard_requests_total, backend)")
panels = dash.get("panels", [])
ids = [p.get("id") for p in panels]
if len(set(ids)) != len(ids):
    bad(f"{dash_path}: duplicate panel ids")
exprs = []
for p in panels:
    g = p.get("gridPos", {})
    if g.get("x", 0) + g.get("w", 0) > 24:
        bad(f"{dash_path}: panel {p.get('title')!r} is wider than the 24-column grid")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${datasource}":
            bad(f"{dash_path}: panel {p.get('title')!r} does not use the $datasource variable")
        exprs.append(t["expr"])
exprs += [a["expr"] for a in dash.get("annotations", {}).get("list", []) if "expr" in a]
ok(f"Grafana dashboard: valid JSON, schemaVersion {dash.get('schemaVersion')}, {len(panels)} panels, variables {sorted(variables)}")
if promtool:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}",
         "expr": e.replace("$backend", "x").replace("$__rate_interval", "1m").replace("$__range", "1h")}
        for i, e in enumerate(exprs)]}]}
    rules_path = os.path.join(tmp, "dashboard-rules.yaml")
    with open(rules_path, "w") as f:
        yaml.safe_dump(rules, f)
    r = subprocess.run([promtool, "check", "rules", rules_path], capture_output=True, text=True)
    if r.returncode != 0:
        bad(f"{dash_path}: promtool rejects a query:\n{r.stdout}{r.stderr}")
    else:
        ok(f"Grafana dashboard: promtool parses all {len(exprs)} PromQL expressions")

# 4. The gateway config inside the ConfigMap: `switchyard check`, with errors
# pointed back at k8s/base/configmap.yaml.
cm_path = "k8s/base/configmap.yaml"
text = configmap["data"]["switchyard.yaml"]
with open(cm_path) as f:
    lines = f.read().splitlines()
header = next(i for i, l in enumerate(lines) if l.strip().startswith("switchyard.yaml:")) + 1
indent = next(len(l) - len(l.lstrip()) for l in lines[header:] if l.strip())


def check(config_text, label):
    path = os.path.join(tmp, "switchyard.yaml")
    with open(path, "w") as f:
        f.write(config_text)
    r = subprocess.run([binary, "check", "-c", path], capture_output=True, text=True)
    if r.returncode != 0:
        def where(m):
            return f"{cm_path}:{int(m.group(1)) + header}:{int(m.group(2)) + indent}:"
        errors = re.sub(re.escape(path) + r":(\d+):(\d+):", where, r.stderr)
        bad(f"switchyard check of {label}:\n{errors}")
    else:
        ok(f"switchyard check of {label}: {r.stdout.strip().replace(path, 'switchyard.yaml')}")


check(text, f"{cm_path} data.switchyard.yaml")
config = yaml.safe_load(text)
# The recommended fleet-wide variant, from the comment that shows it.
m = re.search(r"^(\s*)#\s*(source: \{ prometheus: .*\})\s*$", text, re.M)
if not m:
    bad(f"{cm_path}: the commented `source: {{ prometheus: ... }}` variant is gone")
else:
    variant, n = re.subn(r"^(\s*)source: local\s*$", lambda s: s.group(1) + m.group(2), text, flags=re.M)
    if n != 1:
        bad(f"{cm_path}: expected one `source: local` line to swap for the Prometheus variant, found {n}")
    else:
        check(variant, "its Prometheus analysis source variant")

# 5. The Deployment against that config.
UNITS = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "second": 1, "seconds": 1,
         "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600,
         "hour": 3600, "hours": 3600}


def seconds(value, key):
    total, rest = 0.0, str(value).strip()
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", rest):
        if unit not in UNITS:
            bad(f"{cm_path}: {key}: unit {unit!r} not understood by this script")
            return 0.0
        total += float(number) * UNITS[unit]
    if not re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]+)+\s*", rest):
        bad(f"{cm_path}: {key}: duration {value!r} not understood by this script")
    return total


shutdown = config.get("shutdown") or {}
drain = seconds(shutdown.get("drain_delay", "5s"), "shutdown.drain_delay")
timeout = seconds(shutdown.get("timeout", "30s"), "shutdown.timeout")
grace = pod.get("terminationGracePeriodSeconds", 30)
if grace > drain + timeout:
    ok(f"terminationGracePeriodSeconds {grace} > drain_delay {drain:g}s + timeout {timeout:g}s")
else:
    bad(f"k8s/base/deployment.yaml: terminationGracePeriodSeconds {grace} must exceed shutdown.drain_delay + shutdown.timeout = {drain + timeout:g}s, or in-flight requests are killed")

args = container.get("args", []) + container.get("command", [])
config_path = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--config")), None)
if not config_path:
    bad("k8s/base/deployment.yaml: the switchyard container has no `-c FILE` argument")
    sys.exit(1)
volumes = {v["name"]: v for v in pod.get("volumes", [])}
mounts = container.get("volumeMounts", [])
config_mount = next((mt for mt in mounts if mt["mountPath"].rstrip("/") == os.path.dirname(config_path)), None)
if not config_mount:
    bad(f"k8s/base/deployment.yaml: nothing mounted at {os.path.dirname(config_path)} (the directory of -c {config_path})")
elif config_mount.get("subPath") or config_mount.get("subPathExpr"):
    bad("k8s/base/deployment.yaml: the config is mounted with subPath, which never updates: mount the ConfigMap as a directory")
elif volumes.get(config_mount["name"], {}).get("configMap", {}).get("name") != "switchyard-config":
    bad(f"k8s/base/deployment.yaml: {os.path.dirname(config_path)} is not the ConfigMap switchyard-config")
else:
    ok(f"config: ConfigMap switchyard-config mounted as a directory at {config_mount['mountPath']} (hot reload sees the ..data swap)")


def mount_for(path):
    best = None
    for mt in mounts:
        base = mt["mountPath"].rstrip("/") + "/"
        if path.startswith(base) and (best is None or len(base) > len(best["mountPath"])):
            best = mt
    return best


sec = container.get("securityContext", {})
if not sec.get("readOnlyRootFilesystem"):
    bad("k8s/base/deployment.yaml: the switchyard container should have readOnlyRootFilesystem: true")
state_file = config.get("state_file")
if state_file:
    mt = mount_for(state_file)
    kinds = set(volumes.get(mt["name"], {})) if mt else set()
    if not mt or mt.get("readOnly") or not kinds & {"emptyDir", "persistentVolumeClaim", "ephemeral"}:
        bad(f"k8s/base/deployment.yaml: state_file {state_file} is not on a writable volume (the root filesystem is read-only)")
    else:
        ok(f"state_file {state_file} on the writable volume {mt['name']!r} at {mt['mountPath']}")
token_file = (config.get("admin") or {}).get("token_file")
if token_file:
    mt = mount_for(token_file)
    if not mt or "secret" not in volumes.get(mt["name"], {}):
        bad(f"k8s/base/deployment.yaml: admin.token_file {token_file} is not on a Secret volume")
    else:
        ok(f"admin.token_file {token_file} from Secret {volumes[mt['name']]['secret']['secretName']}")


def port_of(bind):
    return int(str(bind).rsplit(":", 1)[1])


wanted = {"listener " + l["name"]: port_of(l["bind"]) for l in config["listeners"]}
wanted["admin"] = port_of((config.get("admin") or {}).get("bind", "127.0.0.1:9901"))
for what, port in wanted.items():
    if port not in named_ports.values():
        bad(f"k8s/base/deployment.yaml: no containerPort {port} for the config's {what}")
if (config.get("admin") or {}).get("bind", "127.0.0.1").startswith("127."):
    bad(f"{cm_path}: admin.bind is on loopback: the kubelet's probes cannot reach it")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    get = container.get(probe, {}).get("httpGet", {})
    port = named_ports.get(get.get("port"), get.get("port"))
    if get.get("path") != path or port != wanted["admin"]:
        bad(f"k8s/base/deployment.yaml: {probe} should GET {path} on the admin port {wanted['admin']}, not {get.get('path')} on {get.get('port')}")
for p in service["spec"]["ports"]:
    target = p.get("targetPort", p["port"])
    if named_ports.get(target, target) not in named_ports.values():
        bad(f"k8s/base/service.yaml: port {p.get('name')} targets {target!r}, not a port of the switchyard container")
if not failed:
    ok(f"ports: {', '.join(f'{k} {v}' for k, v in wanted.items())} exposed; probes /healthz and /readyz on {wanted['admin']}; Service targets exist")

# The upstreams that are Service DNS names of this namespace exist, with that port.
services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
checked = 0
for bname, backend in config.get("backends", {}).items():
    for vname, version in backend.get("versions", {}).items():
        for ep in version.get("endpoints", []):
            host, port = ep.rsplit(":", 1)
            parts = host.split(".")
            in_namespace = len(parts) >= 3 and parts[1] == namespace and parts[2] == "svc"
            if in_namespace or len(parts) == 1:
                svc = services.get(parts[0])
                if not svc or int(port) not in [p["port"] for p in svc["spec"]["ports"]]:
                    bad(f"{cm_path}: backend {bname} {vname} endpoint {ep}: no Service {parts[0]} with port {port} in k8s/base/")
                checked += 1
        discover = version.get("discover")
        if discover:
            parts = discover["dns"].rstrip(".").split(".")
            in_namespace = len(parts) >= 3 and parts[1] == namespace and parts[2] == "svc"
            if in_namespace or len(parts) == 1:
                svc = services.get(parts[0])
                if not svc or int(discover["port"]) not in [p.get("targetPort") if isinstance(p.get("targetPort"), int) else p["port"] for p in svc["spec"]["ports"]]:
                    bad(f"{cm_path}: backend {bname} {vname} discovers {discover['dns']}: no Service {parts[0]} with port {discover['port']} in k8s/base/")
                elif svc["spec"].get("clusterIP") != "None":
                    bad(f"{cm_path}: backend {bname} {vname} discovers {discover['dns']}: Service {parts[0]} is not headless (clusterIP: None), so its name is one virtual IP, not its pods")
                checked += 1
if checked:
    ok(f"upstreams: {checked} endpoint(s) or discovered name(s) are Services of this base (discovered ones headless)")

for kind, name in (("PodDisruptionBudget", "switchyard"),):
    sel = find(objects, kind, name)["spec"]["selector"]["matchLabels"]
    if any(pod_labels.get(k) != v for k, v in sel.items()):
        bad(f"{kind} {name}: selector {sel} does not match the gateway pods")
hpa = find(objects, "HorizontalPodAutoscaler", "switchyard")["spec"]
if hpa["scaleTargetRef"].get("kind") != "Deployment" or hpa["scaleTargetRef"].get("name") != "switchyard":
    bad("HorizontalPodAutoscaler switchyard does not target Deployment switchyard")
if hpa.get("minReplicas", 1) < 2:
    bad("HorizontalPodAutoscaler switchyard: minReplicas below 2")
if not failed:
    ok(f"PodDisruptionBudget and HorizontalPodAutoscaler ({hpa.get('minReplicas')}-{hpa['maxReplicas']}) select the gateway")

sys.exit(1 if failed else 0)
PY

# --- Kustomize render ----------------------------------------------------------
if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize k8s >"$tmp/base.yaml" || fail "kubectl kustomize k8s"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$tmp/base.yaml" ||
        fail "the rendered base (kubectl kustomize k8s) does not validate"
    kinds=$(grep -c '^kind:' "$tmp/base.yaml")
    grep -q '^  name: switchyard-grafana-dashboard$' "$tmp/base.yaml" ||
        fail "kubectl kustomize k8s: no ConfigMap switchyard-grafana-dashboard (configMapGenerator)"
    ok "kubectl kustomize k8s: $kinds objects, valid against $KUBE_VERSION (dashboard ConfigMap included)"
    kubectl kustomize k8s/overlays/monitoring >"$tmp/monitoring.yaml" ||
        fail "kubectl kustomize k8s/overlays/monitoring"
    grep -q '^kind: ServiceMonitor$' "$tmp/monitoring.yaml" ||
        fail "kubectl kustomize k8s/overlays/monitoring: no ServiceMonitor"
    ok "kubectl kustomize k8s/overlays/monitoring: $(grep -c '^kind:' "$tmp/monitoring.yaml") objects (base + ServiceMonitor)"
else
    note "kubectl not found: skipping kustomize render"
fi

echo "validate-k8s: k8s/ passed"
