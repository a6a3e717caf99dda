"""The Helm chart, checked with the real helm and kubectl binaries (installed by `make tools`).

Rendered built-in objects are validated against the Kubernetes OpenAPI schemas of the oldest
version the chart supports and of kubectl's version (kubernetes-validate, strict: unknown fields
fail); example OptimizedModels against the CRD the chart ships.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "honed"
EXAMPLES = REPO / "examples"
RELEASE, NAMESPACE = "honed", "honed-system"
# The chart's kubeVersion floor and the version of the kubectl that `make tools` installs.
KUBE_VERSIONS = ("1.30.0", "1.35.0")
# Kinds of the Prometheus Operator, whose schemas kubernetes-validate does not have.
MONITOR_KINDS = {"ServiceMonitor", "PodMonitor"}
# The operator's settings contract (honed.controller.settings), one variable per field.
SETTINGS_ENV = {
    "HONED_POOLS",
    "HONED_ARTIFACT_STORE",
    "HONED_ARTIFACT_SECRET",
    "HONED_TRITON_IMAGE",
    "HONED_OPTIMIZER_SERVICE_ACCOUNT",
    "HONED_WATCH_NAMESPACES",
    "HONED_PROMETHEUS_URL",
    "HONED_METRICS_PORT",
    "HONED_HEALTH_PORT",
    "HONED_LOG_LEVEL",
    "HONED_PVC_MOUNT_ROOT",
    "HONED_RESYNC_INTERVAL_S",
    "HONED_API_QPS",
    "HONED_API_BURST",
    "HONED_MAX_CONCURRENT_RECONCILES",
}
STANDARD_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
}
EXAMPLE_VALUES = sorted(EXAMPLES.glob("**/values*.yaml"))
# Every chart feature on at once, namespaced: what the examples leave off is rendered here.
ALL_FEATURES = {
    "operator": {"watchNamespaces": ["ml", "search", "ml"], "extraEnv": [{"name": "X", "value": "1"}]},
    "serviceAccount": {"optimizer": {"extraNamespaces": ["batch"], "annotations": {"a": "b"}}},
    "artifactStore": {"uri": "s3://bucket/prefix", "secretName": "store"},
    "image": {"repository": "registry.local/honed-operator", "digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "pull"}],
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "podMonitor": {"enabled": True},
    "grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}},
}


def _tool(name: str) -> str:
    local = REPO / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: `make tools` puts it in .tools/bin")
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    # A private HOME: helm must not read or write the user's repositories and cache.
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/honed-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/honed-helm/cfg",
    }
    return subprocess.run([_tool("helm"), *args], capture_output=True, text=True, env=env, timeout=60)


def render(*values: Path, kube_version: str = KUBE_VERSIONS[-1], sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", kube_version]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs, "Deployment")
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container["env"]}


def chart_crds() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["spec"]["names"]["kind"]] = doc
    return docs


def crd_validator(crd: dict[str, Any]) -> jsonschema.Draft4Validator:
    """A validator for one CRD version's schema that, like `kubectl apply` (field validation
    Strict), rejects unknown fields instead of pruning them. OpenAPI v3.0 bounds are Draft 4's."""

    def close(node: Any) -> Any:
        if isinstance(node, list):
            return [close(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: close(value) for key, value in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out

    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = close(version["schema"]["openAPIV3Schema"])
    # metadata is the API server's to check; keep it open.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft4Validator(schema)


def validate_model(manifest: dict[str, Any]) -> list[str]:
    crds = chart_crds()
    crd = crds[manifest["kind"]]
    group, _, version = manifest["apiVersion"].partition("/")
    problems = []
    if group != crd["spec"]["group"] or version not in {v["name"] for v in crd["spec"]["versions"]}:
        problems.append(f"apiVersion {manifest['apiVersion']} is not served by the CRD")
    problems += [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in crd_validator(crd).iter_errors(manifest)
    ]
    return problems


def example_models() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "OptimizedModel":
                found.append((path, doc))
    return found


# --- lint and render --------------------------------------------------------------------------


def test_examples_provide_values_files() -> None:
    names = {p.parent.name for p in EXAMPLE_VALUES}
    assert {"cpu-only", "cpu-gpu-cost"} <= names, EXAMPLE_VALUES


@pytest.mark.parametrize("values", [None, *EXAMPLE_VALUES], ids=lambda p: p and str(p.relative_to(REPO)))
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [None, *EXAMPLE_VALUES, "all-features"], ids=str)
def test_rendered_objects_are_valid_kubernetes(values: Path | str | None, kube_version: str, tmp_path: Path) -> None:
    if values == "all-features":
        values = values_file(tmp_path, ALL_FEATURES)
    docs = render(*([values] if isinstance(values, Path) else []), kube_version=kube_version)
    assert by_kind(docs, "Deployment"), "the operator Deployment is missing"
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"]["labels"].keys() >= STANDARD_LABELS, name
        if doc["kind"] in MONITOR_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1", name
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{name} is invalid for Kubernetes {kube_version}: {where}: {exc.message}")


def test_schema_validation_of_rendered_objects_can_fail() -> None:
    (deployment,) = by_kind(render(), "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[-1], strict=True)


def test_all_features_render_what_they_promise(tmp_path: Path) -> None:
    docs = render(values_file(tmp_path, ALL_FEATURES))
    kinds = {doc["kind"] for doc in docs}
    assert {"ServiceMonitor", "PodMonitor", "ConfigMap", "Role", "RoleBinding"} <= kinds
    (podmonitor,) = by_kind(docs, "PodMonitor")
    assert podmonitor["spec"]["namespaceSelector"] == {"matchNames": ["ml", "search"]}
    # The labels honed.controller.names puts on Triton pods.
    assert podmonitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "honed",
        "app.kubernetes.io/part-of": "honed",
        "app.kubernetes.io/component": "server",
    }
    (dashboard,) = by_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["honed.json"])["uid"] == "honed-overview"
    container = operator_container(docs)
    assert container["image"] == "registry.local/honed-operator@sha256:" + "a" * 64
    assert container["envFrom"] == [{"secretRef": {"name": "store"}}]


# --- what the operator gets -------------------------------------------------------------------


def test_operator_pod_is_locked_down() -> None:
    docs = render()
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = operator_container(docs)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # A busy operator on a starved node answers late: a slow start and 2 min of silence are tolerated.
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    assert startup["httpGet"] == liveness["httpGet"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 120 and liveness["timeoutSeconds"] >= 10
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["args"] == ["operator"]


def test_settings_reach_the_operator_as_its_env_contract(tmp_path: Path) -> None:
    values = yaml.safe_load((EXAMPLES / "cpu-gpu-cost" / "values.yaml").read_text())
    docs = render(values_file(tmp_path, values))
    env = env_of(operator_container(docs))
    assert env.keys() >= SETTINGS_ENV
    pools = json.loads(env["HONED_POOLS"])
    assert [p["name"] for p in pools] == [p["name"] for p in values["pools"]]
    for rendered, given in zip(pools, values["pools"], strict=True):
        assert rendered["device"] == given["device"]
        assert rendered["pricePerHour"] == given["pricePerHour"]
        assert rendered["image"] == f"{given['image']['repository']}:0.1.0"
        assert rendered["resources"] == given["resources"]
        assert rendered["tolerations"] == given.get("tolerations", [])
    assert env["HONED_ARTIFACT_STORE"] == values["artifactStore"]["uri"]
    assert env["HONED_ARTIFACT_SECRET"] == values["artifactStore"]["secretName"]
    assert env["HONED_WATCH_NAMESPACES"] == ""
    assert env["HONED_OPTIMIZER_SERVICE_ACCOUNT"] == "honed-optimizer"
    assert env["HONED_TRITON_IMAGE"] == "ghcr.io/honed-dev/honed-triton:0.1.0"
    assert (env["HONED_METRICS_PORT"], env["HONED_HEALTH_PORT"]) == ("8080", "8081")


# --- RBAC ---------------------------------------------------------------------------------------


def _rules(docs: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    return {
        doc["metadata"]["name"] + "@" + doc["metadata"].get("namespace", ""): doc["rules"]
        for doc in by_kind(docs, kind)
    }


def test_rbac_is_least_privilege_in_both_scopes(tmp_path: Path) -> None:
    cluster = render()
    namespaced = render(values_file(tmp_path, {"operator": {"watchNamespaces": ["ml", "search"]}}))
    for docs in (cluster, namespaced):
        for rules in [*_rules(docs, "ClusterRole").values(), *_rules(docs, "Role").values()]:
            for rule in rules:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
                assert "secrets" not in rule["resources"], "the operator never reads Secrets"
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
                assert not [r for r in rule["resources"] if r.endswith(("/exec", "/attach", "/portforward"))]
                assert "rbac.authorization.k8s.io" not in rule["apiGroups"], rule

    # Cluster-wide: the operator's rules in a ClusterRole, no Roles.
    assert "honed-operator@" in _rules(cluster, "ClusterRole")
    assert not by_kind(cluster, "Role")

    # Namespaced: a Role per watched namespace; cluster-wide only read access for discovery.
    assert set(_rules(namespaced, "Role")) == {"honed-operator@ml", "honed-operator@search"}
    assert set(_rules(namespaced, "ClusterRole")) == {"honed-discovery@"}
    for rule in _rules(namespaced, "ClusterRole")["honed-discovery@"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind(namespaced, "RoleBinding")}
    assert bindings == {("ml", "honed-operator"), ("search", "honed-operator")}
    for binding in [*by_kind(namespaced, "RoleBinding"), *by_kind(namespaced, "ClusterRoleBinding")]:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "honed-operator", "namespace": NAMESPACE}]


def test_operator_may_do_what_the_controller_does() -> None:
    (role,) = [r for r in by_kind(render(), "ClusterRole") if r["metadata"]["name"] == "honed-operator"]
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = [
        ("honed.dev", "optimizedmodels", v) for v in ("get", "list", "watch", "patch")
    ] + [
        ("honed.dev", "optimizedmodels/status", "patch"),
        ("batch", "jobs", "create"), ("batch", "jobs", "watch"), ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("apps", "deployments", "create"), ("apps", "deployments", "patch"),
        ("", "services", "create"), ("", "events", "create"),
    ]  # fmt: skip
    assert [n for n in needed if n not in allowed] == []


def test_optimizer_account_has_no_token_and_no_binding(tmp_path: Path) -> None:
    docs = render(values_file(tmp_path, ALL_FEATURES))
    accounts = [sa for sa in by_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == "honed-optimizer"]
    assert sorted(sa["metadata"]["namespace"] for sa in accounts) == sorted({NAMESPACE, "ml", "search", "batch"})
    for account in accounts:
        assert account["automountServiceAccountToken"] is False
        assert account["metadata"]["annotations"] == {"a": "b"}
    bound = {
        s["name"] for b in [*by_kind(docs, "RoleBinding"), *by_kind(docs, "ClusterRoleBinding")] for s in b["subjects"]
    }
    assert bound == {"honed-operator"}


# --- values schema ------------------------------------------------------------------------------

BAD_VALUES = [
    ({"pools": [{"name": "cpu", "device": "tpu", "image": {"repository": "x"}}]}, "device"),
    ({"pools": []}, "pools"),
    ({"pools": [{"name": "CPU pool", "device": "cpu", "image": {"repository": "x"}}]}, "name"),
    (
        {"pools": [{"name": "cpu", "device": "cpu", "image": {"repository": "x"}, "pricePerHour": -1}]},
        "pricePerHour",
    ),
    (
        {"pools": [{"name": "cpu", "device": "cpu", "image": {"repository": "x"}, "nodeSelectr": {}}]},
        "nodeSelectr",
    ),
    ({"operator": {"logLevel": "verbose"}}, "logLevel"),
    ({"operator": {"watchNamespaces": "ml"}}, "watchNamespaces"),
    ({"artifactStore": {"uri": "bucket/prefix"}}, "uri"),
    ({"prometheus": {"url": "prometheus:9090"}}, "url"),
    ({"serviceMonitor": {"enabled": "yes"}}, "enabled"),
    ({"rbac": {"create": True, "scope": "cluster"}}, "scope"),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES, ids=[field for _, field in BAD_VALUES])
def test_values_that_break_the_schema_fail_to_render(values: dict[str, Any], field: str, tmp_path: Path) -> None:
    done = helm("template", RELEASE, str(CHART), "-f", str(values_file(tmp_path, values)))
    assert done.returncode != 0, f"rendered although {field} is invalid"
    assert "schema" in done.stderr and field in done.stderr, done.stderr


def test_duplicate_pool_names_fail_with_the_fix(tmp_path: Path) -> None:
    pool = {"name": "cpu", "device": "cpu", "image": {"repository": "x"}}
    done = helm("template", RELEASE, str(CHART), "-f", str(values_file(tmp_path, {"pools": [pool, pool]})))
    assert done.returncode != 0
    assert 'the name "cpu" is used twice' in done.stderr


def test_every_documented_value_is_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is in values.yaml but not in the schema"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(defaults, schema, "values")


# --- CRDs and example manifests -----------------------------------------------------------------


def test_chart_crds_equal_the_generated_crds() -> None:
    generated = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    shipped = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert generated, "crds/ is empty: `make generate` writes it from honed.api"
    assert shipped.keys() == generated.keys(), "`make generate` copies crds/*.yaml to charts/honed/crds/"
    for name, content in generated.items():
        assert shipped[name] == content, f"charts/honed/crds/{name} differs from crds/{name}: run `make generate`"


def test_chart_ships_the_optimizedmodel_crd() -> None:
    crd = chart_crds()["OptimizedModel"]
    assert crd["spec"]["group"] == "honed.dev"
    assert "om" in crd["spec"]["names"]["shortNames"]
    assert any(v["name"] == "v1alpha1" and "status" in v.get("subresources", {}) for v in crd["spec"]["versions"])


def test_examples_hold_models_for_every_layout() -> None:
    layouts = {path.relative_to(EXAMPLES).parts[0] for path, _ in example_models()}
    assert {"cpu-only", "cpu-gpu-cost", "gitops"} <= layouts


@pytest.mark.parametrize(
    ("path", "manifest"), example_models(), ids=[str(p.relative_to(EXAMPLES)) for p, _ in example_models()]
)
def test_example_models_validate_against_the_crd(path: Path, manifest: dict[str, Any]) -> None:
    assert validate_model(manifest) == []
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])


def test_example_model_targets_name_pools_of_their_values() -> None:
    for path, manifest in example_models():
        values_path = path.parent / "values.yaml"
        if values_path.exists():
            pools = {p["name"] for p in yaml.safe_load(values_path.read_text())["pools"]}
            targets = {t["pool"] for t in manifest["spec"]["targets"]}
            assert targets <= pools, f"{path.name} targets {targets - pools}, not in {values_path.name}"


BROKEN_MODELS = [
    ("spec.search.objective", lambda m: m["spec"]["search"].update(objective="fastest")),
    ("spec.targets", lambda m: m["spec"].pop("targets")),
    ("spec.model.uri", lambda m: m["spec"]["model"].update(uri="models/resnet50.onnx")),
    ("spec.serving.replica", lambda m: m["spec"]["serving"].update(replica=2)),
    ("spec.validation.maxMetricDrop", lambda m: m["spec"]["validation"].update(maxMetricDrop=-0.1)),
]


@pytest.mark.parametrize(("field", "breaks"), BROKEN_MODELS, ids=[f for f, _ in BROKEN_MODELS])
def test_crd_validation_rejects_broken_models(field: str, breaks: Any) -> None:
    manifest = yaml.safe_load((EXAMPLES / "cpu-only" / "optimizedmodel.yaml").read_text())
    breaks(manifest)
    assert validate_model(manifest), f"a manifest with a bad {field} passed"


# --- GitOps ------------------------------------------------------------------------------------


def _gitops_values() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((EXAMPLES / "gitops").glob("**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Application" and "helm" in doc["spec"]["source"]:
                found.append((path.name, doc["spec"]["source"]["helm"]["valuesObject"]))
            if doc.get("kind") == "HelmRelease":
                found.append((path.name, doc["spec"]["values"]))
    return found


def test_gitops_releases_point_at_the_chart_and_render(tmp_path: Path) -> None:
    found = _gitops_values()
    assert {name for name, _ in found} == {"honed.yaml", "helmrelease.yaml"}
    for name, values in found:
        docs = render(values_file(tmp_path, values, name))
        assert by_kind(docs, "Deployment"), name


@pytest.mark.parametrize("directory", ["gitops/models", "gitops/flux/operator"])
def test_gitops_kustomizations_build(directory: str) -> None:
    done = subprocess.run(
        [_tool("kubectl"), "kustomize", str(EXAMPLES / directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    for doc in docs:
        if doc["kind"] == "OptimizedModel":
            assert doc["metadata"]["namespace"] == "ml"
            assert validate_model(doc) == []
        elif doc["kind"] in {"Namespace"}:
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
    assert docs


def test_gitops_paths_exist() -> None:
    for path in sorted((EXAMPLES / "gitops").glob("**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Application":
                assert (REPO / doc["spec"]["source"]["path"]).is_dir(), path
            if doc.get("kind") == "Kustomization" and "path" in doc.get("spec", {}):
                assert (REPO / doc["spec"]["path"]).is_dir(), path
            if doc.get("kind") == "HelmRelease":
                assert (REPO / doc["spec"]["chart"]["spec"]["chart"]).is_dir(), path


# --- the operator reads what the chart writes ----------------------------------------------------


@pytest.mark.parametrize("values", [None, *EXAMPLE_VALUES, "all-features"], ids=str)
def test_operator_settings_accept_the_rendered_env(
    values: Path | str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from honed.controller.settings import load_settings

    if values == "all-features":
        values = values_file(tmp_path, ALL_FEATURES)
    docs = render(*([values] if isinstance(values, Path) else []))
    env = env_of(operator_container(docs))
    for name in [n for n in os.environ if n.startswith("HONED_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    given = yaml.safe_load(Path(values).read_text()) if isinstance(values, Path) else {}
    expected_pools = given.get("pools") or yaml.safe_load((CHART / "values.yaml").read_text())["pools"]
    assert settings.pool_names() == [p["name"] for p in expected_pools]
    assert settings.artifact_store == env["HONED_ARTIFACT_STORE"]
    assert settings.watch_namespaces == list(dict.fromkeys(given.get("operator", {}).get("watchNamespaces", [])))
    assert settings.optimizer_service_account == "honed-optimizer"
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)


def test_pvc_store_is_mounted_where_the_operator_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from honed.controller.settings import load_settings

    docs = render(values_file(tmp_path, {"artifactStore": {"uri": "pvc://shared-store/honed"}}))
    container = operator_container(docs)
    for name, value in env_of(container).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["artifact-store"] == f"{settings.pvc_mount_root}/shared-store"
    (deployment,) = by_kind(docs, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["artifact-store"]["persistentVolumeClaim"] == {"claimName": "shared-store"}


def test_credentials_secret_lands_where_pods_read_it(tmp_path: Path) -> None:
    values: dict[str, Any] = {
        "operator": {"watchNamespaces": ["ml"]},
        "artifactStore": {"credentials": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"}},
    }
    docs = render(values_file(tmp_path, values))
    secrets = by_kind(docs, "Secret")
    assert sorted(s["metadata"]["namespace"] for s in secrets) == sorted([NAMESPACE, "ml"])
    assert {s["metadata"]["name"] for s in secrets} == {"honed-store"}
    assert secrets[0]["stringData"] == values["artifactStore"]["credentials"]
    container = operator_container(docs)
    assert env_of(container)["HONED_ARTIFACT_SECRET"] == "honed-store"
    assert container["envFrom"] == [{"secretRef": {"name": "honed-store"}}]


def test_security_guide_lists_every_rule_the_chart_grants() -> None:
    rows = [line for line in (REPO / "docs" / "security.md").read_text().splitlines() if line.startswith("| `")]
    docs = render()
    rules = [rule for role in by_kind(docs, "ClusterRole") for rule in role["rules"]]
    assert rules
    for rule in rules:
        for resource in rule["resources"]:
            matching = [row for row in rows if f"`{resource}`" in row]
            assert matching, f"docs/security.md has no row for {resource}"
            cells = matching[0].split("|")
            assert set(rule["verbs"]) == {v.strip() for v in cells[3].split(",")}, (resource, cells[3])


def test_local_cluster_values_reach_the_pods_the_operator_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images loaded onto the node (no registry) and the CPU Triton: pull policies and packaging."""
    from honed.api.spec import parse_spec
    from honed.controller.jobs import Owner, optimizer_job
    from honed.controller.settings import load_settings
    from honed.controller.triton_manifests import triton_deployment

    docs = render(EXAMPLES / "local-cluster" / "values.yaml")
    container = operator_container(docs)
    assert container["imagePullPolicy"] == "Never"
    for name in [n for n in os.environ if n.startswith("HONED_")]:
        monkeypatch.delenv(name)
    for name, value in env_of(container).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.triton_packaging == "runtime"
    assert settings.triton_image.rsplit("/", 1)[1].startswith("honed-triton-cpu:")
    pool = settings.pool("cpu")
    assert pool is not None and pool.image_pull_policy == "Never"
    spec = parse_spec(yaml.safe_load((EXAMPLES / "local-cluster" / "optimizedmodel.yaml").read_text())["spec"])
    owner = Owner("digits", "models", "uid-1")
    job = optimizer_job(owner, spec, pool, settings, "abc123", "abc123-20261130000000")
    assert job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    deployment = triton_deployment(owner, spec.serving, pool, settings, 1)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_pull_policy_is_left_to_kubernetes_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from honed.controller.settings import load_settings

    container = operator_container(render())
    for name in [n for n in os.environ if n.startswith("HONED_")]:
        monkeypatch.delenv(name)
    for name, value in env_of(container).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.triton_image_pull_policy is None and settings.triton_packaging == "native"
    assert all(pool.image_pull_policy is None for pool in settings.pools)
