"""The operations guide and the dashboard name what the code really emits."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "honed"
OPERATIONS = (REPO / "docs" / "operations.md").read_text()
DASHBOARD = json.loads((REPO / "charts" / "honed" / "dashboards" / "honed.json").read_text())


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def condition_reasons() -> set[str]:
    """Reasons the controller (and feedback loop) put on conditions, found in their source.

    They are the reason argument of ``condition(type, value, REASON, message)`` and
    ``set_condition(status, type, value, REASON, ...)``, any ``reason=`` keyword, the failure of a
    ``Selection(winner, ranked, FAILURE, message)`` and the members of ``WARNING_REASONS``.
    """
    found: set[str] = set()
    for directory in ("controller", "feedback"):
        for path in sorted((PACKAGE / directory).glob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                    position = {"condition": 2, "set_condition": 3, "Selection": 2}.get(name)
                    if position is not None and len(node.args) > position:
                        found |= _strings(node.args[position])
                    for keyword in node.keywords:
                        if keyword.arg == "reason":
                            found |= _strings(keyword.value)
                if isinstance(node, ast.Assign) and any(
                    getattr(t, "id", "") == "WARNING_REASONS" for t in node.targets
                ):
                    found |= _strings(node.value)
    return {reason for reason in found if re.fullmatch(r"[A-Z][A-Za-z]+", reason)}


def test_the_scan_finds_the_controllers_reasons() -> None:
    reasons = condition_reasons()
    # A few that must be there whatever else changes: without them the scan itself is broken.
    assert {"InvalidSpec", "UnknownPool", "WinnerSelected", "NoCandidateWithinDrop", "Serving"} <= reasons


def test_every_condition_reason_is_documented_with_its_fix() -> None:
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", OPERATIONS, re.MULTILINE))
    missing = sorted(condition_reasons() - documented)
    assert missing == [], f"docs/operations.md has no row for {missing}"


def test_dashboard_queries_metrics_the_operator_exports() -> None:
    operator_metrics = pytest.importorskip(
        "honed.controller.operator_metrics", reason="honed.controller.operator_metrics comes with the operator"
    )
    exported = set()
    for family in operator_metrics.REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + suffix for suffix in suffixes}
    exprs = [t["expr"] for panel in DASHBOARD["panels"] for t in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bhoned_[a-z_]+", expr)}
    assert used, "the dashboard shows no operator metric"
    assert used <= exported, f"not exported by the operator: {sorted(used - exported)}"
