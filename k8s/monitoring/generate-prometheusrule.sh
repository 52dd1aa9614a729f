#!/usr/bin/env bash
# Writes prometheusrule.yaml (the PrometheusRule the overlays deploy) from rules.yaml, the
# one source of the rules: the same groups, under `spec:`, line for line. With --check it
# writes nothing and fails if prometheusrule.yaml is not what it would write
# (scripts/check-k8s.sh runs it so). Run it after every change to rules.yaml.
#
# Usage: k8s/monitoring/generate-prometheusrule.sh [--check]
set -euo pipefail
cd "$(dirname "$0")"

render() {
    cat <<'HEADER'
# GENERATED from rules.yaml by generate-prometheusrule.sh: edit rules.yaml, then run it.
# scripts/check-k8s.sh fails while this file differs from what the script writes.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: starling
  labels:
    app.kubernetes.io/name: starling
spec:
HEADER
    # rules.yaml from `groups:` on (its header comment stays there), indented under spec.
    sed -n '/^groups:/,$p' rules.yaml | sed 's/^\(.\)/  \1/'
}

if [ "${1:-}" = "--check" ]; then
    if ! diff -u prometheusrule.yaml <(render); then
        echo "k8s/monitoring/prometheusrule.yaml is out of date with rules.yaml:" \
            "run k8s/monitoring/generate-prometheusrule.sh" >&2
        exit 1
    fi
else
    render >prometheusrule.yaml
fi
