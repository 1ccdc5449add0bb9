#!/usr/bin/env python3
"""Checks on the deploy kit that need YAML and JSON, called by scripts/lint-deploy.

  lint_deploy.py crds RENDERED.yaml...      prometheus-operator objects against their schemas
  lint_deploy.py consistency RENDERED.yaml  the manifest agrees with its payguard config
  lint_deploy.py secrets SCHEMA RENDERED... every secret in the config is a file of payguard's Secret
  lint_deploy.py rules-match                PrometheusRule spec == deploy/prometheus/payguard.rules.yaml
  lint_deploy.py rules-tested               every alert has promtool cases where it fires and where not
  lint_deploy.py dashboard-rules OUT.yaml   the dashboard's queries as a rules file, for promtool
  lint_deploy.py docs-match                 docs/deploy.md names the versions and commands run here
"""

import json
import pathlib
import re
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "deploy/schemas"
DASHBOARD = ROOT / "deploy/grafana/payguard.json"
RULES = ROOT / "deploy/prometheus/payguard.rules.yaml"
RULES_TEST = ROOT / "deploy/prometheus/payguard.rules.test.yaml"
PROMETHEUS_RULE = ROOT / "deploy/kubernetes/base/prometheusrule.yaml"
LINT_DEPLOY = ROOT / "scripts/lint-deploy"
DEPLOY_DOC = ROOT / "docs/deploy.md"


def fail(msg):
    print(f"lint-deploy: {msg}", file=sys.stderr)
    sys.exit(1)


def documents(paths):
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield path, doc


def strict(schema):
    """Unknown fields are errors, as kubectl's strict field validation treats them: every object
    schema that lists its properties and does not preserve unknown fields gets
    additionalProperties: false (what kubeconform's --strict does for CRDs)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crds(paths):
    checked = 0
    for path, doc in documents(paths):
        group, _, version = doc.get("apiVersion", "").rpartition("/")
        if group != "monitoring.coreos.com":
            continue
        schema_file = SCHEMAS / f"{doc['kind'].lower()}-{group}-{version}.json"
        if not schema_file.exists():
            fail(f"{path}: no schema for {doc['kind']} {doc['apiVersion']} in {SCHEMAS}")
        schema = strict(json.loads(schema_file.read_text()))
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            print(f"{path}: {doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}", file=sys.stderr)
        if errors:
            sys.exit(1)
        checked += 1
    print(f"  {checked} prometheus-operator objects valid")


def by_kind(doc_list, kind):
    return [d for d in doc_list if d.get("kind") == kind]


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)s", str(text))
    if not m:
        fail(f"expected a duration in seconds like 10s, got {text!r}")
    return int(m.group(1))


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def rendered_pod(path):
    """A rendering's documents, payguard's config from its ConfigMap, the Deployment's pod spec
    and every container of it (native sidecars in initContainers included)."""
    docs = [d for _, d in documents([path])]
    (deploy,) = by_kind(docs, "Deployment")
    (configmap,) = by_kind(docs, "ConfigMap")
    config = yaml.safe_load(configmap["data"]["payguard.yaml"])
    pod = deploy["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod["containers"]
    return docs, config, pod, containers


def consistency(path):
    docs, config, pod, containers = rendered_pod(path)
    (pg,) = [c for c in containers if c["name"] == "payguard"]
    app = [c for c in containers if c["name"] != "payguard"]
    problems = []

    server = config["server"]
    pre_stop = pg["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + duration_seconds(server["grace_period"]) + duration_seconds(server["shutdown_timeout"])
    grace = pod["terminationGracePeriodSeconds"]
    if not needed < grace <= needed + 10:
        problems.append(
            f"terminationGracePeriodSeconds {grace} should be just above preStop {pre_stop}s + grace_period + shutdown_timeout = {needed}s"
        )
    ports = {p["name"]: p["containerPort"] for p in pg["ports"]}
    if ports.get("http") != port_of(server["listen"]):
        problems.append(f"container port http {ports.get('http')} is not server.listen {server['listen']}")
    probe_listen = config["admin"].get("probe_listen")
    if not probe_listen or ports.get("probes") != port_of(probe_listen):
        problems.append(f"container port probes {ports.get('probes')} is not admin.probe_listen {probe_listen}")
    admin_listen = str(config["admin"]["listen"])
    if not admin_listen.startswith("127.0.0.1:") and ports.get("admin") != port_of(admin_listen):
        problems.append(f"container port admin {ports.get('admin')} is not admin.listen {admin_listen}")
    if not admin_listen.startswith("127.0.0.1:") and not config["admin"].get("token"):
        problems.append("an admin API reachable from other pods needs admin.token")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if pg.get(probe, {}).get("httpGet", {}).get("port") != "probes":
            problems.append(f"{probe} must use the probes port")
    up_port = port_of(config["upstream"]["address"])
    if not str(config["upstream"]["address"]).startswith("127.0.0.1:"):
        problems.append("upstream.address must be the app on 127.0.0.1")
    app_ports = {e["value"] for c in app for e in c.get("env", []) if e["name"] == "PORT"}
    if app_ports != {str(up_port)}:
        problems.append(f"the app listens on {app_ports}, payguard forwards to {up_port}")
    app_hosts = {e["value"] for c in app for e in c.get("env", []) if e["name"] == "HOST"}
    if app_hosts != {"127.0.0.1"}:
        problems.append(f"the app must bind 127.0.0.1 (HOST), so only payguard reaches it; it binds {app_hosts or 'its default'}")
    for monitor in by_kind(docs, "PodMonitor"):
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            if (endpoint.get("port"), endpoint.get("path")) != ("probes", "/metrics"):
                problems.append(f"PodMonitor {monitor['metadata']['name']} must scrape /metrics on the probes port")
    if pod["securityContext"].get("runAsUser") != 65532 or not pod["securityContext"].get("runAsNonRoot"):
        problems.append("the pod must run as the image's user 65532, runAsNonRoot")
    if pod["securityContext"].get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("the pod must use the RuntimeDefault seccomp profile (restricted Pod Security)")
    for c in containers:
        sc = c.get("securityContext", {})
        if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            problems.append(f"container {c['name']}: restricted securityContext missing")
        resources = c.get("resources", {})
        if not (resources.get("requests", {}).get("cpu") and resources.get("requests", {}).get("memory") and resources.get("limits", {}).get("memory")):
            problems.append(f"container {c['name']}: needs cpu and memory requests and a memory limit")
        for m in c.get("volumeMounts", []):
            if "subPath" in m:
                problems.append(f"container {c['name']}: subPath mounts never see ConfigMap/Secret updates")
    # Only payguard's ports are reachable from outside the pod: every ingress rule names its
    # ports (a rule without ports opens all of them), and they are payguard's.
    # The admin port only to the reconcile CronJob's pods.
    (policy,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "shop"]
    reconcile_pods = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "payguard-reconcile"}}}]
    for i, rule in enumerate(policy["spec"].get("ingress", [])):
        open_ports = [p.get("port") for p in rule.get("ports", [])]
        if not open_ports or any(p not in ("http", "probes", "admin") for p in open_ports):
            problems.append(f"NetworkPolicy ingress[{i}] opens {open_ports or 'every port'}; only payguard's http, probes and admin ports may be reachable")
        if "admin" in open_ports and rule.get("from") != reconcile_pods:
            problems.append(f"NetworkPolicy ingress[{i}] opens the admin port to more than the reconcile CronJob's pods")
    for job in by_kind(docs, "CronJob"):
        spec = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        labels = job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/name") != "payguard-reconcile":
            problems.append(f"CronJob {job['metadata']['name']}: its pods must carry app.kubernetes.io/name: payguard-reconcile")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                problems.append(f"CronJob container {c['name']}: restricted securityContext missing")
            args = c.get("args", [])
            if "--admin" in args and not args[args.index("--admin") + 1].endswith(f":{port_of(admin_listen)}"):
                problems.append(f"CronJob container {c['name']}: --admin is not the admin port {port_of(admin_listen)}")
    if "Egress" not in policy["spec"].get("policyTypes", []):
        problems.append("the NetworkPolicy must restrict egress too (DNS and Redis)")
    for p in problems:
        print(f"{path}: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"  {path}: probes, ports, shutdown timing, security context, resources and ingress agree with the config")


def resolve(schema, node):
    """A schema node with `$ref`s and single-`allOf` wrappers followed."""
    while True:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        elif len(node.get("allOf", [])) == 1:
            node = node["allOf"][0]
        else:
            return node


def secret_values(schema, node, value, path):
    """(key path, value) of every field of `value` the schema marks writeOnly (payguard's secrets)."""
    node = resolve(schema, node)
    if node.get("writeOnly") and isinstance(value, str):
        yield path, value
        return
    if isinstance(value, dict):
        for branch in node.get("anyOf", []) + node.get("oneOf", []):
            branch = resolve(schema, branch)
            required = branch.get("required", [])
            if branch.get("type") == "object" and all(k in value for k in required):
                yield from secret_values(schema, branch, value, path)
                return
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from secret_values(schema, sub, item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        items = node.get("items")
        for branch in node.get("anyOf", []) + node.get("oneOf", []):
            if resolve(schema, branch).get("type") == "array":
                items = resolve(schema, branch).get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                yield from secret_values(schema, items, item, f"{path}[{i}]")
    elif isinstance(value, str):
        for branch in node.get("anyOf", []) + node.get("oneOf", []):
            if resolve(schema, branch).get("writeOnly"):
                yield path, value
                return


def secrets(schema_path, paths):
    """Keys and secrets reach payguard as files of its Secret (docs/deploy.md, "Secrets"): every
    secret field of the ConfigMap's config (the schema marks them writeOnly) is a `file:`
    reference into the Secret volume, which only the payguard container mounts."""
    schema = json.loads(pathlib.Path(schema_path).read_text())
    for path in paths:
        _, config, pod, containers = rendered_pod(path)
        secret_volumes = {v["name"] for v in pod["volumes"] if "secret" in v}
        problems = []
        mounts = {}
        for c in containers:
            for m in c.get("volumeMounts", []):
                if m["name"] in secret_volumes:
                    if c["name"] != "payguard":
                        problems.append(f"container {c['name']} mounts payguard's Secret {m['name']}")
                    else:
                        mounts[m["mountPath"].rstrip("/") + "/"] = m["name"]
        found = list(secret_values(schema, schema, config, ""))
        for key, value in found:
            if not value.startswith("file:"):
                problems.append(f"{key}: secrets must be `file:` references to the mounted Secret, not inline or env:")
            elif not any(value[len("file:"):].startswith(m) for m in mounts):
                problems.append(f"{key}: {value} is not in a Secret volume mounted into payguard ({', '.join(mounts) or 'none'})")
        if len(found) < 3:
            problems.append(f"only {len(found)} secrets found in the config; the schema walk is broken")
        for p in problems:
            print(f"{path}: {p}", file=sys.stderr)
        if problems:
            sys.exit(1)
        print(f"  {path}: {len(found)} secrets, each a file of the Secret mounted into payguard")


def rules_match():
    plain = yaml.safe_load(RULES.read_text())
    wrapped = yaml.safe_load(PROMETHEUS_RULE.read_text())
    if wrapped["spec"] != plain:
        fail(f"{PROMETHEUS_RULE} spec differs from {RULES}; copy the groups over")
    print(f"  {PROMETHEUS_RULE.name} has the same groups as {RULES.name}")


def rules_tested():
    """`promtool test rules` passes for the cases that exist; this checks that every alert has
    one: a case where it fires (so a broken expression cannot pass unnoticed) and one where it
    stays quiet (so an expression that always fires cannot either)."""
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    tests = yaml.safe_load(RULES_TEST.read_text())
    if tests.get("rule_files") != [RULES.name]:
        fail(f"{RULES_TEST.name} must test {RULES.name} (rule_files: [{RULES.name}])")
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    problems = [f"alert {a} has no test case where it fires" for a in alerts if a not in firing]
    problems += [f"alert {a} has no test case where it stays quiet" for a in alerts if a not in quiet]
    problems += [f"{RULES_TEST.name} tests {a}, which {RULES.name} does not define" for a in sorted((firing | quiet) - set(alerts))]
    for p in problems:
        print(f"{RULES_TEST}: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"  all {len(alerts)} alerts are tested firing and quiet")


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def dashboard_rules(out_path):
    """Every query with Grafana's variables filled in, as recording rules: `promtool check
    rules` then parses each one."""
    substitutions = {"$__rate_interval": "5m", "$namespace": ".*", "$route": ".*"}
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            fail(f"dashboard panel {title!r}: unknown variable in {expr}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    pathlib.Path(out_path).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    print(f"  {len(rules)} dashboard queries written to {out_path}")


def bash_array(script, name):
    m = re.search(rf"^{name}=\(([^)]*)\)", script, re.M)
    if not m:
        fail(f"{LINT_DEPLOY}: no {name}=(...) array")
    return m.group(1).split()


def docs_match():
    """docs/deploy.md tells readers to run what CI runs: the pinned tool versions, the Kubernetes
    versions validated against, and the promtool and hadolint commands, word for word."""
    script = LINT_DEPLOY.read_text()
    # Markdown wraps long commands; compare with whitespace collapsed and code marks removed.
    doc = " ".join(DEPLOY_DOC.read_text().replace("`", " ").split())
    wanted = bash_array(script, "PIP_TOOLS") + bash_array(script, "K8S_VERSIONS")
    for line in script.splitlines():
        line = line.strip()
        # Commands on the repository's files; one on a temporary file is described in prose.
        if line.startswith(("promtool ", "hadolint ")) and "$" not in line:
            wanted.append(" ".join(line.split("&&")[0].split()))
    image = re.search(r"^\s*scripts/image (.*)$", script, re.M)
    if not image:
        fail(f"{LINT_DEPLOY}: no scripts/image call")
    flags = re.findall(r"--[a-z]+", image.group(1))
    documented = re.findall(r"scripts/image((?: --?[a-z]+(?: [^ -][^ ]*)?)+)", doc)
    if not any(all(f in d.split() for f in flags) for d in documented):
        wanted.append(f"scripts/image {' '.join(flags)}")
    missing = [w for w in wanted if w not in doc]
    for w in missing:
        print(f"{DEPLOY_DOC}: does not say `{w}`, which {LINT_DEPLOY.name} runs", file=sys.stderr)
    if missing:
        sys.exit(1)
    print(f"  {DEPLOY_DOC.name} names the {len(wanted)} versions and commands {LINT_DEPLOY.name} uses")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "crds": lambda: crds(args),
        "consistency": lambda: consistency(args[0]),
        "secrets": lambda: secrets(args[0], args[1:]),
        "rules-match": rules_match,
        "rules-tested": rules_tested,
        "dashboard-rules": lambda: dashboard_rules(args[0]),
        "docs-match": docs_match,
    }[cmd]()
