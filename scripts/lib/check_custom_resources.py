"""Validates the custom resources of a rendered overlay against their CRDs' schemas, offline.

    python check_custom_resources.py RENDERED.yaml SCHEMA_DIR CORE_OUT.yaml

kubernetes-validate knows only the Kubernetes API's own kinds (a custom resource just gets
a warning), so scripts/check-k8s.sh splits the rendered objects: those of Kubernetes' own
API groups go to CORE_OUT.yaml for kubernetes-validate; every other object must have a
schema in SCHEMA_DIR (STARLING_CRD_SCHEMAS, not vendored: each the openAPIV3Schema of a
published CRD, see k8s/README.md) and is validated against it with jsonschema, as strictly as the API server's
`kubectl apply --validate=strict` would:

- a field the schema does not declare is an error (where the schema does not say
  x-kubernetes-preserve-unknown-fields), as the server's strict field validation reports
  the fields it would prune;
- x-kubernetes-int-or-string, nullable, x-kubernetes-list-type (map keys and set items
  unique) are honoured;
- x-kubernetes-validations (CEL) rules are checked by the Python twins in CEL_RULES below;
  a rule with no twin, on an object that reaches it, is an error, so a newer schema cannot
  pass unchecked;
- metadata is checked as the server would check ObjectMeta's name, namespace and labels.

Exits non-zero with one line per problem.
"""
import copy
import json
import os
import re
import sys

import jsonschema
import yaml

# Python twins of the CEL rules in the vendored schemas (rule text -> check of `self`).
CEL_RULES = {
    # keda.sh ScaledObject spec
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount)"
    " ? self.maxReplicaCount : 100)":
        lambda s: "minReplicaCount" not in s or s["minReplicaCount"] <= s.get("maxReplicaCount", 100),
}

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_core(api_version):
    """Kubernetes' own API groups: none (v1), no dot (apps, batch, ...) or *.k8s.io."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def to_json_schema(node, root=False):
    """An OpenAPI v3 structural schema as a strict JSON schema (draft 7)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {name: to_json_schema(s) for name, s in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = to_json_schema(v)
        elif k in ("anyOf", "allOf", "oneOf"):
            out[k] = to_json_schema(v)
        else:
            out[k] = copy.deepcopy(v)
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("type") == "object" and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if root:
        # ObjectMeta is the API server's, not the CRD's: checked by check_metadata.
        out["properties"]["metadata"] = {"type": "object"}
    return out


def list_type(validator, value, instance, schema):
    if not isinstance(instance, list):
        return
    if value == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = set()
        for item in instance:
            if isinstance(item, dict):
                key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
                if key in seen:
                    yield jsonschema.ValidationError(
                        f"duplicate entry for list-map keys {keys}: "
                        + ", ".join(f"{k}={item.get(k)!r}" for k in keys))
                seen.add(key)
    elif value == "set":
        items = [json.dumps(i, sort_keys=True) for i in instance]
        if len(items) != len(set(items)):
            yield jsonschema.ValidationError("duplicate items in a list of type set")


def cel_validations(validator, rules, instance, schema):
    for rule in rules:
        check = CEL_RULES.get(rule["rule"])
        if check is None:
            yield jsonschema.ValidationError(
                f"CEL rule not checked offline (add its twin to CEL_RULES): {rule['rule']}")
        elif not check(instance):
            yield jsonschema.ValidationError(rule.get("message", f"fails {rule['rule']}"))


Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {
    "x-kubernetes-list-type": list_type,
    "x-kubernetes-validations": cel_validations,
})


def check_metadata(meta, namespaced):
    problems = []
    if not isinstance(meta, dict):
        return ["metadata is not an object"]
    name = meta.get("name", "")
    if not (name and len(name) <= 253 and DNS_SUBDOMAIN.match(name)):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and (not namespaced or not DNS_LABEL.match(ns) or len(ns) > 63):
        problems.append(f"metadata.namespace {ns!r} is not valid here")
    for field in ("labels", "annotations"):
        for k, v in (meta.get(field) or {}).items():
            prefix, _, key = k.rpartition("/")
            if not (key and len(key) <= 63 and LABEL_NAME.match(key)
                    and (not prefix or DNS_SUBDOMAIN.match(prefix))):
                problems.append(f"metadata.{field} key {k!r} is not a qualified name")
            if not isinstance(v, str):
                problems.append(f"metadata.{field}.{k} is not a string")
            elif field == "labels" and (len(v) > 63 or not LABEL_VALUE.match(v)):
                problems.append(f"metadata.labels.{k} value {v!r} is not a label value")
    unknown = set(meta) - {"name", "generateName", "namespace", "labels", "annotations",
                           "finalizers", "ownerReferences"}
    if unknown:
        problems.append(f"metadata has fields a manifest does not set: {sorted(unknown)}")
    return problems


def main():
    rendered, schema_dir, core_out = sys.argv[1:4]
    schemas = {}
    if not os.path.isdir(schema_dir):
        # The schemas are not vendored: derived from other projects' CRDs, they are brought
        # by whoever runs the check (STARLING_CRD_SCHEMAS). Without them only the split runs.
        objs = [o for o in yaml.safe_load_all(open(rendered)) if o]
        core = [o for o in objs if is_core(o.get("apiVersion", ""))]
        with open(core_out, "w") as f:
            yaml.safe_dump_all(core, f, sort_keys=False)
        print(f"    SKIPPED: {len(objs) - len(core)} custom resources not schema-validated (no schemas at {schema_dir})")
        return
    for f in sorted(os.listdir(schema_dir)):
        if f.endswith(".json"):
            s = json.load(open(os.path.join(schema_dir, f)))
            api = f"{s['group']}/{s['version']}"
            schemas[(api, s["kind"])] = (s, Validator(to_json_schema(s["schema"], root=True)))
    objs = [o for o in yaml.safe_load_all(open(rendered)) if o]
    core, problems, checked = [], [], []
    for o in objs:
        api, kind = o.get("apiVersion", ""), o.get("kind", "")
        if is_core(api):
            core.append(o)
            continue
        name = f"{kind} {o.get('metadata', {}).get('name')}"
        if (api, kind) not in schemas:
            problems.append(f"{name}: no schema for {api} {kind} in {schema_dir}")
            continue
        s, validator = schemas[(api, kind)]
        problems += [f"{name}: {p}" for p in check_metadata(o.get("metadata"), s["scope"] == "Namespaced")]
        for e in sorted(validator.iter_errors(o), key=lambda e: list(e.absolute_path)):
            path = "/".join(str(p) for p in e.absolute_path) or "(root)"
            problems.append(f"{name}: {path}: {e.message}")
        checked.append(f"{kind} ({s['source'].split(' ')[0].rsplit('/', 1)[-1]} "
                       f"{s['source'].split(' ')[1]})")
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    if problems:
        for p in problems:
            print(f"    FAIL: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"    {len(checked)} custom resources valid: {', '.join(checked) or 'none'}")


if __name__ == "__main__":
    main()
