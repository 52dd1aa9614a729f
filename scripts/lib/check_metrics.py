"""Checks k8s/monitoring's dashboard and rules against Starling's metric contract, offline.

    python check_metrics.py DASHBOARD.json RULES.yaml QUERIES_OUT.yaml

- dashboard.json is valid JSON, a Grafana dashboard of schemaVersion >= 36 with a
  `datasource` variable of type datasource (Prometheus), and every data source it names is
  that variable (`${datasource}`): no hard-coded uid, no __inputs;
- every panel has a unique id, a gridPos and, unless it is a row, Prometheus targets;
- every metric any panel query, variable query or rule expression names is in the
  contract (what the services emit: every name in shared/metrics/src/names.rs, read from
  there, and the process collector's) or is recorded by a rule in rules.yaml;
- every alert has a `severity` label and summary, description and runbook annotations,
  and each runbook points at a heading of the RUNBOOK.md it names;
- writes the dashboard's queries (Grafana's variables replaced by plain values) as
  recording rules to QUERIES_OUT.yaml, for `promtool check rules` to parse.

Exits non-zero with one line per problem.
"""
import json
import os
import re
import sys

import yaml

# Where every metric a Starling process emits is named, once.
NAMES_RS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/metrics/src/names.rs")
# What the prometheus crate's process collector adds (not ours to name, so not in names.rs).
PROCESS = {
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
    "process_open_fds", "process_max_fds", "process_start_time_seconds", "process_threads",
}


def read_contract(path):
    """The metric contract from names.rs: each `pub const X: &str = "...";` and, for the
    constants listed in `HISTOGRAMS`, their _bucket, _count and _sum series."""
    src = open(path).read()
    consts = dict(re.findall(r'^pub const ([A-Z0-9_]+): &str = "([A-Za-z_:][A-Za-z0-9_:]*)";', src, re.M))
    m = re.search(r"^pub const HISTOGRAMS: &\[&str\] = &\[(.*?)\];", src, re.M | re.S)
    if not consts or not m:
        sys.exit(f"    FAIL: cannot read the metric names from {path}: update check_metrics.py to its format")
    histograms = set()
    for ident in re.findall(r"[A-Z0-9_]+", m.group(1)):
        if ident not in consts:
            sys.exit(f"    FAIL: {path}: HISTOGRAMS names {ident}, which is not a metric name constant")
        histograms.add(consts[ident])
    # A histogram's own name selects nothing in Prometheus: only its three series do.
    names = set(consts.values()) - histograms
    return names | PROCESS | {h + s for h in histograms for s in ("_bucket", "_count", "_sum")}


CONTRACT = read_contract(NAMES_RS)

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "${__rate_interval}": "5m", "${__range}": "1h"}


def grafana_to_promql(expr):
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    # Template variables only appear inside label matchers' strings here.
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr):
    """The metric names a PromQL expression selects (a small tokenizer, no full parser)."""
    e = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"(?<![\w:.])(\d+(ms|[smhdwy]))+(?![\w:])", " ", e)  # durations (offset 5m)
    e = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", e)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue  # a function, an aggregation or an operator
        names.add(m.group(0))
    return names


def anchors(markdown):
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def main():
    dash_path, rules_path, queries_out = sys.argv[1:4]
    problems = []
    try:
        dash = json.load(open(dash_path))
    except ValueError as e:
        print(f"    FAIL: {dash_path} is not valid JSON: {e}", file=sys.stderr)
        sys.exit(1)
    rules = yaml.safe_load(open(rules_path))
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    known = CONTRACT | recorded

    # Rules: metric names, alert labels and annotations, runbook anchors.
    runbooks = {}
    for g in rules["groups"]:
        for r in g["rules"]:
            what = r.get("record") or r.get("alert")
            for n in sorted(metric_names(str(r["expr"])) - known):
                problems.append(f"rule {what}: metric {n} is not in the contract")
            if "alert" in r:
                if "severity" not in r.get("labels", {}):
                    problems.append(f"alert {what} has no severity label")
                for a in ("summary", "description", "runbook"):
                    if not r.get("annotations", {}).get(a):
                        problems.append(f"alert {what} has no {a} annotation")
                book, _, anchor = r.get("annotations", {}).get("runbook", "").partition("#")
                runbooks.setdefault(book, []).append((what, anchor))
    root = os.path.dirname(os.path.abspath(rules_path))
    for book, uses in runbooks.items():
        # `k8s/monitoring/RUNBOOK.md` names the file from the repository root.
        path = os.path.join(root, os.path.basename(book))
        if not book.endswith("RUNBOOK.md") or not os.path.exists(path):
            problems.extend(f"alert {a}: runbook {book!r} is not {root}/RUNBOOK.md" for a, _ in uses)
            continue
        have = anchors(open(path).read())
        problems.extend(f"alert {a}: RUNBOOK.md has no section #{anchor}"
                        for a, anchor in uses if anchor not in have)

    # The dashboard.
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')!r} is below 36")
    if "__inputs" in dash:
        problems.append("the dashboard has __inputs (an export for sharing): use ${datasource}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource for Prometheus")

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "datasource":
                    uid = v.get("uid") if isinstance(v, dict) else v
                    builtin = isinstance(v, dict) and v.get("type") == "grafana"
                    if path != "templating/datasource" and uid != "${datasource}" and not builtin:
                        problems.append(f"{path}: data source {v!r} is not ${{datasource}}")
                walk(v, f"{path}/{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk({k: v for k, v in dash.items() if k != "templating"}, "")
    walk({k: v for k, v in variables.items() if k != "datasource"}, "templating")

    queries = []
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q or ""
            m = re.match(r"^label_values\((.*),\s*\w+\)$", q)
            queries.append((f"variable {name}", m.group(1) if m else q))
    ids = set()

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        title = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids or not isinstance(p.get("id"), int):
            problems.append(f"{title}: id missing or not unique")
        ids.add(p.get("id"))
        if not all(k in p.get("gridPos", {}) for k in ("h", "w", "x", "y")):
            problems.append(f"{title}: no gridPos")
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            problems.append(f"{title}: no queries")
        for t in p.get("targets", []):
            if not t.get("expr"):
                problems.append(f"{title}: target {t.get('refId')} has no expr")
                continue
            queries.append((f"{title} target {t.get('refId')}", t["expr"]))
    if not ids:
        problems.append("the dashboard has no panels")

    out = []
    for where, q in queries:
        promql = grafana_to_promql(q)
        for n in sorted(metric_names(promql) - known):
            problems.append(f"{where}: metric {n} is neither in the contract nor recorded in rules.yaml")
        out.append({"record": f"dashboard:query:{len(out)}", "expr": promql})
    with open(queries_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": out}]}, f, sort_keys=False)

    if problems:
        for p in problems:
            print(f"    FAIL: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"    dashboard: {len(ids)} panels, {len(queries)} queries; rules: {len(recorded)} recorded, "
          f"{sum(len(u) for u in runbooks.values())} alerts; every metric is in the contract")


if __name__ == "__main__":
    main()
