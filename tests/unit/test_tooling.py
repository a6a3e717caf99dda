"""The developer tooling agrees with itself."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PYTEST = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
MAKEFILE = (REPO / "Makefile").read_text()


def _recipe(target: str) -> list[str]:
    """The commands of a Makefile rule, one per line."""
    lines = MAKEFILE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_pre_commit_runs_what_make_lint_runs() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    assert all(repo["repo"] == "local" for repo in config["repos"]), "CI fetches no hook repository"
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert [hook["entry"] for hook in hooks] == [cmd.replace("$(BIN)/", ".venv/bin/") for cmd in _recipe("lint")]
    assert all(hook["language"] == "system" and hook["pass_filenames"] is False for hook in hooks)


def test_no_warning_filter_ignores_a_whole_category() -> None:
    for entry in PYTEST.get("filterwarnings", []):
        action, message, _category, module = [*entry.split(":"), "", "", ""][:4]
        assert action != "ignore" or message or module, f"{entry!r} ignores a whole category"


def test_every_test_has_a_timeout() -> None:
    assert PYTEST["timeout"] > 0, "pytest-timeout's limit per test (a module may set a larger one)"


def test_every_phony_target_has_a_rule_and_a_help_line() -> None:
    phony = {name for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for name in line.split()}
    rules = dict(re.findall(r"^([A-Za-z0-9_-]+):(?![:=])(.*)$", MAKEFILE, re.M))
    assert phony - rules.keys() == set(), "a .PHONY target without a rule"
    assert {name for name in phony if "## " not in rules[name]} == set(), "`make help` shows the `## ` comment"
