from pathlib import Path

from honed.api.reference import REFERENCE_FILE, render_reference

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_crd_reference_matches_the_api_models() -> None:
    shipped = (DOCS / REFERENCE_FILE).read_text()
    assert shipped == render_reference(), "regenerate it: `make generate`"


def test_reference_lists_nested_fields_with_constraints() -> None:
    text = render_reference()
    assert "| `spec.model.uri` |" in text
    assert "| `spec.search.objective` |" in text and "`latency`" in text
    assert "## status" in text
