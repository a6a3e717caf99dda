"""The CustomResourceDefinition of OptimizedModel, generated from the spec and status models.

Pydantic writes JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema:
every node typed, no ``$ref``/``anyOf``/``title``, ``exclusiveMinimum`` as a flag, and
``additionalProperties`` never next to ``properties``. ``crds/`` holds the rendered file and a
test fails when it drifts from the models (regenerate with ``honed crd``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from honed.api.spec import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, OptimizedModelSpec
from honed.api.status import OptimizedModelStatus

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = f"{GROUP}_{PLURAL}.yaml"

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Winner", "type": "string", "jsonPath": ".status.winner.name"},
    {"name": "Pool", "type": "string", "jsonPath": ".status.winner.pool", "priority": 1},
    {"name": "Speedup", "type": "number", "jsonPath": ".status.winner.speedup"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.http"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# The name becomes the Triton Service's (``<name>-triton``, a DNS-1035 label: a letter first) and
# part of every child's; children replace what labels cannot hold by '-' (names.bounded), so
# ``a.b`` and ``a-b`` would share their Jobs and Service. Long names are fine: children are cut
# to 63 characters with a hash of the whole.
NAME_RULE = {
    "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    # (no fieldPath: it may only name fields of the schema, and metadata has none)
    "message": "metadata.name must start with a lowercase letter and hold only lowercase letters, digits and '-' "
    "(no dots): it names the model's Triton Service and Jobs",
}

_DROPPED_KEYS = {"title", "additionalProperties", "$defs", "properties"}


class _FactoryDefaults(GenerateJsonSchema):
    """Also publish ``default_factory`` defaults, so the API server fills them in.

    A nested object defaults to ``{}``: Kubernetes then applies the defaults inside it, which
    is how an omitted ``spec.search`` still gets ``objective: latency``.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        return {} if isinstance(value, BaseModel) else value


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Rewrite one JSON Schema node (recursively) into its structural OpenAPI v3.0 form."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = defs[ref.rsplit("/", 1)[-1]]
        node = {**target, **node}  # the referring field's description/default win
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        node = {**_only_branch(any_of), **node}
        if ref is None and "$ref" in node:
            return _structural(node, defs)
    _openapi_keywords(node)
    return _structural_keys(node, defs)


def _only_branch(any_of: list[dict[str, Any]]) -> dict[str, Any]:
    """The one non-null branch of an ``anyOf`` (``X | None``); other unions have no structural form."""
    branches = [b for b in any_of if b.get("type") != "null"]
    if len(branches) != 1:
        raise ValueError(f"cannot express a union of {branches} in a structural schema")
    return branches[0]


def _openapi_keywords(node: dict[str, Any]) -> None:
    """Rewrite, in place, the JSON Schema 2020-12 keywords OpenAPI v3.0 spells differently."""
    if node.get("default", NoDefault) is None:
        del node["default"]  # None means "left out" in the models, not a value for the API server to fill in
    for bound in ("Minimum", "Maximum"):
        exclusive = node.pop(f"exclusive{bound}", None)
        if exclusive is not None:
            node[bound.lower()], node[f"exclusive{bound}"] = exclusive, True
    if "const" in node:
        node["enum"] = [node.pop("const")]


def _structural_keys(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Recurse into the children; ``additionalProperties`` is kept only for a map (no ``properties``)."""
    extra = node.get("additionalProperties")
    keep_map = isinstance(extra, dict) and "properties" not in node
    out = {key: _structural(value, defs) for key, value in node.items() if key not in _DROPPED_KEYS}
    if keep_map:
        out["additionalProperties"] = _structural(extra, defs)
    if "properties" in node:
        out["properties"] = {name: _structural(value, defs) for name, value in node["properties"].items()}
        out["type"] = "object"
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3.0 schema of ``model``: camelCase keys, ``$ref``s inlined, defaults published."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_FactoryDefaults)
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return schema


def crd_manifest() -> dict[str, Any]:
    """The OptimizedModel CustomResourceDefinition, as the dict ``kubectl apply`` would send."""
    spec_schema = openapi_schema(OptimizedModelSpec)
    status_schema = openapi_schema(OptimizedModelStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "honed"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["honed"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": OptimizedModelSpec.__doc__,
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML file ``crds/`` holds, with a do-not-edit header."""
    header = "# Generated by `honed crd` from honed.api (spec.py, status.py); do not edit by hand.\n"
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False, width=110)


def write_crds(directory: Path) -> Path:
    """Write the CRD file into ``directory`` (created if missing); returns the file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CRD_FILE
    path.write_text(render_crd())
    return path
