"""The serving layer against a real Triton (the server shipped in nvidia-pytriton)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from honed.errors import EnvironmentProblem
from honed.optimizer.artifact import load_runner
from honed.serving.load import exercise
from honed.serving.local_rollout import VersionRejected, ready_versions, roll_out, serve_report
from honed.serving.repository import CONFIG_FILE, served_version, version_config_name, write_version
from honed.serving.server import TritonServer, leftover_segments
from honed.serving.triton_metrics import model_traffic
from honed.serving.tuning import ServingOptions
from tests.fixtures.serving_artifacts import ARTIFACT, FEATURES, INPUTS, mlp_report
from tests.fixtures.traffic import Load, infer
from tests.fixtures.triton import Served, StartTriton

pytestmark = pytest.mark.slow


def runtime_scores(report_dir: Path, x: np.ndarray) -> np.ndarray:
    return load_runner(report_dir / ARTIFACT).run({"features": x})[0]


def test_triton_answers_what_the_runtime_answers(served_mlp: Served) -> None:
    client = grpcclient.InferenceServerClient(served_mlp.server.endpoints.grpc)
    rng = np.random.default_rng(7)
    for rows in (1, 3, 32):
        x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
        scores, version = infer(client, "mlp", x)
        assert version == "1"
        np.testing.assert_allclose(scores, runtime_scores(served_mlp.report_dir, x), rtol=1e-5, atol=1e-6)


def test_requests_batched_together_get_their_own_answers(served_mlp: Served) -> None:
    """Concatenating a dynamic batch and splitting it back must keep each request's rows."""
    inputs = [
        np.random.default_rng(100 + i).standard_normal((1 + i % 3, FEATURES)).astype(np.float32) for i in range(24)
    ]

    def ask(x: np.ndarray) -> np.ndarray:
        return infer(grpcclient.InferenceServerClient(served_mlp.server.endpoints.grpc), "mlp", x)[0]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, inputs))
    for x, scores in zip(inputs, answers, strict=True):
        np.testing.assert_allclose(scores, runtime_scores(served_mlp.report_dir, x), rtol=1e-5, atol=1e-6)


def test_concurrent_load_is_batched(served_mlp: Served) -> None:
    server = served_mlp.server
    before = model_traffic(server.metrics_text(), "mlp")
    with Load(server.endpoints.grpc, "mlp", threads=12) as load:
        while load.total < 600:
            time.sleep(0.05)
    assert load.errors == []
    answered = sum(load.versions.values())
    # Triton counts a request just after answering it: wait until the last ones are in.
    deadline = time.monotonic() + 10
    while True:
        after = model_traffic(server.metrics_text(), "mlp")
        counted = after.inferences + after.cache_hits - before.inferences - before.cache_hits
        if counted >= answered or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == answered
    inferred = after.inferences - before.inferences
    executions = after.executions - before.executions
    assert executions < inferred, f"{inferred} inferences in {executions} executions: nothing was batched"


def test_repeated_identical_requests_are_answered_from_the_cache(served_mlp: Served) -> None:
    server = served_mlp.server
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    x = np.random.default_rng(42).standard_normal((1, FEATURES)).astype(np.float32)
    before = model_traffic(server.metrics_text(), "mlp")
    answers = [infer(client, "mlp", x)[0] for _ in range(10)]
    after = model_traffic(server.metrics_text(), "mlp")
    assert after.cache_hits - before.cache_hits == 9
    assert after.cache_misses - before.cache_misses == 1
    for scores in answers:
        np.testing.assert_array_equal(scores, answers[0])


def test_a_version_swap_under_load_fails_no_request(start_triton: StartTriton, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    first = write_version(mlp_report(tmp_path / "r1", seed=0), repository)
    server = start_triton(repository)
    roll_out(server, first)
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    x = np.ones((2, FEATURES), np.float32)
    assert infer(client, "mlp", x)[1] == "1"  # now in the response cache, for version 1
    second_report = mlp_report(tmp_path / "r2", seed=1)
    with Load(server.endpoints.grpc, "mlp", threads=8) as load:
        while load.total < 200:
            time.sleep(0.05)
        result = roll_out(server, write_version(second_report, repository))
        seen = load.total
        while load.total < seen + 200:
            time.sleep(0.05)
    assert load.errors == []
    assert result.version == 2 and result.retired == (1,)
    assert set(load.versions) == {"1", "2"} and set(load.last_versions) == {"2"}
    assert ready_versions(server, "mlp") == [2]
    # The new version answers from its own model, never from the old version's cached answers.
    scores, version = infer(client, "mlp", x)
    assert version == "2"
    np.testing.assert_allclose(scores, runtime_scores(second_report, x), rtol=1e-5, atol=1e-6)


def test_a_broken_version_leaves_the_old_one_answering(start_triton: StartTriton, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    first = write_version(mlp_report(tmp_path / "good", seed=0), repository)
    server = start_triton(repository)
    roll_out(server, first)
    broken = write_version(mlp_report(tmp_path / "broken", broken=True), repository)
    with Load(server.endpoints.grpc, "mlp", threads=4) as load:
        while load.total < 50:
            time.sleep(0.05)
        with pytest.raises(VersionRejected, match="version 2 of model 'mlp' failed to load; version 1 keeps serving"):
            roll_out(server, broken)
        seen = load.total
        while load.total < seen + 50:
            time.sleep(0.05)
    assert load.errors == [] and set(load.versions) == {"1"}
    # The repository describes what serves again; the refused files wait beside it with Triton's reason.
    assert (repository / "mlp" / CONFIG_FILE).read_text() == first.config_text
    failure = (repository / "mlp" / "failed-2" / "failure.txt").read_text()
    assert "model.onnx" in failure or "ONNX" in failure or "onnx" in failure
    # Version numbers only grow: the next good deployment is 3.
    third = write_version(mlp_report(tmp_path / "good-again", seed=2), repository)
    assert roll_out(server, third).version == 3


def served_config(server: TritonServer) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    return dict(client.get_model_config("mlp", as_json=True)["config"])


def test_a_broken_newest_version_does_not_take_a_restarted_server_down(
    start_triton: StartTriton, tmp_path: Path
) -> None:
    """A version written without a load check (as the operator or --write-only writes) is never
    what a restarted server loads: config.pbtxt names only the version that loaded."""
    repository = tmp_path / "repository"
    first = write_version(mlp_report(tmp_path / "good", seed=0), repository)
    server = start_triton(repository)
    roll_out(server, first)
    # The broken version also comes with another config (retuned batching, no cache).
    broken = write_version(
        mlp_report(tmp_path / "broken", broken=True),
        repository,
        options=ServingOptions(response_cache=False, max_batch_size=8),
    )
    assert not broken.promoted
    server.stop()
    # The pod's way of starting: load the model at start, and die when it fails to load.
    restarted = start_triton(repository, extra_args=["--load-model=mlp", "--exit-on-error=true"])
    assert ready_versions(restarted, "mlp") == [1]
    x = np.ones((1, FEATURES), np.float32)
    client = grpcclient.InferenceServerClient(restarted.endpoints.grpc)
    assert infer(client, "mlp", x)[1] == "1"
    # ... with version 1's own settings, not the newer version's.
    config = served_config(restarted)
    assert config["max_batch_size"] == 32 and config["response_cache"]["enable"] is True
    # Version 2 fails where it is tried, on its own, and is then moved aside.
    with pytest.raises(VersionRejected, match="version 2 of model 'mlp' failed to load; version 1 keeps serving"):
        roll_out(restarted, broken)
    assert (repository / "mlp" / "failed-2" / CONFIG_FILE).read_text() == broken.config_text
    assert infer(client, "mlp", x)[1] == "1"


def test_a_server_pinned_to_its_version_survives_a_broken_newer_one(start_triton: StartTriton, tmp_path: Path) -> None:
    """What a Triton pod started with --model-config-name=version-N does: it loads exactly version
    N with N's own config, even when config.pbtxt already points at a newer version that fails."""
    repository = tmp_path / "repository"
    first = write_version(mlp_report(tmp_path / "good", seed=0), repository)
    broken = write_version(
        mlp_report(tmp_path / "broken", broken=True),
        repository,
        options=ServingOptions(response_cache=False, max_batch_size=8),
        promote=True,  # the operator's write: its pods are the load check
    )
    assert served_version(repository / "mlp") == broken.version == 2
    with pytest.raises(EnvironmentProblem, match="exited with code"):
        start_triton(
            repository,
            extra_args=["--load-model=mlp", "--exit-on-error=true", f"--model-config-name={version_config_name(2)}"],
        )
    pinned = start_triton(
        repository,
        extra_args=["--load-model=mlp", "--exit-on-error=true", f"--model-config-name={version_config_name(1)}"],
    )
    assert ready_versions(pinned, "mlp") == [1]
    config = served_config(pinned)
    assert config["max_batch_size"] == 32 and config["response_cache"]["enable"] is True
    assert config["version_policy"] == {"specific": {"versions": ["1"]}}  # int64s are JSON strings
    assert first.version == 1
    client = grpcclient.InferenceServerClient(pinned.endpoints.grpc)
    assert infer(client, "mlp", np.ones((1, FEATURES), np.float32))[1] == "1"


def test_stopping_ends_the_server_and_its_stubs_and_frees_shared_memory(
    start_triton: StartTriton, mlp_report_dir: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    written = write_version(mlp_report_dir, repository)
    server: TritonServer = start_triton(repository)
    roll_out(server, written)
    pid = server.pid
    assert pid is not None and leftover_segments(server.shm_prefix), "the python backend uses shared memory"
    server.stop()
    assert not server.running() and not leftover_segments(server.shm_prefix)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing of the server's session is left, stubs included


def test_serve_report_and_exercise_show_batching_and_cache_hits(mlp_report_dir: Path, tmp_path: Path) -> None:
    """The helpers the demo uses: serve a report in one call, then read Triton's own account of traffic."""
    with serve_report(mlp_report_dir, tmp_path / "repository", http_port=0, grpc_port=0, metrics_port=0) as (
        server,
        written,
    ):
        assert written.version == 1 and server.is_model_ready("mlp", 1)
        seen = exercise(server, "mlp", INPUTS, concurrency=8, seconds=1.0, repeats=20)
        prefix = server.shm_prefix
    assert seen.load.errors == 0 and seen.load.requests > 0
    assert seen.average_batch > 1.0
    assert seen.cache_hits >= 19
    assert "Triton ran batches of" in seen.describe()
    assert not leftover_segments(prefix)


FACTORY_MODULE = "zz_pythonpath_factory"


def _torch_factory_report(out_dir: Path) -> Path:
    """A report whose winner is a CPU torch eager artifact built from ``FACTORY_MODULE:build``."""
    from honed.optimizer.artifact import ArtifactMeta
    from tests.fixtures.serving_artifacts import OUTPUTS, build_report

    artifact = out_dir / "artifacts" / "torch-fp32.eager"
    artifact.mkdir(parents=True)
    ArtifactMeta(
        backend="torch",
        precision="fp32",
        variant="eager",
        model_file="",
        # No sys_path: the module is reachable only through PYTHONPATH.
        options={"factory": f"{FACTORY_MODULE}:build", "sys_path": [], "autocast": None},
        inputs=INPUTS,
        outputs=OUTPUTS,
    ).write(artifact)
    report = build_report()
    candidate = report.candidates[0].model_copy(
        update={
            "name": "torch-fp32.eager",
            "backend": "torch",
            "variant": "eager",
            "artifact": str(artifact.relative_to(out_dir)),
        }
    )
    report.candidates, report.winner = [candidate], candidate.name
    report.write(out_dir)
    return out_dir


def test_the_python_stub_imports_what_pythonpath_names(
    tmp_path: Path, start_triton: StartTriton, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triton's stub ignores PYTHONPATH: model.py adds its entries, so a factory module (or honed
    itself, where it is not installed, as on a GPU machine) found only through it still loads."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / f"{FACTORY_MODULE}.py").write_text(
        f"import torch\n\n\ndef build():\n    torch.manual_seed(0)\n    return torch.nn.Linear({FEATURES}, 4)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(modules), os.environ.get("PYTHONPATH")) if p))
    report_dir = _torch_factory_report(tmp_path / "report")
    written = write_version(report_dir, tmp_path / "repo", options=ServingOptions(response_cache=False))
    server = start_triton(tmp_path / "repo", cache_bytes=0)
    roll_out(server, written)
    x = np.random.default_rng(3).standard_normal((2, FEATURES)).astype(np.float32)
    scores, _ = infer(grpcclient.InferenceServerClient(server.endpoints.grpc), written.model, x)
    import torch

    torch.manual_seed(0)
    expected = torch.nn.Linear(FEATURES, 4)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
