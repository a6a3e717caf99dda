"""`make e2e-faults`: faults injected for real into honed on a real single-node cluster, and load.

The same kit, images and chart as `make e2e` (``chain.py``, whose helpers this imports). One
digits model is brought to Serving first and a client sends it requests for the whole run; then
each fault is injected for real, and for each the driver checks that

* the OptimizedModel it hits ends in a condition with a specific reason and message,
* the operator does not crash-loop (its pod's restartCount stays 0),
* the model already serving keeps answering (the client's failed requests stay 0),
* recovery is automatic once the fault goes away (or after the one action honed documents for it),
  and how long it took (``recovery_s``).

Faults: a model URI with no file (then the file appears); a data file with the wrong shapes; the
optimizer OOM-killed (a pool with a 200Mi limit); a Job past its activeDeadlineSeconds (lowered on
the live Job); a pool no node matches (``HONED_PENDING_TIMEOUT_S`` 30 s, then the node is
labelled); Triton refusing a new version (its files corrupted in the store before the new pod
loads them); a serving Triton SIGKILLed, then its pod deleted; a ResourceQuota that refuses the Job's
pod; the operator pod deleted mid-optimization and mid-deploy; the kube-apiserver killed
and restarted with its own command line (etcd kept); Prometheus stopped and started.

Load: N tiny OptimizedModels applied at once (operator peak RSS, API requests per minute idle vs
busy, time to settle), and 64 concurrent clients across three version swaps (failed requests, p99
during swaps vs steady state). On this 2-CPU machine, shared with other work, the figures are
modest and only indicative; nothing here asserts a time.

``OUT/result.json``: every step, and per fault what honed did and the recovery time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.e2e.cluster import chain
from tests.e2e.cluster.chain import (
    MODELS_NS,
    NODE_IP,
    PROMETHEUS_PORT,
    SYSTEM_NS,
    Run,
    Step,
    condition,
    kget,
    kubectl,
    ready_endpoints,
    sh,
    wait_for,
)
from tests.fixtures import kit

REPO = kit.REPO
EXAMPLE = REPO / "examples" / "local-cluster"
RELEASE = chain.RELEASE
MODEL = "digits"
NODE = "honed-node"
ZONE_LABEL = "honed.dev/zone"
# The tags `make images` gives (tools/build_images.sh): a run after `make e2e-chain` finds them built
# from the same sources and only imports them into its node.
DEFAULT_PREFIX = "ghcr.io/honed-dev/honed-"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


# ------------------------------------------------------------------------------------ host side


def outer(args: argparse.Namespace) -> int:
    run = Run()
    run_dir = Path(args.run_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kit_root = kit.kit_dir()
    assert kit_root is not None
    host_addresses = sh("ip", "-o", "addr")
    inner_file = out / "inner.json"
    inner_file.unlink(missing_ok=True)
    started = False
    try:
        with run.step("cluster up (etcd, apiserver, scheduler, kubelet, containerd)"):
            sh(kit_root / "cluster" / "up.sh", run_dir, env={"HONED_NODE_LABELS": chain.POOL_LABEL})
            started = True
        with run.step("images built and imported into the node"):
            env = {"HONED_K8S_RUN_DIR": str(run_dir), "HONED_IMAGE_PREFIX": args.image_prefix}
            sh(REPO / "tools" / "build_images.sh", env=env, timeout=3600)
        with run.step("faults and load, inside the node's network namespace"):
            inside = [sys.executable, "-m", "tests.e2e.cluster.faults", "--inside", "--run-dir", str(run_dir)]
            inside += ["--out", str(out), "--image-prefix", args.image_prefix, "--load-models", str(args.load_models)]
            inside += ["--only", args.only] if args.only else []
            code = subprocess.run([kit_root / "cluster" / "exec.sh", run_dir, *inside], cwd=REPO).returncode
            if code != 0:
                raise RuntimeError(f"some in-cluster steps failed (exit {code}); see above and {out}/logs")
    except BaseException:
        traceback.print_exc()
    finally:
        if started and not args.keep:
            with contextlib.suppress(Exception), run.step("teardown (cluster/down.sh)"):
                sh(kit_root / "cluster" / "down.sh", run_dir, "--purge")
    inner_result = json.loads(inner_file.read_text()) if inner_file.is_file() else {"steps": [], "facts": {}}
    steps = run.steps[:2] + [Step(**s) for s in inner_result["steps"]] + run.steps[2:]
    leftovers = [] if args.keep else chain.find_leftovers(run_dir, host_addresses)
    result = {"steps": [asdict(s) for s in steps], "leftovers": leftovers, **inner_result["facts"]}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    ok = all(s.ok for s in steps) and bool(inner_result["steps"]) and not leftovers
    print(f"{'PASSED' if ok else 'FAILED'}: {sum(s.ok for s in steps)}/{len(steps)} steps; leftovers: {leftovers}")
    print(f"wrote {out / 'result.json'}")
    return 0 if ok else 1


# ------------------------------------------------------------------------------- netns side


def values_override(prefix: str) -> dict[str, Any]:
    """The example's values plus the pools the faults need, a short pending timeout, own images."""
    cpu_pool = {
        "name": "cpu",
        "device": "cpu",
        "image": {"repository": f"{prefix}optimizer-cpu", "pullPolicy": "Never"},
        "nodeSelector": {"honed.dev/pool": "cpu"},
        "resources": {"requests": {"cpu": "1", "memory": "3Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}},
        "servingResources": {"requests": {"cpu": "300m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        "pricePerHour": 0.05,
    }
    # The optimizer imports its runtimes and loads the model: 200Mi is not enough.
    tiny = {**cpu_pool, "name": "tiny"}
    tiny["resources"] = {"requests": {"cpu": "250m", "memory": "200Mi"}, "limits": {"cpu": "1", "memory": "200Mi"}}
    # No node has this label until the fault's recovery adds it.
    zoned = {**cpu_pool, "name": "zoned", "nodeSelector": {ZONE_LABEL: "faults"}}
    # Small requests, so that the load's Jobs share the node's 2 CPUs (they queue beyond that).
    small = {**cpu_pool, "name": "small"}
    small["resources"] = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "3Gi"}}
    return {
        "image": {"repository": f"{prefix}operator", "pullPolicy": "Never"},
        "operator": {"watchNamespaces": [MODELS_NS], "pendingTimeoutSeconds": 30},
        "pools": [cpu_pool, tiny, zoned, small],
        "artifactStore": {"uri": "pvc://honed-store/honed"},
        "triton": {"image": {"repository": f"{prefix}triton-cpu", "pullPolicy": "Never"}, "packaging": "runtime"},
        "prometheus": {"url": f"http://{NODE_IP}:{PROMETHEUS_PORT}"},
    }


def manifest(
    name: str, *, pool: str = "cpu", replicas: int = 0, feedback: bool = False, **model: str
) -> dict[str, Any]:
    """A digits OptimizedModel; the faults' own ones serve on 0 replicas (the node has 2 CPUs)."""
    spec: dict[str, Any] = {
        "model": {"uri": model.get("uri", "pvc://honed-store/models/digits.onnx"), "format": "onnx"},
        "validation": {
            "dataUri": model.get("data", "pvc://honed-store/models/digits_val.npz"),
            "metric": "top1",
            "maxMetricDrop": 0.01,
        },
        "search": {
            "objective": "latency",
            "batchSizes": [1],
            "precisions": ["fp32"],
            "backends": ["onnxruntime"],
            "timeBudget": "20s",
        },
        "targets": [{"pool": pool}],
        "serving": {"replicas": replicas, "responseCache": True},
    }
    if feedback:
        # A generous SLO: the loop watches (and needs Prometheus) but has no reason to act.
        spec["feedback"] = {"enabled": True, "p99LatencyMs": 5000, "interval": "15s", "cooldown": "30m"}
    return {
        "apiVersion": "honed.dev/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": name, "namespace": MODELS_NS},
        "spec": spec,
    }


def apply(body: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(body))


def get_om(name: str) -> dict[str, Any]:
    model: dict[str, Any] = kget("optimizedmodel", name, "-n", MODELS_NS)
    return model


def phase(body: dict[str, Any]) -> str:
    return str((body.get("status") or {}).get("phase") or "")


def reoptimize(name: str) -> None:
    kubectl(
        "annotate",
        "--overwrite",
        "optimizedmodel",
        name,
        "-n",
        MODELS_NS,
        f"honed.dev/reoptimize=Requested:{time.time():.0f}",
    )


def wait_condition(name: str, type_: str, reason: str, timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = condition(get_om(name), type_)
        return cond if cond.get("reason") == reason else None

    try:
        return dict(wait_for(f"{name}: {type_} reason {reason}", check, timeout=timeout))
    except TimeoutError as exc:
        body = get_om(name)
        raise TimeoutError(
            f"{exc}; phase {phase(body)}, conditions {(body.get('status') or {}).get('conditions')}"
        ) from None


def wait_serving(name: str, timeout: float, *, version_above: int = 0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = get_om(name)
        deployed = condition(body, "Deployed").get("status") == "True"
        version = ((body.get("status") or {}).get("winner") or {}).get("version") or 0
        return body if phase(body) == "Serving" and deployed and version > version_above else None

    return dict(wait_for(f"{name} Serving", check, timeout=timeout, interval=0.5))


def delete_om(name: str) -> None:
    kubectl("delete", "optimizedmodel", name, "-n", MODELS_NS, "--wait=false", "--ignore-not-found")


def operator_pods() -> list[dict[str, Any]]:
    return [
        p
        for p in kget("pods", "-n", SYSTEM_NS, "-l", OPERATOR_SELECTOR)["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]


def operator_restarts() -> int:
    return sum(
        c.get("restartCount", 0)
        for p in operator_pods()
        for c in (p.get("status") or {}).get("containerStatuses") or []
    )


def wait_operator_ready(old_uid: str | None = None, timeout: float = 180) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        for pod in operator_pods():
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if pod["metadata"]["uid"] != old_uid and statuses and all(c.get("ready") for c in statuses):
                return pod
        return None

    return dict(wait_for("the operator ready", check, timeout=timeout))


def model_dir(store: Path, name: str) -> Path:
    from honed.controller import names

    return store / "honed" / names.repository_key(MODELS_NS, name) / names.triton_model_name(name)


def versions_in(store: Path, name: str) -> list[str]:
    directory = model_dir(store, name)
    return (
        sorted(
            (e.name for e in directory.iterdir() if e.name.removeprefix("failed-").isdigit()),
            key=lambda n: int(n.removeprefix("failed-")),
        )
        if directory.is_dir()
        else []
    )


class Clients:
    """``workers`` clients sending the digits model requests, following the Service's EndpointSlices
    as kube-proxy would, each request's latency kept with its start time."""

    def __init__(self, service: str, model: str, workers: int, pause_s: float) -> None:
        self.service, self.model, self.pause_s = service, model, pause_s
        self.samples: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self.addresses = ready_endpoints(service)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._endpoints, daemon=True)]
        self.threads += [threading.Thread(target=self._load, args=(i,), daemon=True) for i in range(workers)]
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    @property
    def requests(self) -> int:
        return len(self.samples) + len(self.failures)

    def _endpoints(self) -> None:
        while not self.stop.wait(0.5):
            with contextlib.suppress(Exception):  # the API server may be down (a fault): keep the last
                addresses = ready_endpoints(self.service)
                if addresses:
                    self.addresses = addresses

    def _load(self, worker: int) -> None:
        import numpy as np
        import tritonclient.http as triton_http

        rng = np.random.default_rng(worker)
        clients: dict[str, Any] = {}
        count = 0
        while not self.stop.is_set():
            addresses = self.addresses
            address = addresses[(count + worker) % len(addresses)]
            count += 1
            client = clients.get(address) or clients.setdefault(
                address, triton_http.InferenceServerClient(url=f"{address}:8000", network_timeout=30)
            )
            batch = rng.random((1, 1, 8, 8), dtype=np.float32)  # fresh inputs: cache misses
            request = triton_http.InferInput("input", list(batch.shape), "FP32")
            request.set_data_from_numpy(batch)
            started = time.monotonic()
            try:
                client.infer(self.model, [request])
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {address}: {str(exc)[:200]}")
            else:
                with self.lock:
                    self.samples.append((started, time.monotonic() - started))
            time.sleep(self.pause_s)


class Faults:
    def __init__(self, run: Run, store: Path, run_dir: Path, logs: Path) -> None:
        self.run, self.store, self.run_dir, self.logs = run, store, run_dir, logs
        self.guard: Clients | None = None
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.discovery: chain.PodDiscovery | None = None
        self.results: dict[str, dict[str, Any]] = {}
        self.run.facts["faults"] = self.results

    # -- what every fault checks
    def fault(self, name: str, title: str, action: Any) -> None:
        failures_before = len(self.guard.failures) if self.guard else 0
        requests_before = self.guard.requests if self.guard else 0
        record: dict[str, Any] = {}
        self.results[name] = record
        try:
            with self.run.step(title) as note:
                action(record)
                restarts = operator_restarts()
                record["operator_restarts"] = restarts
                served = (self.guard.requests - requests_before) if self.guard else 0
                failed = (len(self.guard.failures) - failures_before) if self.guard else 0
                record["serving_requests"], record["serving_failed"] = served, failed
                assert restarts == 0, f"the operator restarted {restarts} times"
                assert failed == 0, f"{failed} of {served} requests to {MODEL} failed: {self.guard.failures[-3:]}"  # type: ignore[union-attr]
                note["detail"] = (
                    f"{record.get('reason')}: {str(record.get('message'))[:90]} | recovery "
                    f"{record.get('recovery_s')}s | {served} requests, 0 failed"
                )
        except Exception:
            traceback.print_exc()
            record["error"] = traceback.format_exc(limit=2)[-800:]

    def _recover(self, record: dict[str, Any], started: float, name: str, **kw: Any) -> dict[str, Any]:
        body = wait_serving(name, timeout=kw.pop("timeout", 300), **kw)
        record["recovery_s"] = round(time.monotonic() - started, 1)
        return body

    # -- the faults
    def missing_model(self, record: dict[str, Any]) -> None:
        name = "f-missing"
        late = self.store / "models" / "late.onnx"
        late.unlink(missing_ok=True)
        apply(manifest(name, uri="pvc://honed-store/models/late.onnx"))
        cond = wait_condition(name, "Optimized", "ModelUnreachable", timeout=90)
        record.update(reason=cond["reason"], message=cond["message"], phase=phase(get_om(name)))
        assert not kget("jobs", "-n", MODELS_NS, "-l", f"honed.dev/optimizedmodel={name}")["items"], "a Job was created"
        scratch = late.with_suffix(".tmp")
        scratch.write_bytes((self.store / "models" / "digits.onnx").read_bytes())
        os.chown(scratch, chain.STORE_UID, chain.STORE_UID)
        started = time.monotonic()
        scratch.replace(late)
        self._recover(record, started, name)
        record["recovery_by"] = "the file appears; nothing else"
        delete_om(name)

    def bad_data(self, record: dict[str, Any]) -> None:
        import numpy as np

        name = "f-baddata"
        bad = self.store / "models" / "bad_val.npz"
        good = np.load(self.store / "models" / "digits_val.npz")
        inputs = good["input"]
        wrong = np.repeat(inputs, 3, axis=1)  # (N, 3, 8, 8) for a model that takes (N, 1, 8, 8)
        with bad.open("wb") as handle:
            np.savez(handle, input=wrong, labels=good["labels"])
        os.chown(bad, chain.STORE_UID, chain.STORE_UID)
        apply(manifest(name, data="pvc://honed-store/models/bad_val.npz"))

        def failed() -> dict[str, Any] | None:
            body = get_om(name)
            return body if phase(body) == "Failed" else None

        body = wait_for(f"{name} Failed", failed, timeout=240)
        cond = condition(body, "Optimized")
        record.update(reason=cond.get("reason"), message=cond.get("message"), pools=body["status"].get("pools"))
        with bad.open("wb") as handle:
            np.savez(handle, input=inputs, labels=good["labels"])
        started = time.monotonic()
        reoptimize(name)
        self._recover(record, started, name)
        record["recovery_by"] = "the file fixed, then the honed.dev/reoptimize annotation"
        delete_om(name)

    def oom(self, record: dict[str, Any]) -> None:
        name = "f-oom"
        apply(manifest(name, pool="tiny"))

        def failed() -> dict[str, Any] | None:
            body = get_om(name)
            return body if phase(body) == "Failed" else None

        body = wait_for(f"{name} Failed", failed, timeout=300)
        cond = condition(body, "Optimized")
        record.update(reason=cond.get("reason"), message=cond.get("message"), pools=body["status"].get("pools"))
        assert cond.get("reason") == "OOMKilled", cond
        started = time.monotonic()
        apply(manifest(name, pool="cpu"))
        self._recover(record, started, name)
        record["recovery_by"] = "spec.targets moved to a pool with memory enough"
        delete_om(name)

    def deadline(self, record: dict[str, Any]) -> None:
        name = "f-deadline"
        body = manifest(name)
        # A search that runs for a while (two runtimes, three precisions, two batch sizes: tens of
        # seconds here), so that the deadline ends it mid-search, before any report exists.
        body["spec"]["search"].update(
            batchSizes=[1, 8],
            precisions=["fp32", "bf16", "int8"],
            backends=["onnxruntime", "openvino"],
            timeBudget="2m",
        )
        apply(body)
        selector = f"honed.dev/optimizedmodel={name}"
        job = wait_for("the Job", lambda: kget("jobs", "-n", MODELS_NS, "-l", selector)["items"], timeout=60)[0]
        job_name = job["metadata"]["name"]
        record["derived_deadline_s"] = job["spec"].get("activeDeadlineSeconds")

        def searching() -> dict[str, Any] | None:
            # The engine has finished its first candidate and has more to go: the search is running.
            pods: list[dict[str, Any]] = kget("pods", "-n", MODELS_NS, "-l", f"job-name={job_name}")["items"]
            for pod in pods:
                if (pod.get("status") or {}).get("phase") == "Running":
                    log = kubectl("logs", pod["metadata"]["name"], "-n", MODELS_NS, check=False)
                    if "[1/" in log:
                        return pod
            return None

        pod = wait_for("the search under way", searching, timeout=240, interval=0.5)
        # The derived deadline is at least 10 min (budget + 5 min, two attempts): lowered on the live
        # Job, the real Job controller ends it as it ends a search that overran: the Job fails with
        # DeadlineExceeded and its pod is deleted (SIGTERM, then SIGKILL after the grace period).
        patched = time.monotonic()
        patch = '{"spec":{"activeDeadlineSeconds":1}}'
        kubectl("patch", "job", job_name, "-n", MODELS_NS, "--type=merge", "-p", patch)
        ended: dict[str, Any] = {}

        def decided() -> dict[str, Any] | None:
            if not ended:
                pods = kget("pods", "-n", MODELS_NS, "-l", f"job-name={job_name}")["items"]
                for item in pods:
                    for status in (item.get("status") or {}).get("containerStatuses") or []:
                        if (status.get("state") or {}).get("terminated"):
                            ended.update(status["state"]["terminated"], after_s=round(time.monotonic() - patched, 1))
                if not pods:
                    ended.setdefault("pod_gone_after_s", round(time.monotonic() - patched, 1))
            body = get_om(name)
            return body if phase(body) in ("Failed", "Serving") and ended else None

        body = wait_for(f"{name} decided", decided, timeout=180, interval=0.3)
        cond = condition(body, "Optimized")
        pools = body["status"].get("pools") or []
        record.update(reason=cond.get("reason"), message=cond.get("message"), phase=phase(body), pools=pools)
        record["search_pod"] = {
            "name": pod["metadata"]["name"],
            "exit_code": ended.get("exitCode"),
            "termination_message": (ended.get("message") or "").strip()[:200],
            "ended_after_patch_s": ended.get("after_s", ended.get("pod_gone_after_s")),
        }
        assert phase(body) == "Failed", f"the search was not stopped before its report: {phase(body)} {cond}"
        assert cond.get("reason") == "DeadlineExceeded", cond
        assert [p.get("reason") for p in pools] == ["DeadlineExceeded"], pools
        jobs = kget("jobs", "-n", MODELS_NS, "-l", selector)["items"]
        assert [j["metadata"]["name"] for j in jobs] == [job_name], [j["metadata"]["name"] for j in jobs]
        started = time.monotonic()
        reoptimize(name)
        body = self._recover(record, started, name, timeout=420)
        record["recovery_by"] = "the honed.dev/reoptimize annotation (a new Job, its own deadline)"
        optimizations: dict[str, list[str]] = {}
        for item in kget("jobs", "-n", MODELS_NS, "-l", selector)["items"]:
            key = item["metadata"]["labels"].get("honed.dev/optimization", "")
            optimizations.setdefault(key, []).append(item["metadata"]["uid"])
        record["jobs_per_optimization"] = {k: len(v) for k, v in optimizations.items()}
        assert all(len(v) == 1 for v in optimizations.values()), optimizations
        delete_om(name)

    def unschedulable(self, record: dict[str, Any]) -> None:
        name = "f-pending"
        apply(manifest(name, pool="zoned"))
        cond = wait_condition(name, "Optimized", "Unschedulable", timeout=150)
        body = get_om(name)
        record.update(
            reason=cond["reason"], message=cond["message"], phase=phase(body), pools=body["status"].get("pools")
        )
        assert phase(body) == "Failed", phase(body)
        jobs = kget("jobs", "-n", MODELS_NS, "-l", f"honed.dev/optimizedmodel={name}")["items"]
        record["job_suspended"] = all(j["spec"].get("suspend") for j in jobs)
        kubectl("label", "node", NODE, f"{ZONE_LABEL}=faults", "--overwrite")
        started = time.monotonic()
        reoptimize(name)
        try:
            self._recover(record, started, name)
        finally:
            kubectl("label", "node", NODE, f"{ZONE_LABEL}-")
        record["recovery_by"] = "the node labelled, then the honed.dev/reoptimize annotation"
        delete_om(name)

    def triton_refuses(self, record: dict[str, Any]) -> None:
        from honed.serving.repository import DEPLOYMENT_FILE

        before = get_om(MODEL)
        version = before["status"]["winner"]["version"]
        directory = model_dir(self.store, MODEL)
        new_dir = directory / str(version + 1)
        originals: dict[Path, bytes] = {}
        corrupted = threading.Event()

        def corrupt() -> None:
            # The operator writes the version (its record last), then patches the Deployment; the
            # new pod needs seconds to start: its files are broken before Triton reads them.
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and not (new_dir / DEPLOYMENT_FILE).is_file():
                time.sleep(0.02)
            for path in sorted(new_dir.rglob("*")):
                if path.is_file() and path.name != DEPLOYMENT_FILE:
                    originals[path] = path.read_bytes()
                    path.write_bytes(
                        b"not a model\n"
                        if path.suffix != ".py"
                        else b"raise RuntimeError('corrupted by make e2e-faults')\n"
                    )
            corrupted.set()

        thread = threading.Thread(target=corrupt, daemon=True)
        thread.start()
        reoptimize(MODEL)
        assert corrupted.wait(420), "the new version was never written"
        record["corrupted_files"] = [str(p.relative_to(new_dir)) for p in originals]

        def refused() -> dict[str, Any] | None:
            body = get_om(MODEL)
            deployed = condition(body, "Deployed")
            if deployed.get("status") == "True" and body["status"]["winner"]["version"] > version:
                raise AssertionError(f"the corrupted version {version + 1} became ready: {deployed}")
            if deployed.get("status") == "False" and deployed.get("reason") not in ("RollingOut", None):
                return body
            return None

        body = wait_for("Deployed=False with a reason", refused, timeout=240, interval=0.5)
        cond = condition(body, "Deployed")
        record.update(reason=cond.get("reason"), message=cond.get("message"), phase=phase(body))
        record["endpoint_version_during_fault"] = body["status"]["endpoint"]["version"]
        assert body["status"]["endpoint"]["version"] == version, body["status"]["endpoint"]
        time.sleep(15)  # the old version keeps serving while the new one is refused (the guard counts)
        for path, data in originals.items():
            path.write_bytes(data)
        started = time.monotonic()
        try:
            self._recover(record, started, MODEL, version_above=version, timeout=300)
            record["recovery_by"] = "the files restored; the new pod's restart loads them"
        except TimeoutError as exc:
            body = get_om(MODEL)
            record["recovery_s"] = None
            record["after_restore"] = {"phase": phase(body), "deployed": condition(body, "Deployed")}
            record["recovery_by"] = f"not automatic within 300 s: {exc}"[:400]
        record["versions"] = versions_in(self.store, MODEL)

    def quota_refuses(self, record: dict[str, Any]) -> None:
        name, quota = "f-quota", "f-quota"
        # The Job's pod asks 3Gi; the serving digits pod already holds 1Gi of these 2Gi.
        refusing = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": quota, "namespace": MODELS_NS},
            "spec": {"hard": {"requests.memory": "2Gi"}},
        }
        apply(refusing)
        try:
            apply(manifest(name))
            # Only the Job controller's FailedCreate Events say why there is no pod: the cache must see them.
            cond = wait_condition(name, "Optimized", "FailedCreate", timeout=120)
            body = get_om(name)
            record.update(
                reason=cond["reason"], message=cond["message"], phase=phase(body), pools=body["status"].get("pools")
            )
            assert phase(body) == "Failed", phase(body)
            assert "exceeded quota" in cond["message"] and "fix: namespace 'models' refuses" in cond["message"], cond
            pods = kget("pods", "-n", MODELS_NS, "-l", f"honed.dev/optimizedmodel={name}")["items"]
            assert not pods, [p["metadata"]["name"] for p in pods]
        finally:
            kubectl("delete", "resourcequota", quota, "-n", MODELS_NS, "--ignore-not-found")
        started = time.monotonic()
        reoptimize(name)
        self._recover(record, started, name)
        record["recovery_by"] = "the quota deleted, then the honed.dev/reoptimize annotation"
        delete_om(name)

    def triton_killed(self, record: dict[str, Any]) -> None:
        name = "f-killed"
        apply(manifest(name, replicas=1))
        before = wait_serving(name, timeout=240)
        version, endpoint = before["status"]["winner"]["version"], before["status"]["endpoint"]
        versions_before = versions_in(self.store, name)
        selector = f"honed.dev/optimizedmodel={name},app.kubernetes.io/component=server"
        phases: set[str] = set()

        def lost() -> dict[str, Any] | None:
            body = get_om(name)
            phases.add(phase(body))
            return body if condition(body, "Deployed").get("reason") == "ReplicasUnavailable" else None

        recoveries: dict[str, float] = {}
        for how in ("process", "pod"):
            pods = kget("pods", "-n", MODELS_NS, "-l", selector)["items"]
            [pod] = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            if how == "process":
                # The container's own process, SIGKILLed from the node as an OOM kill or a crash would end it.
                os.kill(triton_process(name), signal.SIGKILL)
            else:
                kubectl("delete", "pod", pod["metadata"]["name"], "-n", MODELS_NS, "--wait=false")
            body = wait_for(f"{name}: Deployed reason ReplicasUnavailable ({how})", lost, timeout=60, interval=0.3)
            deployed, ready = condition(body, "Deployed"), condition(body, "Ready")
            record[f"{how}_killed"] = {"deployed": deployed["message"], "ready": (ready["reason"], ready["message"])}
            assert ready["status"] == "False", ready
            started = time.monotonic()
            after = wait_serving(name, timeout=120)
            recoveries[how] = round(time.monotonic() - started, 1)
            phases.add(phase(after))
            assert after["status"]["winner"]["version"] == version, after["status"]["winner"]
            assert after["status"]["endpoint"] == endpoint, after["status"]["endpoint"]
        record.update(reason="ReplicasUnavailable", message=record["process_killed"]["deployed"])
        record["recovery_s"] = max(recoveries.values())
        record["recovery_s_by_fault"] = recoveries
        record["phases_seen"] = sorted(phases)
        record["recovery_by"] = "automatic: the kubelet restarts the container, the Deployment replaces the pod"
        assert phases == {"Serving"}, phases  # never Deploying: nothing was rolled out
        assert versions_in(self.store, name) == versions_before, versions_in(self.store, name)
        delete_om(name)

    def operator_deleted(self, record: dict[str, Any]) -> None:
        selector = f"honed.dev/optimizedmodel={MODEL}"
        before = get_om(MODEL)
        version = before["status"]["winner"]["version"]
        versions_before = versions_in(self.store, MODEL)
        seen_jobs: dict[str, set[str]] = {}
        stop = threading.Event()

        def watch_jobs() -> None:
            while not stop.wait(0.3):
                with contextlib.suppress(Exception):
                    for job in kget("jobs", "-n", MODELS_NS, "-l", selector)["items"]:
                        key = job["metadata"]["labels"].get("honed.dev/optimization", "")
                        seen_jobs.setdefault(key, set()).add(job["metadata"]["uid"])

        watcher = threading.Thread(target=watch_jobs, daemon=True)
        watcher.start()
        try:
            reoptimize(MODEL)

            def running_job() -> bool:
                return phase(get_om(MODEL)) == "Optimizing" and any(
                    (j.get("status") or {}).get("active")
                    for j in kget("jobs", "-n", MODELS_NS, "-l", selector)["items"]
                )

            wait_for("the new optimization's Job running", running_job, timeout=120, interval=0.3)
            old = operator_pods()[0]
            kubectl("delete", "pod", old["metadata"]["name"], "-n", SYSTEM_NS, "--wait=false")
            new = wait_operator_ready(old["metadata"]["uid"])

            def deploying() -> bool:
                body = get_om(MODEL)
                return phase(body) == "Deploying" or condition(body, "Deployed").get("reason") == "RollingOut"

            wait_for("Deploying", deploying, timeout=300, interval=0.2)
            kubectl("delete", "pod", new["metadata"]["name"], "-n", SYSTEM_NS, "--wait=false")
            started = time.monotonic()
            wait_operator_ready(new["metadata"]["uid"])
            body = self._recover(record, started, MODEL, version_above=version)
        finally:
            stop.set()
            watcher.join(5)
        optimization = (body["status"].get("lastOptimization") or {}).get("id", "")
        uids = seen_jobs.get(optimization, set())
        versions_after = versions_in(self.store, MODEL)
        new_versions = [v for v in versions_after if v not in versions_before]
        record.update(
            reason="(no condition: the restarted operator carries on)",
            message=f"job uids of optimization {optimization}: {len(uids)}; new version dirs: {new_versions}",
            job_uids=len(uids),
            new_version_dirs=new_versions,
            version=body["status"]["winner"]["version"],
        )
        assert len(uids) == 1, f"duplicate Jobs: {uids}"
        assert len(new_versions) == 1, f"version dirs {versions_before} -> {versions_after}"

    def apiserver_restart(self, record: dict[str, Any]) -> None:
        name = "f-apiserver"
        pid_file = self.run_dir / "pids" / "kube-apiserver.pid"
        pid = int(pid_file.read_text().strip())
        proc = Path(f"/proc/{pid}")
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        environ = dict(e.decode().split("=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
        cwd = os.readlink(proc / "cwd")
        apply(manifest(name))
        time.sleep(1.0)  # the operator's first pass is under way
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            for _ in range(100):
                if not proc.exists():
                    break
                time.sleep(0.05)
        time.sleep(5)
        log = (self.run_dir / "logs" / "kube-apiserver.log").open("ab")
        # This driver runs in the node's network namespace (cluster/exec.sh), as the kit's own
        # apiserver does; a new session, so that it outlives the driver; down.sh stops it by pid.
        restarted = subprocess.Popen(
            argv,
            env=environ,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        pid_file.write_text(f"{restarted.pid}\n")
        wait_for("the API server ready", lambda: kubectl("get", "--raw", "/readyz").strip() == "ok", timeout=120)
        record["apiserver_down_s"] = round(time.monotonic() - killed, 1)
        started = time.monotonic()
        self._recover(record, started, name)
        record.update(
            reason="(no condition: the operator's watches reconnect)",
            message=f"apiserver pid {pid} SIGKILLed, restarted as {restarted.pid} after {record['apiserver_down_s']}s",
            recovery_from="the API server ready again, to the new model Serving",
        )
        log_text = kubectl("logs", "-n", SYSTEM_NS, "-l", OPERATOR_SELECTOR, "--tail=-1", check=False)
        record["operator_log_mentions"] = sorted(
            {
                word
                for word in ("ClientConnectorError", "ServerDisconnected", "Connection refused", "Traceback")
                if word in log_text
            }
        )
        delete_om(name)

    def prometheus_down(self, record: dict[str, Any]) -> None:
        assert self.prometheus is not None
        args = self.prometheus.args
        self.prometheus.terminate()
        self.prometheus.wait(30)
        cond = wait_condition(MODEL, "MetricsUnavailable", "PrometheusUnreachable", timeout=120)
        record.update(reason=cond["reason"], message=cond["message"], status=cond["status"])
        slo = condition(get_om(MODEL), "SLOMet")
        record["slo_met_during"] = {k: slo.get(k) for k in ("status", "reason")}
        time.sleep(10)  # serving is untouched meanwhile (the guard counts)
        log = (self.logs / "prometheus.log").open("ab")
        started = time.monotonic()
        self.prometheus = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

        def cleared() -> bool:
            cond = condition(get_om(MODEL), "MetricsUnavailable")
            return not cond or cond.get("status") == "False"

        wait_for("MetricsUnavailable cleared", cleared, timeout=180)
        record["recovery_s"] = round(time.monotonic() - started, 1)
        record["recovery_by"] = "Prometheus started again; the next feedback pass"


# ------------------------------------------------------------------------------------ load


def operator_process() -> int | None:
    """The pid of the in-cluster `honed operator` process (seen from the host's pid namespace)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"operator" in cmdline and any(part.endswith(b"honed") for part in cmdline[:2]):
                return int(proc.name)
    return None


def triton_process(name: str) -> int:
    """The pid of the tritonserver process serving OptimizedModel ``name`` (seen from the host's pid namespace)."""
    from honed.controller import names

    repository = f"/{names.repository_key(MODELS_NS, name)}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if cmdline[0].endswith(b"tritonserver") and any(a.endswith(repository) for a in cmdline):
                return int(proc.name)
    raise RuntimeError(f"no tritonserver process serves {name}")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def api_requests() -> tuple[float, float]:
    """(every request, requests by the operator's ServiceAccount's user agent if the metric has it)."""
    text = kubectl("get", "--raw", "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total, float("nan")


def load_many(run: Run, count: int) -> str:
    names = [f"load-{i:02d}" for i in range(count)]
    sh(
        kit.helm(),
        "upgrade",
        RELEASE,
        REPO / "charts" / "honed",
        "-n",
        SYSTEM_NS,
        "--reuse-values",
        "--set",
        "operator.pendingTimeoutSeconds=3600",
        "--wait",
        "--timeout",
        "180s",
    )
    time.sleep(5)
    wait_operator_ready()
    pid = operator_process()
    assert pid is not None, "no `honed operator` process found"
    idle_window = 60.0
    first, _ = api_requests()
    time.sleep(idle_window)
    second, _ = api_requests()
    idle_per_min = (second - first) * 60 / idle_window
    rss_before, _ = rss_mib(pid)
    items: list[dict[str, Any]] = []
    body = {"apiVersion": "v1", "kind": "List", "items": items}
    for name in names:
        item = manifest(name, pool="small")
        # Up to ~9 Jobs share the 2 CPUs: the budget must cover the original model's run under that
        # sharing (5 s did not: every model failed before its baseline ran), so they can reach Serving.
        item["spec"]["search"]["timeBudget"] = "60s"
        items.append(item)
    peak = [rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(OSError, KeyError):
                peak.append(rss_mib(pid)[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    before_busy, _ = api_requests()
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))
    phases: dict[str, str] = {}

    def settled() -> bool:
        items = kget("optimizedmodels", "-n", MODELS_NS)["items"]
        phases.clear()
        phases.update({i["metadata"]["name"]: phase(i) for i in items if i["metadata"]["name"] in names})
        return len(phases) == count and all(p in ("Serving", "Failed") for p in phases.values())

    try:
        wait_for(f"{count} models settled", settled, timeout=2400, interval=5)
    finally:
        stop.set()
        sampler.join(5)
    settle_s = time.monotonic() - started
    after_busy, _ = api_requests()
    busy_per_min = (after_busy - before_busy) * 60 / settle_s
    _, hwm = rss_mib(pid)
    counts: dict[str, int] = {}
    for value in phases.values():
        counts[value] = counts.get(value, 0) + 1
    run.facts["load_many"] = {
        "models": count,
        "settle_s": round(settle_s, 1),
        "phases": counts,
        "operator_rss_mib_before": round(rss_before, 1),
        "operator_rss_mib_peak_sampled": round(max(peak), 1),
        "operator_vmhwm_mib": round(hwm, 1),
        "api_requests_per_min_idle_all_clients": round(idle_per_min),
        "api_requests_per_min_busy_all_clients": round(busy_per_min),
        "operator_restarts": operator_restarts(),
    }
    failed = [n for n, p in phases.items() if p == "Failed"]
    if failed:
        run.facts["load_many"]["failed_example"] = condition(get_om(failed[0]), "Optimized")
    kubectl("delete", "optimizedmodels", "-n", MODELS_NS, *names, "--wait=false")
    assert operator_restarts() == 0
    facts = run.facts["load_many"]
    return (
        f"{count} models: {counts} in {facts['settle_s']}s; operator RSS {facts['operator_rss_mib_before']} -> peak "
        f"{facts['operator_rss_mib_peak_sampled']} MiB; API requests/min idle "
        f"{facts['api_requests_per_min_idle_all_clients']}, "
        f"busy {facts['api_requests_per_min_busy_all_clients']} (all clients)"
    )


def load_swaps(run: Run, workers: int = 64, swaps: int = 3) -> str:
    import numpy as np

    body = get_om(MODEL)
    service = body["status"]["endpoint"]["http"].split("//")[1].split(".")[0]
    clients = Clients(service, MODEL, workers=workers, pause_s=0.02)
    windows: list[tuple[float, float]] = []
    try:
        time.sleep(30)  # steady state first
        cache = True
        for _ in range(swaps):
            version = get_om(MODEL)["status"]["winner"]["version"]
            before = {
                p["metadata"]["uid"]
                for p in kget(
                    "pods",
                    "-n",
                    MODELS_NS,
                    "-l",
                    "app.kubernetes.io/component=server,honed.dev/optimizedmodel=" + MODEL,
                )["items"]
            }
            cache = not cache
            started = time.monotonic()
            kubectl(
                "patch",
                "optimizedmodel",
                MODEL,
                "-n",
                MODELS_NS,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"serving": {"responseCache": cache}}}),
            )

            def swapped(before: set[str] = before) -> bool:
                pods = kget(
                    "pods",
                    "-n",
                    MODELS_NS,
                    "-l",
                    "app.kubernetes.io/component=server,honed.dev/optimizedmodel=" + MODEL,
                )["items"]
                body = get_om(MODEL)
                return (
                    not ({p["metadata"]["uid"] for p in pods} & before)
                    and condition(body, "Deployed").get("status") == "True"
                    and phase(body) == "Serving"
                )

            wait_for("the swap done", swapped, timeout=300, interval=0.5)
            time.sleep(3)
            windows.append((started, time.monotonic()))
            run.facts.setdefault("load_swap_versions", []).append(version)
            time.sleep(20)  # steady state between swaps
    finally:
        clients.close()

    def in_swap(t: float) -> bool:
        return any(a <= t <= b for a, b in windows)

    during = np.array([lat for t, lat in clients.samples if in_swap(t)]) * 1000
    steady = np.array([lat for t, lat in clients.samples if not in_swap(t)]) * 1000
    facts = {
        "clients": workers,
        "swaps": swaps,
        "swap_seconds": [round(b - a, 1) for a, b in windows],
        "requests": clients.requests,
        "failed": len(clients.failures),
        "failures_example": clients.failures[:3],
        "p50_ms_steady": round(float(np.percentile(steady, 50)), 1),
        "p99_ms_steady": round(float(np.percentile(steady, 99)), 1),
        "p50_ms_during_swaps": round(float(np.percentile(during, 50)), 1),
        "p99_ms_during_swaps": round(float(np.percentile(during, 99)), 1),
        "requests_per_s": round(clients.requests / (clients.samples[-1][0] - clients.samples[0][0]), 1),
    }
    run.facts["load_swaps"] = facts
    assert not clients.failures, f"{len(clients.failures)} failed: {clients.failures[:3]}"
    return (
        f"{workers} clients, {swaps} swaps ({facts['swap_seconds']} s): {facts['requests']} requests, 0 failed; "
        f"p99 steady {facts['p99_ms_steady']} ms, during swaps {facts['p99_ms_during_swaps']} ms"
    )


# ------------------------------------------------------------------------------------ driver


FAULTS = (
    ("missing_model", "fault: model URI with no file -> ModelUnreachable; file appears"),
    ("bad_data", "fault: data with wrong shapes -> the engine's error; fixed + reoptimize"),
    ("oom", "fault: optimizer OOM-killed (200Mi pool) -> OOMKilled; retarget"),
    ("deadline", "fault: Job past activeDeadlineSeconds -> DeadlineExceeded; reoptimize"),
    ("unschedulable", "fault: no node matches the pool -> Unschedulable after 30 s; label"),
    ("triton_refuses", "fault: Triton refuses the new version -> old keeps serving"),
    ("triton_killed", "fault: Triton killed, then its pod deleted -> ReplicasUnavailable; back"),
    ("quota_refuses", "fault: ResourceQuota refuses the Job's pod -> FailedCreate; quota gone"),
    ("operator_deleted", "fault: operator deleted mid-optimization and mid-deploy"),
    ("apiserver_restart", "fault: kube-apiserver killed and restarted (etcd kept)"),
    ("prometheus_down", "fault: Prometheus stopped -> MetricsUnavailable; started"),
)


def inner(args: argparse.Namespace) -> int:
    run = Run()
    out = Path(args.out)
    run_dir = Path(args.run_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    store = run_dir / "store"
    only = set(args.only.split(",")) if args.only else None
    faults = Faults(run, store, run_dir, logs)
    code = 0
    try:
        with run.step("namespaces, store, Prometheus, helm install (pools cpu, tiny, zoned, small)"):
            chain.prepare_namespaces()
            chain.prepare_store(store)
            faults.prometheus, faults.discovery = chain.start_prometheus(run_dir, logs)
            values = out / "values-faults.json"
            values.write_text(json.dumps(values_override(args.image_prefix)))
            sh(
                kit.helm(),
                "upgrade",
                "--install",
                RELEASE,
                REPO / "charts" / "honed",
                "-n",
                SYSTEM_NS,
                "-f",
                values,
                "--wait",
                "--timeout",
                "180s",
            )
        with run.step(f"{MODEL} Serving (1 replica, feedback on), a client sends it requests") as note:
            applied = time.monotonic()
            apply(manifest(MODEL, replicas=1, feedback=True))
            body = wait_serving(MODEL, timeout=300)
            service = body["status"]["endpoint"]["http"].split("//")[1].split(".")[0]
            faults.guard = Clients(service, MODEL, workers=2, pause_s=0.05)
            time.sleep(3)
            assert faults.guard.samples and not faults.guard.failures, faults.guard.failures[:3]
            note["detail"] = (
                f"{time.monotonic() - applied:.0f}s after apply; version {body['status']['winner']['version']}"
            )
        for key, title in FAULTS:
            if only is None or key in only:
                faults.fault(key, title, getattr(faults, key))
        if faults.guard is not None:
            faults.guard.close()
            run.facts["guard"] = {
                "requests": faults.guard.requests,
                "failed": len(faults.guard.failures),
                "failures": faults.guard.failures[:5],
            }
        if only is None or "load_many" in only:
            with (
                contextlib.suppress(Exception),
                run.step(f"load: {args.load_models} tiny OptimizedModels at once") as note,
            ):
                note["detail"] = load_many(run, args.load_models)
        if only is None or "load_swaps" in only:
            with contextlib.suppress(Exception), run.step("load: 64 clients across 3 version swaps") as note:
                note["detail"] = load_swaps(run)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        if faults.guard is not None:
            faults.guard.close()
        chain.collect_logs(logs)
        if faults.discovery is not None:
            faults.discovery.stop.set()
        if faults.prometheus is not None:
            faults.prometheus.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                faults.prometheus.wait(10)
        with contextlib.suppress(Exception):
            sh(kit.helm(), "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "120s", check=False)
        (out / "inner.json").write_text(
            json.dumps({"steps": [asdict(s) for s in run.steps], "facts": run.facts}, default=str)
        )
    if any(not s.ok for s in run.steps):
        code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="out/e2e-faults", help="where result.json and logs go")
    parser.add_argument("--run-dir", default="/tmp/honed-faults", help="the kit's RUN_DIR (keep it short)")
    parser.add_argument("--image-prefix", default=DEFAULT_PREFIX, help=f"image tag prefix (default {DEFAULT_PREFIX})")
    parser.add_argument("--load-models", type=int, default=50, help="OptimizedModels applied at once (default 50)")
    parser.add_argument("--only", default="", help="comma-separated faults/loads to run (default all)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running (then run down.sh yourself)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return inner(args)
    why = kit.missing()
    if why:
        print(f"make e2e-faults cannot run here: {why}", file=sys.stderr)
        return 2
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
