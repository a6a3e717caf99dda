"""No Secret value ever reaches what honed writes: status, Events, logs, the store.

The operator references Secrets by name only (``envFrom.secretRef`` in the pods it creates) and
never reads one: the test plants a recognisable value in the model's credentials Secret and in
the artifact store's, runs two failing models through the operator (an unreachable model URI,
and a Job that fails), records every request the operator's client makes, and looks for the
value everywhere honed wrote.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from honed.controller.kube import CONFIGMAPS, EVENTS, JOBS, OPTIMIZED_MODELS, KubeClient, Resource
from honed.controller.settings import HonedSettings
from tests.integration.operator.harness import (
    StartOperator,
    eventually,
    fail_job,
    get_om,
    jobs_of,
    manifest,
    pools,
)

pytestmark = pytest.mark.slow

SECRETS = Resource("v1", "Secret", "secrets")
CANARY = f"HONED-CANARY-{secrets.token_hex(8)}"


@pytest.fixture()
def settings(tmp_path: Path) -> HonedSettings:
    return HonedSettings(
        pools=pools(),
        artifact_store=f"file://{tmp_path}/store",
        artifact_secret="store-creds",
        resync_interval_s=300.0,
        triton_image="nvcr.io/nvidia/tritonserver:test",
    )


def secret(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"AWS_ACCESS_KEY_ID": f"{CANARY}-id", "AWS_SECRET_ACCESS_KEY": CANARY},
    }


def failed(body: dict[str, Any]) -> dict[str, Any] | None:
    status = body.get("status") or {}
    return (
        next((c for c in status.get("conditions", []) if c["type"] == "Optimized"), None)
        if (status.get("phase") == "Failed")
        else None
    )


async def test_no_secret_value_reaches_status_events_logs_or_the_store(
    api: KubeClient,
    namespace: str,
    start_operator: StartOperator,
    settings: HonedSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("model-creds", "store-creds"):
        await api.create(SECRETS, namespace, secret(name))
    running = await start_operator(lambda *_: None)
    requested: list[str] = []
    client = running.operator.client
    call: Callable[..., Any] = client._call

    def recording(verb: str, path: str, *args: Any, **kwargs: Any) -> Any:
        requested.append(f"{verb} {path}")
        return call(verb, path, *args, **kwargs)

    client._call = recording  # type: ignore[method-assign]

    creds = {"credentialsSecret": "model-creds"}
    await api.create(
        OPTIMIZED_MODELS,
        namespace,
        manifest("gone", {"model": {"uri": "file:///nowhere/model.onnx", **creds}, "targets": [{"pool": "cpu"}]}),
    )
    await api.create(
        OPTIMIZED_MODELS,
        namespace,
        manifest("denied", {"model": {"uri": "s3://models/m.onnx", **creds}, "targets": [{"pool": "cpu"}]}),
    )
    (job,) = await eventually(lambda: jobs_of(api, namespace, "denied"), what="the Job of 'denied'")
    # The Secrets reach the optimizer by name; the operator never holds their values.
    env_from = job["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {e["secretRef"]["name"] for e in env_from} == {"model-creds", "store-creds"}
    await fail_job(api, job, exit_code=2, pod_message="cannot read s3://models/m.onnx: AccessDenied")

    async def both_failed() -> dict[str, dict[str, Any]] | None:
        found = {n: failed(await get_om(api, namespace, n)) for n in ("gone", "denied")}
        conditions = {n: c for n, c in found.items() if c}
        return conditions if len(conditions) == len(found) else None

    decided = await eventually(both_failed, what="both models Failed")
    assert decided["gone"]["reason"] == "ModelUnreachable"
    # The engine exits 2 (bad input) when it cannot read the model: the pool's own reason wins.
    assert decided["denied"]["reason"] == "InvalidInput" and "AccessDenied" in decided["denied"]["message"]

    async def events_posted() -> list[dict[str, Any]] | None:
        events = await api.list(EVENTS, namespace, {})
        return events if {"gone", "denied"} <= {e["involvedObject"]["name"] for e in events} else None

    events = await eventually(events_posted, what="Events about both models")
    await running.close()

    written = {
        "status": json.dumps([await get_om(api, namespace, n) for n in ("gone", "denied")]),
        "events": json.dumps(events),
        "jobs and configmaps": json.dumps(
            [*await api.list(JOBS, namespace, {}), *await api.list(CONFIGMAPS, namespace, {})]
        ),
        "logs": caplog.text + "".join(str(r.args) for r in caplog.records),
        "store": "".join(
            p.read_bytes().decode(errors="replace")
            for p in Path(settings.artifact_store.removeprefix("file://")).rglob("*")
            if p.is_file()
        ),
    }
    # The search itself can find things: what honed did write is there.
    assert "AccessDenied" in written["status"] and "store-creds" in written["jobs and configmaps"]
    assert "gone" in written["logs"] and "ModelUnreachable" in written["events"]
    for where, text in written.items():
        assert CANARY not in text, f"a Secret value is in the {where}"
    assert requested, "the operator's requests were not recorded"
    assert not [r for r in requested if "/secrets" in r], f"the operator read Secrets: {requested}"
