"""Write the winner into the resource's Triton model repository in the artifact store.

The serving layer writes a version locally (``honed.serving.repository.write_version``); for a
local store (file://, mounted pvc://) that is the store itself, for s3:// it is a local mirror
whose new version is uploaded with its ``honed-deployment.json`` record last, so a version
directory counts as written only once complete. Version numbers only grow and are decided by
reconcile from what the repository holds, so a repeated write is recognised, never doubled.

Each version carries its own config (``configs/version-N.pbtxt``, serving version N only).
The operator has no Triton of its own to try a version on: the Triton pods are the load check,
and they read config.pbtxt, so the operator points config.pbtxt at the version it writes
(``promote=True``). A pod started with ``--model-config-name=version-N``
(``honed.serving.repository.version_config_name``) instead loads exactly version N with its own
config, whatever config.pbtxt says: pods pinned that way keep serving their version across
restarts while a newer version that fails to load never gets past its own new pods.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from honed.artifacts import ArtifactStore, relative_key
from honed.controller import names
from honed.controller.reconcile_data import RepositoryWrite
from honed.controller.settings import HonedSettings
from honed.errors import HonedError
from honed.optimizer.report import REPORT_FILE, load_report
from honed.serving.repository import (
    CONFIG_FILE,
    CONFIGS_DIR,
    DEPLOYMENT_FILE,
    version_config_name,
    versions,
    write_version,
)
from honed.serving.tuning import ServingOptions

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2  # the serving one and the one rolling out


def repository_state(store: ArtifactStore, namespace: str, owner: str) -> tuple[frozenset[int], frozenset[int]]:
    """(every version number used, the versions written completely) of the resource's model."""
    model_key = f"{names.repository_key(namespace, owner)}/{names.triton_model_name(owner)}"
    entries = store.listdir(model_key)
    used = {int(e.removeprefix("failed-")) for e in entries if e.removeprefix("failed-").isdigit()}
    complete = {int(e) for e in entries if e.isdigit() and store.exists(f"{model_key}/{e}/{DEPLOYMENT_FILE}")}
    return frozenset(used), frozenset(complete)


def serving_options(serving: dict[str, Any]) -> ServingOptions:
    """``RepositoryWrite.serving`` (a ``Serving`` dumped, snake_case) as the repository builder's options.

    Fields left out stay None, for the builder to derive from the benchmark.
    """
    batching = serving.get("dynamic_batching") or {}
    return ServingOptions(
        response_cache=bool(serving.get("response_cache", True)),
        dynamic_batching=bool(batching.get("enabled", True)),
        max_queue_delay_us=batching.get("max_queue_delay_microseconds"),
        max_batch_size=batching.get("max_batch_size"),
        instances=serving.get("instances"),
    )


def _fetch_winner(write: RepositoryWrite, settings: HonedSettings, target: Path) -> Path:
    """The pool's report.json and the winner's artifact, in their relative layout, under ``target``."""
    pool_dir = ArtifactStore(write.report_uri.rsplit("/", 1)[0], pvc_mount_root=settings.pvc_mount_root)
    report_path = pool_dir.download(REPORT_FILE, target / REPORT_FILE)
    report = load_report(report_path)
    try:
        artifact = report.candidate(write.candidate).artifact
    except KeyError:
        raise HonedError(f"{write.report_uri} has no candidate {write.candidate!r}") from None
    if not artifact:
        raise HonedError(f"candidate {write.candidate!r} in {write.report_uri} names no artifact directory")
    # The report is the Job's word: its artifact path must stay below the report's directory,
    # both where it is read from (the store) and where it is copied to (``target``).
    relative_key(artifact, f"the artifact of candidate {write.candidate!r} in {write.report_uri}")
    pool_dir.download(artifact, target / artifact)
    return report_path


def write_repository(store: ArtifactStore, write: RepositoryWrite, settings: HonedSettings) -> None:
    """Put ``write.candidate`` into the repository as version ``write.version`` (idempotent)."""
    repository = ArtifactStore(write.repository_uri, pvc_mount_root=settings.pvc_mount_root)
    model = write.model_name
    with tempfile.TemporaryDirectory(prefix="honed-deploy-") as tmp:
        work = Path(tmp)
        local_repo = repository.local_path()
        remote = local_repo is None
        if local_repo is None:
            local_repo = work / "repository"
            _mirror_numbers(repository, model, local_repo / model)
        model_dir = local_repo / model
        used = versions(model_dir)
        if write.version in used:
            if repository.exists(f"{model}/{write.version}/{DEPLOYMENT_FILE}"):
                return  # written by an earlier pass that did not get to record it
            # A partial upload (no record): remove it and write it again under the same number.
            repository.delete(f"{model}/{write.version}")
            if remote:
                (model_dir / str(write.version)).rmdir()
            used = versions(model_dir)
        if max(used, default=0) + 1 != write.version:
            raise HonedError(
                f"the repository {write.repository_uri} already uses versions {used}; reconcile planned "
                f"{write.version}",
                hint="another writer changed the repository; the next pass re-reads it",
            )
        report_path = _fetch_winner(write, settings, work / "report")
        written = write_version(
            report_path,
            local_repo,
            model=model,
            packaging=settings.triton_packaging,
            candidate=write.candidate,
            options=serving_options(write.serving),
            promote=True,
        )
        if remote:
            _upload_version(repository, model, written.version, written.path, written.config_path)
            repository.write_text(f"{model}/{CONFIG_FILE}", written.config_text)
        _prune(repository, model, keep=KEEP_VERSIONS, serving=write.serving_version)
    log.info("wrote %s version %d (%s on %s)", write.repository_uri, write.version, write.candidate, write.pool)


def _mirror_numbers(repository: ArtifactStore, model: str, mirror: Path) -> None:
    """Empty directories named like the remote versions, so the local writer numbers on from them."""
    mirror.mkdir(parents=True, exist_ok=True)
    for entry in repository.listdir(model):
        if entry.removeprefix("failed-").isdigit():
            (mirror / entry).mkdir(exist_ok=True)


def _upload_version(repository: ArtifactStore, model: str, version: int, local: Path, config: Path) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name != DEPLOYMENT_FILE):
        repository.upload(path, f"{model}/{version}/{path.relative_to(local).as_posix()}")
    # The version's own config before its record: a version that counts as written can be loaded.
    repository.upload(config, f"{model}/{CONFIGS_DIR}/{config.name}")
    repository.upload(local / DEPLOYMENT_FILE, f"{model}/{version}/{DEPLOYMENT_FILE}")


def _prune(repository: ArtifactStore, model: str, keep: int, serving: int | None = None) -> None:
    """Remove all but the newest ``keep`` versions and the one ``serving``, which pods still load.

    A newer version whose rollout stalled does not make the serving one expendable.
    """
    live = sorted(int(e) for e in repository.listdir(model) if e.isdigit())
    for version in live[:-keep]:
        if version == serving:
            continue
        repository.delete(f"{model}/{version}")
        repository.delete(f"{model}/{CONFIGS_DIR}/{version_config_name(version)}.pbtxt")
