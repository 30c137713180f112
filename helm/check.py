#!/usr/bin/env python3
"""Checks the Helm chart without a cluster.

For the default values and each --values file (each with the --set overrides): strict
`helm lint` and a render with helm-python-sdk (values.schema.json enforced), validation of
every rendered object with kubernetes-validate (strict, Kubernetes --kube-version), then
assertions on the objects: gRPC probes on the health service, HPA aimed at the Deployment,
resources and a non-root read-only security context, a drain that fits the grace period.

    check.py [--values FILE]... [--set KEY=JSON]... [--after-drain SECS] [--env-names]

--after-drain is the server's own limit for the work after its drain (flushing the
exposure log, stopping the metrics port; `loyalscore::server::AFTER_DRAIN`, which the test
passes): the grace period must cover the drain plus that, with a second to spare.

--env-names prints the LOYALSCORE_* variables the server container gets (JSON), for the
test that compares them with the server's flags. Exit 0 when everything holds.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib

import helm_python
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "loyalscore")
RULES = os.path.join(CHART, "files", "loyalscore-rules.yaml")
VALIDATOR = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")


AFTER_DRAIN = 8


class CheckFailed(Exception):
    pass


def need(cond, what):
    if not cond:
        raise CheckFailed(what)


def set_path(values, dotted, raw):
    keys = dotted.split(".")
    node = values
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = json.loads(raw)


def render(values, kube_version):
    lint = helm_python.lint(CHART, values, strict=True, kube_version=kube_version)
    need(not lint.get("errors"), f"helm lint: {lint.get('errors')}")
    bad = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2]
    need(not bad, f"helm lint (strict): {bad}")
    chart = helm_python.Chart.load(CHART)
    out = chart.render(values, name="ls", namespace="ml", is_install=True)
    docs = []
    for name, text in sorted(out.items()):
        if name.endswith("NOTES.txt") or not text.strip():
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs, out


def validate(docs, kube_version):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f)
        path = f.name
    try:
        r = subprocess.run(
            [VALIDATOR, "--strict", "--quiet", "-k", kube_version, path],
            capture_output=True,
            text=True,
        )
        need(r.returncode == 0, f"kubernetes-validate: {r.stdout}{r.stderr}")
    finally:
        os.unlink(path)


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def server_container(docs):
    (dep,) = by_kind(docs, "Deployment")
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "server"]
    return dep, c


def assertions(docs, values):
    dep, c = server_container(docs)
    name = dep["metadata"]["name"]
    grpc_port = values["service"]["grpcPort"]
    probes = {k: c.get(k) for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    tls = values["server"]["tls"]["secretName"]
    for k, p in probes.items():
        if tls:
            # The kubelet's gRPC probe speaks no TLS: `loyalscore health` over TLS instead.
            cmd = (p or {}).get("exec", {}).get("command", [])
            need(cmd[:2] == ["loyalscore", "health"], f"{k} must run loyalscore health with TLS on")
            need(f"https://localhost:{grpc_port}" in cmd, f"{k} must probe https://localhost:{grpc_port}")
            need(("--tls-cert" in cmd) == values["server"]["tls"]["clientCertificates"],
                 f"{k} must present the pod's certificate exactly when client certificates are required")
        else:
            need(p and "grpc" in p, f"{k} must be a native gRPC probe")
            need(p["grpc"]["port"] == grpc_port, f"{k} must probe the gRPC port {grpc_port}")

    def service(p):
        if tls:
            cmd = p["exec"]["command"]
            return cmd[cmd.index("--service") + 1]
        return p["grpc"].get("service")
    need(service(probes["readinessProbe"]) == "loyalscore.v1.Scoring",
         "readiness must follow the model (service loyalscore.v1.Scoring)")
    need(service(probes["startupProbe"]) == "loyalscore.v1.Scoring",
         "the startup probe must wait for the model")
    need(service(probes["livenessProbe"]) == "liveness",
         "liveness must not depend on a model (service liveness)")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    need(ports.get("grpc") == grpc_port, "container port grpc")
    res = c.get("resources", {})
    need(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"),
         "resource requests (cpu and memory) must be set")
    need(res.get("limits", {}).get("memory"), "a memory limit must be set")
    sc = c.get("securityContext", {})
    need(sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
         and sc.get("allowPrivilegeEscalation") is False, "non-root, read-only security context")
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    need(grace >= values["server"]["drainSecs"] + AFTER_DRAIN + 1,
         f"terminationGracePeriodSeconds {grace} must cover drainSecs + {AFTER_DRAIN} s after the drain + 1 s")
    env = {e["name"]: e for e in c["env"]}
    need(env["LOYALSCORE_DRAIN_SECS"]["value"] == str(values["server"]["drainSecs"]), "drain value passed on")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if values["autoscaling"]["enabled"]:
        (hpa,) = hpas
        ref = hpa["spec"]["scaleTargetRef"]
        need(ref["kind"] == "Deployment" and ref["name"] == name, "the HPA must target the Deployment")
        need("replicas" not in dep["spec"], "with an HPA the Deployment leaves replicas to it")
    else:
        need(not hpas and dep["spec"]["replicas"] == values["replicaCount"], "replicas without HPA")
    (svc,) = by_kind(docs, "Service")
    need({p["name"] for p in svc["spec"]["ports"]} == {"grpc", "metrics"}, "service ports grpc and metrics")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for sel in [svc["spec"]["selector"]] + [p["spec"]["selector"]["matchLabels"] for p in by_kind(docs, "PodDisruptionBudget")]:
        need(all(labels.get(k) == v for k, v in sel.items()), "selectors must match the server pods")
    need(bool(by_kind(docs, "CronJob")) == values["trainer"]["enabled"], "a CronJob exactly when the trainer is enabled")
    for cj in by_kind(docs, "CronJob"):
        (t,) = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        need(t["command"] == ["loyalscore-train"] and t["args"][0] == "fit", "the CronJob runs loyalscore-train fit")
        need(("--promote" in t["args"]) == values["trainer"]["promote"], "promotion only when trainer.promote")
        need(("--gate-alias" in t["args"]) == values["trainer"]["promote"],
             "a promoting CronJob gates against the alias's version")
    image_and_no_shell(docs, values)
    rules = by_kind(docs, "PrometheusRule")
    need(bool(rules) == values["alerts"]["enabled"], "a PrometheusRule exactly when alerts.enabled")
    for r in rules:
        with open(RULES) as f:
            need(r["spec"] == yaml.safe_load(f), f"the PrometheusRule must hold {RULES} as it is")


def image_and_no_shell(docs, values):
    """Every container runs the chart's image (tag: the crate's version unless set), and none
    needs a shell: the image has none."""
    with open(os.path.join(os.path.dirname(HERE), "Cargo.toml"), "rb") as f:
        crate = tomllib.load(f)["package"]["version"]
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        app = yaml.safe_load(f)["appVersion"]
    need(app == crate, f"Chart.yaml appVersion {app} must be the crate version {crate}")
    want = f'{values["image"]["repository"]}:{values["image"]["tag"] or crate}'
    pods = [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]
    pods += [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in by_kind(docs, "CronJob")]
    for pod in pods:
        for c in pod["containers"]:
            need(c["image"] == want, f"container {c['name']} image {c['image']}, expected {want}")
            need(c["command"][0].startswith("loyalscore"), f"container {c['name']} must run a loyalscore binary, not {c['command']}")


def merged(user):
    """The chart's defaults with the user's values over them, as Helm merges them."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        base = yaml.safe_load(f)

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
        return a

    return merge(base, user)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", action="append", default=[])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--env-names", action="store_true")
    ap.add_argument("--kube-version", default="1.33.0")
    ap.add_argument("--after-drain", type=int, default=8)
    a = ap.parse_args()
    global AFTER_DRAIN
    AFTER_DRAIN = a.after_drain
    helm_python.disable_logging()
    runs = [("default values", {})] + [(f, yaml.safe_load(open(f)) or {}) for f in a.values]
    if a.env_names:
        user = {"server": {"adminToken": {"secretName": "any", "key": "token"},
                           "scoringTokens": {"secretName": "any", "key": "tokens"},
                           "tls": {"secretName": "any", "clientCertificates": True},
                           "exposureLog": "s3://bucket/exposures",
                           "exposureKey": {"secretName": "any", "key": "key"},
                           "state": "redis://redis:6379/0",
                           "kafka": {"brokers": "kafka:9092", "options": ["security.protocol=SSL"]}}}
        docs, _ = render(user, a.kube_version)
        _, c = server_container(docs)
        print(json.dumps(sorted(e["name"] for e in c["env"] if e["name"].startswith("LOYALSCORE_"))))
        return 0
    failed = False
    for label, user in runs:
        for s in a.set:
            k, _, v = s.partition("=")
            set_path(user, k, v)
        try:
            docs, _ = render(user, a.kube_version)
            validate(docs, a.kube_version)
            assertions(docs, merged(user))
            print(f"ok: {label}: {len(docs)} objects linted, rendered, validated (Kubernetes {a.kube_version}) and checked")
        except (CheckFailed, helm_python.HelmError) as e:
            print(f"FAILED: {label}: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
