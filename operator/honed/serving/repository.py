"""Write a report's winner into a Triton model repository as a NEW version directory.

Layout::

    REPO/MODEL/<version>/...                   the version's files (model.py + artifact/, or the model file)
    REPO/MODEL/configs/version-<N>.pbtxt       version N's own config, serving version N only
    REPO/MODEL/config.pbtxt                    a copy of the config of the newest version KNOWN TO LOAD
    REPO/MODEL/failed-<N>/                     a version Triton refused, with its config and failure.txt

Versions only grow: Triton's response cache keeps answers per model version across a reload of
that version, so reusing a number would serve stale answers; failed numbers are never reused.

Every config names the versions it serves (``version_policy { specific }``), because one config
cannot describe two versions that differ in more than their files: a retuned batching or cache
config, or a fallback to another backend's artifact, is written as a new version with its own
config, and the version before it keeps its own. A Triton started plainly (``--load-model=MODEL``)
reads config.pbtxt and so loads the last version known to load, never one that was merely
written; ``--model-config-name=version-<N>`` (``version_config_name``) loads version N with its
own config, which is how a new version is tried and how a server is pinned to one version.
A version becomes known to load (config.pbtxt is pointed at it, ``promote``) once a Triton
loaded it: ``serving.local_rollout.roll_out`` loads it on a running server with its own config first.

Packagings:
- ``runtime``: Triton's python backend with honed's generic ``model.py`` running the artifact
  with its own runtime (any Triton with the python backend and honed installed; local default);
- ``native``: the artifact handed to Triton's own backend (onnxruntime_onnx, openvino,
  tensorrt_plan, pytorch) as found in the NGC Triton images.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from honed import __version__ as honed_version
from honed.errors import InputError
from honed.optimizer.artifact import META_FILE, ArtifactMeta, read_meta
from honed.optimizer.report import REPORT_FILE, Candidate, Report, load_report
from honed.serving.config import ModelConfigData, TensorConfig, parse_config, render, warmups
from honed.serving.tuning import ServingOptions, choose_batching, choose_instances

Packaging = Literal["runtime", "native"]
PACKAGINGS: tuple[Packaging, ...] = ("runtime", "native")
CONFIG_FILE = "config.pbtxt"
CONFIGS_DIR = "configs"  # Triton's directory of named configs, chosen by --model-config-name
FAILURE_FILE = "failure.txt"
ARTIFACT_DIR = "artifact"
DEPLOYMENT_FILE = "honed-deployment.json"
MODEL_PY = Path(__file__).with_name("triton_model.py")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class WrittenVersion:
    """A version directory just written, and what to restore if Triton refuses it."""

    repository: Path
    model: str
    version: int
    candidate: str
    packaging: Packaging
    config_text: str
    # config.pbtxt before this write, when the write replaced it (promoted, or the first version).
    previous_config: str | None
    promoted: bool
    notes: tuple[str, ...]

    @property
    def model_dir(self) -> Path:
        """The model's directory in the repository."""
        return self.repository / self.model

    @property
    def path(self) -> Path:
        """The version's directory."""
        return self.model_dir / str(self.version)

    @property
    def config_path(self) -> Path:
        """The version's own config, which ``--model-config-name`` selects."""
        return version_config_path(self.model_dir, self.version)


def version_config_name(version: int) -> str:
    """What ``tritonserver --model-config-name`` takes to load exactly ``version`` with its own config."""
    return f"version-{version}"


def version_config_path(model_dir: Path, version: int) -> Path:
    """Where the config written for ``version`` is kept: ``MODEL/configs/version-N.pbtxt``."""
    return model_dir / CONFIGS_DIR / f"{version_config_name(version)}.pbtxt"


def served_version(model_dir: Path) -> int | None:
    """The version config.pbtxt serves: the newest one known to load (None without a config)."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return None
    policy = parse_config(path.read_text()).version_policy
    if policy.HasField("specific"):
        return int(max(policy.specific.versions))
    # A config written before configs named their versions serves the newest directory.
    return max(live_versions(model_dir), default=None)


def select_candidate(report: Report, report_dir: Path, name: str | None = None) -> tuple[Candidate, Path]:
    """The winner (or the accepted candidate ``name``) and its artifact directory."""
    if name is None:
        if report.winner is None:
            verdicts = (
                "; ".join(f"{c.name}: {c.status}{f' ({c.reason})' if c.reason else ''}" for c in report.candidates[:6])
                or "no candidates"
            )
            raise InputError(
                f"{report_dir / REPORT_FILE} has no accepted winner ({verdicts})",
                hint="re-run `honed optimize` with a looser --max-metric-drop or more precisions",
            )
        name = report.winner
    try:
        candidate = report.candidate(name)
    except KeyError:
        known = ", ".join(c.name for c in report.accepted()) or "none"
        raise InputError(f"the report has no candidate {name!r}", hint=f"accepted candidates: {known}") from None
    if candidate.status != "accepted":
        raise InputError(
            f"candidate {name!r} was {candidate.status} ({candidate.reason}); only accepted candidates can be served"
        )
    if not candidate.artifact:
        raise InputError(f"candidate {name!r} in {report_dir / REPORT_FILE} names no artifact directory")
    artifact = (report_dir / candidate.artifact).resolve()
    if not artifact.is_relative_to(report_dir.resolve()):
        raise InputError(
            f"the artifact of {name!r} in {report_dir / REPORT_FILE}, {candidate.artifact!r}, is outside the report's "
            "directory",
            hint="a report names its artifacts relative to its own directory",
        )
    if not (artifact / META_FILE).is_file():
        raise InputError(
            f"the artifact of {name!r} is missing: {artifact} holds no {META_FILE}",
            hint="re-run `honed optimize`, or serve the report directory it wrote (artifacts are "
            "referenced relative to report.json)",
        )
    return candidate, artifact


def versions(model_dir: Path) -> list[int]:
    """Version numbers present as directories, loadable or moved aside after a failed load."""
    found = []
    if model_dir.is_dir():
        for entry in model_dir.iterdir():
            digits = entry.name.removeprefix("failed-")
            if entry.is_dir() and digits.isdigit():
                found.append(int(digits))
    return sorted(found)


def live_versions(model_dir: Path) -> list[int]:
    """The version directories in ``model_dir``, ascending; empty when it does not exist."""
    return (
        sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if model_dir.is_dir()
        else []
    )


def build_config(
    report: Report,
    candidate: Candidate,
    meta: ArtifactMeta,
    *,
    model: str,
    packaging: Packaging,
    options: ServingOptions,
    version: int,
) -> ModelConfigData:
    """The config serving ``candidate`` as ``version`` of ``model``, with notes saying why each value was chosen.

    Batching and instances are derived from the benchmark in ``report`` unless ``options`` set them.
    """
    batching = choose_batching(report, candidate, options)
    instances = choose_instances(report, candidate, options)
    batched = batching.max_batch_size > 0
    inputs = tuple(TensorConfig.from_spec(spec, batched=batched) for spec in meta.inputs)
    outputs = tuple(TensorConfig.from_spec(spec, batched=batched) for spec in meta.outputs)
    notes = [
        f"serving candidate {candidate.name} ({meta.backend} {meta.precision}) with the {packaging} packaging",
        *batching.notes,
        *instances.notes,
    ]
    if options.response_cache:
        notes.append("response cache on: identical requests are answered without running the model")
    else:
        notes.append("response cache off: asked for")
    platform, backend, filename, params, extra = _packaging(packaging, meta, instances.threads)
    notes += extra
    return ModelConfigData(
        name=model,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=batching.max_batch_size,
        versions=(version,),
        platform=platform,
        backend=backend,
        default_model_filename=filename,
        dynamic_batching=batching.dynamic,
        instance_group=instances.group,
        response_cache=options.response_cache,
        warmup=warmups(inputs, batching.max_batch_size),
        parameters=params,
        notes=tuple(notes),
    )


def _packaging(
    packaging: Packaging, meta: ArtifactMeta, threads: int
) -> tuple[str, str, str, dict[str, str], list[str]]:
    """(platform, backend, default_model_filename, parameters, notes) for the artifact."""
    if packaging == "runtime":
        return "", "python", "", {"artifact": ARTIFACT_DIR, "threads": str(threads)}, []
    if meta.backend == "onnxruntime":
        return (
            "onnxruntime_onnx",
            "",
            meta.model_file,
            {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"},
            [],
        )
    if meta.backend == "openvino":
        params = {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1"}
        notes = []
        if meta.precision == "bf16":
            params["HINT_BF16"] = "YES"
        elif meta.precision == "fp32":
            notes.append(
                "Triton's OpenVINO backend cannot force f32 inference; on bf16/AMX CPUs it may run "
                "bf16 - use the runtime packaging where fp32 numerics matter"
            )
        return "", "openvino", meta.model_file, params, notes
    if meta.backend == "tensorrt":
        return "tensorrt_plan", "", meta.model_file, {}, []
    if meta.backend == "torch":
        if not meta.model_file.endswith((".pt", ".ts", ".torchscript")):
            raise InputError(
                f"the torch artifact {meta.model_file!r} is not TorchScript, which Triton's pytorch backend needs",
                hint="serve it with --packaging runtime",
            )
        return "", "pytorch", meta.model_file, {"INTRA_OP_THREAD_COUNT": str(threads)}, []
    raise InputError(
        f"no native Triton backend for artifacts of backend {meta.backend!r}",
        hint="serve it with --packaging runtime",
    )


def write_version(
    report_path: Path,
    repository: Path,
    *,
    model: str | None = None,
    packaging: Packaging = "runtime",
    candidate: str | None = None,
    options: ServingOptions | None = None,
    promote: bool = False,
) -> WrittenVersion:
    """Write the next version of ``model`` from the report at ``report_path`` (file or directory).

    The version gets its own config in ``configs/``. config.pbtxt changes only when ``promote``
    is asked for (the caller has no way to try the version first) or when there is none yet
    (nothing else could serve); otherwise it keeps serving the last version known to load until
    ``promote`` after a successful load. ``discard_version`` undoes a write.
    """
    options = options or ServingOptions()
    report_dir = report_path if report_path.is_dir() else report_path.parent
    report = load_report(report_path)
    chosen, artifact = select_candidate(report, report_dir, candidate)
    meta = read_meta(artifact)
    name = model or report.model.name
    if not _NAME.match(name):
        raise InputError(
            f"model name {name!r} cannot name a Triton model directory",
            hint="pass --name with letters, digits, '-', '_' or '.'",
        )
    if packaging not in PACKAGINGS:
        raise InputError(f"unknown packaging {packaging!r}", hint=f"use one of {', '.join(PACKAGINGS)}")
    model_dir = repository / name
    version = max(versions(model_dir), default=0) + 1
    config = build_config(report, chosen, meta, model=name, packaging=packaging, options=options, version=version)
    text = render(config)

    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / str(version)
    staging = model_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if packaging == "runtime":
        shutil.copy2(MODEL_PY, staging / "model.py")
        shutil.copytree(artifact, staging / ARTIFACT_DIR)
    else:
        for item in artifact.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
    record = {
        "schema": "honed.deployment/v1",
        "model": name,
        "version": version,
        "candidate": chosen.name,
        "backend": meta.backend,
        "precision": meta.precision,
        "device": chosen.device,
        "packaging": packaging,
        "report": str((report_dir / REPORT_FILE).resolve()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "honed_version": honed_version,
        "notes": list(config.notes),
    }
    (staging / DEPLOYMENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    # The version's config exists before its directory does: whoever sees version N can load it.
    version_config = version_config_path(model_dir, version)
    version_config.parent.mkdir(exist_ok=True)
    _atomic_write(version_config, text)
    # The version directory appears complete or not at all, so a reload never sees half of it.
    staging.rename(target)

    config_path = model_dir / CONFIG_FILE
    previous = config_path.read_text() if config_path.is_file() else None
    replace = promote or previous is None
    if replace:
        _atomic_write(config_path, text)
    return WrittenVersion(
        repository=repository,
        model=name,
        version=version,
        candidate=chosen.name,
        packaging=packaging,
        config_text=text,
        previous_config=previous if replace else None,
        promoted=replace,
        notes=config.notes,
    )


def promote_version(written: WrittenVersion) -> None:
    """Make ``written`` what a plainly started Triton serves: it loaded, so it is known good."""
    _atomic_write(written.model_dir / CONFIG_FILE, written.config_text)


def discard_version(written: WrittenVersion, reason: str) -> Path:
    """Undo ``write_version``: move the version and its config aside, restore config.pbtxt if it changed."""
    config_path = written.model_dir / CONFIG_FILE
    if written.promoted:
        if written.previous_config is None:
            config_path.unlink(missing_ok=True)
        else:
            _atomic_write(config_path, written.previous_config)
    aside = written.model_dir / f"failed-{written.version}"
    if written.path.is_dir():
        written.path.rename(aside)
        (aside / FAILURE_FILE).write_text(reason.rstrip() + "\n")
    if aside.is_dir() and written.config_path.is_file():
        # Kept beside the files it failed with, out of configs/ where a server could be pinned to it.
        written.config_path.rename(aside / CONFIG_FILE)
    else:
        written.config_path.unlink(missing_ok=True)
    return aside


def prune_versions(model_dir: Path, keep: int = 2, protect: Iterable[int] = ()) -> list[int]:
    """Delete live versions (and their configs) but the newest ``keep``, ``protect`` and the served one."""
    live = live_versions(model_dir)
    kept = set(live[-keep:] if keep > 0 else []) | set(protect)
    served = served_version(model_dir)
    if served is not None:
        kept.add(served)
    removed = [v for v in live if v not in kept]
    for version in removed:
        shutil.rmtree(model_dir / str(version))
        version_config_path(model_dir, version).unlink(missing_ok=True)
    return removed


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
