"""The generated CRD: in sync with the models, structural, valid, and rejecting what the models reject."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from honed.api.crd import CRD_FILE, crd_manifest, render_crd
from honed.api.spec import parse_spec
from honed.controller.cli import run_crd

REPO = Path(__file__).resolve().parents[2]
STRUCTURAL_FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"}


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_crds_dir_matches_the_models() -> None:
    on_disk = (REPO / "crds" / CRD_FILE).read_text()
    assert on_disk == render_crd(), "crds/ drifted from honed.api: run `make generate`"


def test_crd_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(out=tmp_path, stdout=False, check=True)
    assert run_crd(args) == 1
    assert "regenerate" in capsys.readouterr().out
    assert run_crd(argparse.Namespace(out=tmp_path, stdout=False, check=False)) == 0
    assert run_crd(args) == 0


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert not STRUCTURAL_FORBIDDEN & node.keys(), f"{path} uses {STRUCTURAL_FORBIDDEN & node.keys()}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(crd_manifest(), "1.33.0", strict=True)


def test_crd_names_columns_and_status_subresource() -> None:
    crd = crd_manifest()
    assert crd["metadata"]["name"] == "optimizedmodels.honed.dev"
    assert crd["spec"]["names"]["shortNames"] == ["om"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Phase", "Winner", "Speedup", "Endpoint", "Age"} <= set(columns)


def _validator() -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 shares Draft 4's boolean exclusiveMinimum; x-kubernetes-* keys are ignored.
    return jsonschema.Draft4Validator(_schema())


GOOD: dict[str, Any] = {
    "apiVersion": "honed.dev/v1alpha1",
    "kind": "OptimizedModel",
    "metadata": {"name": "resnet50"},
    "spec": {"model": {"uri": "s3://models/resnet50.onnx"}, "targets": [{"pool": "cpu"}]},
}


@pytest.mark.parametrize(
    "spec_patch",
    [
        {"model": {"uri": "ftp://x"}},
        {"search": {"objective": "speed"}},
        {"search": {"batchSizes": [0]}},
        {"search": {"latencyBudgetMs": 0}},
        {"search": {"timeBudget": "soon"}},
        {"targets": []},
        {"targets": [{"pool": "CPU_POOL"}]},
        {"serving": {"replicas": -1}},
    ],
)
def test_schema_rejects_what_the_models_reject(spec_patch: dict[str, Any]) -> None:
    manifest = copy.deepcopy(GOOD)
    manifest["spec"].update(spec_patch)
    assert list(_validator().iter_errors(manifest)), f"schema accepted {spec_patch}"
    with pytest.raises(ValueError):
        parse_spec(manifest["spec"])


def _apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Kubernetes defaulting: fill missing properties of present objects, recursively."""
    if isinstance(value, dict) and "properties" in node:
        for key, child in node["properties"].items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                value[key] = _apply_defaults(child, value[key])
    elif isinstance(value, list) and "items" in node:
        return [_apply_defaults(node["items"], item) for item in value]
    return value


def test_schema_defaults_equal_the_model_defaults() -> None:
    manifest = copy.deepcopy(GOOD)
    assert not list(_validator().iter_errors(manifest))
    defaulted = _apply_defaults(_schema()["properties"]["spec"], manifest["spec"])
    assert defaulted == parse_spec(GOOD["spec"]).to_wire()


def test_rendered_yaml_parses_back() -> None:
    assert yaml.safe_load(render_crd()) == crd_manifest()
