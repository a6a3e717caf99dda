"""The demo's second half: serve the winner on a real local Triton, send traffic, read its metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from honed.optimizer.progress import Progress
from honed.optimizer.report import load_report


def serve_and_probe(optimized: Path, repository: Path, data: Path, progress: Progress) -> int:
    """Serve the optimized winner on a local Triton, send it the held-out digits and a load test.

    Returns:
        The exit code: 0 when Triton's answers are over 90% accurate and the load test saw no errors.
    """
    import tritonclient.grpc as grpcclient

    from honed.serving.load import exercise
    from honed.serving.local_rollout import serve_report

    report = load_report(optimized)
    progress.step(f"serving {report.winner} on Triton (repository {repository})")
    with serve_report(optimized, repository, http_port=0, grpc_port=0, metrics_port=0) as (server, written):
        ends = server.endpoints
        progress.step(
            f"Triton ready: model {written.model} version {written.version} ({written.packaging}); "
            f"HTTP {ends.http}, gRPC {ends.grpc}, metrics {ends.host}:{ends.metrics_port}/metrics"
        )
        with np.load(data) as arrays:
            images, labels = arrays["input"][:128], arrays["labels"][:128]
        client = grpcclient.InferenceServerClient(ends.grpc)
        spec, output = report.model.inputs[0], report.model.outputs[0].name
        predicted = []
        for image in images:  # one request per image, as clients send them
            request = grpcclient.InferInput(spec.name, [1, *image.shape], "FP32")
            request.set_data_from_numpy(image[None].astype(np.float32))
            predicted.append(int(client.infer(written.model, [request]).as_numpy(output)[0].argmax()))
        client.close()
        accuracy = float((np.array(predicted) == labels).mean())
        progress.step(f"Triton's answers on {len(labels)} held-out digits: accuracy {accuracy:.3f}")
        result = exercise(server, written.model, report.model.inputs, concurrency=8, seconds=3.0)
        print(result.describe())
    progress.step("Triton stopped")
    return 0 if accuracy > 0.9 and result.load.errors == 0 else 1
