"""`make e2e`: honed's whole chain on a real single-node Kubernetes cluster (the kit's cluster mode).

What docs/quickstart.md tells a user to do, with nothing patched by hand:

1. start a node (kit ``cluster/up.sh``), build the operator, optimizer-cpu and triton-cpu images
   and import them into the node (``make images``);
2. namespaces that enforce the ``restricted`` Pod Security level, an artifact store on a
   PersistentVolume (hostPath, since the node has no provisioner), the model and its labelled
   data put into it, a real Prometheus that discovers the Triton pods through the API server;
3. ``helm install charts/honed`` with ``examples/local-cluster/values.yaml``, then
   ``kubectl apply --server-side`` of ``examples/local-cluster/optimizedmodel.yaml``;
4. the real Job controller, scheduler and kubelet run ``honed optimize`` in the optimizer image; the
   operator selects, writes the repository and deploys Triton; requests to the Triton pod answer
   what the original model answers; a load that breaks the SLO makes the feedback loop act and a
   new version takes over under a steady client that follows the EndpointSlices as kube-proxy
   would;
5. GitOps checks (a second server-side apply changes nothing, ``kubectl diff`` is empty), an
   operator upgrade that leaves serving alone, least privilege (``kubectl auth can-i``, no 403 in
   the operator's log), deletion (owner references and the finalizer clean up children and the
   store), then teardown and a check that nothing is left.

One line per step with its time; ``OUT/result.json`` has every step, the apply-to-Serving time,
the swap's request counts and the leftovers. The in-cluster part runs inside the node's network
namespace (``cluster/exec.sh``), where pod IPs route; the rest runs on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures import kit

REPO = kit.REPO
EXAMPLE = REPO / "examples" / "local-cluster"
RELEASE = "honed"
SYSTEM_NS = "honed-system"
MODELS_NS = "models"
MODEL = "digits"
CLAIM = "honed-store"
POOL_LABEL = "honed.dev/pool=cpu"
STORE_UID = 10001  # honed's images run as this user; the hostPath store must be writable by it
PROMETHEUS_PORT = 9090
OPERATOR_LOGS: list[str] = []  # logs of operator pods that an upgrade replaced
NODE_IP = "10.244.0.1"


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Run:
    steps: list[Step] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time one step; a failure is recorded and re-raised (later steps depend on earlier ones)."""
        started = time.monotonic()
        note: dict[str, Any] = {}
        try:
            yield note
        except BaseException as exc:
            seconds = time.monotonic() - started
            detail = f"{type(exc).__name__}: {exc}"
            self.steps.append(Step(name, False, round(seconds, 2), detail))
            print(f"FAIL {name:<58} {seconds:7.1f}s  {detail}", flush=True)
            raise
        seconds = time.monotonic() - started
        detail = str(note.get("detail", ""))
        self.steps.append(Step(name, True, round(seconds, 2), detail))
        print(f"ok   {name:<58} {seconds:7.1f}s  {detail}", flush=True)


# ---------------------------------------------------------------------------------------- helpers


def sh(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}"
        )
    return done.stdout


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=stdin, timeout=300)
    if check and done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def kget(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json"))


def wait_for(what: str, check: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except RuntimeError as exc:  # the API server answered with an error: try again
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout:.0f}s; last: {str(last)[:1500]}")


def om() -> dict[str, Any]:
    model: dict[str, Any] = kget("optimizedmodel", MODEL, "-n", MODELS_NS)
    return model


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def ready_endpoints(service: str) -> list[str]:
    """Ready, not terminating pod IPs behind a Service: what kube-proxy would route to."""
    slices = kget("endpointslices", "-n", MODELS_NS, "-l", f"kubernetes.io/service-name={service}")
    addresses: list[str] = []
    for item in slices["items"]:
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") and not conditions.get("terminating"):
                addresses.extend(endpoint.get("addresses") or [])
    return sorted(set(addresses))


# --------------------------------------------------------------------------------- host side (outer)


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
            sh(kit_root / "cluster" / "up.sh", run_dir, env={"HONED_NODE_LABELS": POOL_LABEL})
            started = True
        with run.step("images built and imported into the node (make images)"):
            sh("make", "-C", REPO, "images", env={"HONED_K8S_RUN_DIR": str(run_dir)}, timeout=3600)
        with run.step("the chain, inside the node's network namespace"):
            inside = [sys.executable, "-m", "tests.e2e.cluster.chain", "--inside", "--run-dir", str(run_dir)]
            inside += ["--out", str(out)]
            code = subprocess.run([kit_root / "cluster" / "exec.sh", run_dir, *inside], cwd=REPO).returncode
            if code != 0:
                raise RuntimeError(f"the in-cluster steps failed (exit {code}); see above and {out}/logs")
    except BaseException:
        traceback.print_exc()
    finally:
        if started and not args.keep:
            with contextlib.suppress(Exception), run.step("teardown (cluster/down.sh)") as note:
                done = subprocess.run(
                    [str(kit_root / "cluster" / "down.sh"), str(run_dir), "--purge"],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                # down.sh compares the whole host with its snapshot from up.sh, so another cluster
                # started meanwhile makes it exit 1; what this run left is judged by find_leftovers.
                if done.returncode != 0:
                    note["detail"] = "down.sh saw host changes not under this run: " + " ".join(
                        line for line in done.stderr.splitlines() if "differs" in line
                    )
    inner = json.loads(inner_file.read_text()) if inner_file.is_file() else {"steps": [], "facts": {}}
    steps = run.steps[:2] + [Step(**s) for s in inner["steps"]] + run.steps[2:]
    leftovers = [] if args.keep else find_leftovers(run_dir, host_addresses)
    result = {
        "steps": [asdict(s) for s in steps],
        "apply_to_serving_s": inner["facts"].get("apply_to_serving_s"),
        "swap_requests": inner["facts"].get("swap_requests"),
        "swap_failed_requests": inner["facts"].get("swap_failed_requests"),
        "leftovers": leftovers,
        **{k: v for k, v in inner["facts"].items() if k not in ("apply_to_serving_s",)},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    ok = all(s.ok for s in steps) and bool(inner["steps"]) and not leftovers
    print(f"{'PASSED' if ok else 'FAILED'}: {sum(s.ok for s in steps)}/{len(steps)} steps; leftovers: {leftovers}")
    print(f"wrote {out / 'result.json'}")
    return 0 if ok else 1


def own_ancestry() -> set[int]:
    """This process and its parents, up to init."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def find_leftovers(run_dir: Path, host_addresses_before: str) -> list[str]:
    """Pods' processes, network namespaces, mounts and host addresses the run left behind."""
    leftovers = []
    namespace = "hk-" + __import__("hashlib").sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    if namespace in sh("ip", "netns", "list", check=False):
        leftovers.append(f"network namespace {namespace}")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        if str(run_dir) in line.split()[1]:
            leftovers.append(f"mount {line.split()[1]}")
    drivers = own_ancestry()  # this driver (and make above it) names RUN_DIR on its command line
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in drivers:
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(run_dir) in cmdline:
                leftovers.append(f"process {proc.name}: {cmdline[:120]}")
    if sh("ip", "-o", "addr") != host_addresses_before:
        leftovers.append("the host's interfaces changed")
    return leftovers


# ------------------------------------------------------------------------------ netns side (inner)


def inner(args: argparse.Namespace) -> int:
    run = Run()
    out = Path(args.out)
    run_dir = Path(args.run_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    store = run_dir / "store"
    prometheus: tuple[subprocess.Popen[bytes], PodDiscovery] | None = None
    try:
        with run.step("namespaces enforce the restricted Pod Security level"):
            prepare_namespaces()
        with run.step("artifact store on hostPath PersistentVolumes, model and data in it") as note:
            note["detail"] = prepare_store(store)
        with run.step("Prometheus runs; Triton pods discovered through the API server"):
            prometheus = start_prometheus(run_dir, logs)
        with run.step("helm install charts/honed --wait"):
            helm_install()
        operator_pod = kget("pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=operator")["items"][0]
        run.facts["operator_image"] = operator_pod["spec"]["containers"][0]["image"]

        applied = time.monotonic()
        with run.step("kubectl apply --server-side the OptimizedModel"):
            kubectl("apply", "--server-side", "-f", str(EXAMPLE / "optimizedmodel.yaml"))
        with run.step("optimization Job runs honed optimize in the optimizer image") as note:
            note["detail"] = check_job(store)
        with run.step("Serving: winner selected, repository written, Triton ready") as note:
            body = wait_for("phase Serving", lambda: _serving(), timeout=300)
            run.facts["apply_to_serving_s"] = round(time.monotonic() - applied, 1)
            note["detail"] = f"{run.facts['apply_to_serving_s']}s after apply; " + check_printer_columns(body)
        with run.step("Triton answers what the original model answers") as note:
            note["detail"] = check_inference(store, run.facts)
        with run.step("Prometheus scrapes Triton (pod discovery)") as note:
            note["detail"] = check_scraped()
        with run.step("SLO breach -> feedback decision -> new version, 0 failed requests") as note:
            note["detail"] = check_feedback_swap(run.facts)
        with run.step("server-side apply again changes nothing; kubectl diff is empty") as note:
            note["detail"] = check_gitops()
        with run.step("helm upgrade of the operator leaves serving pods alone") as note:
            note["detail"] = check_operator_upgrade()
        with run.step("least privilege: no 403 in the operator log, can-i denies the rest") as note:
            note["detail"] = check_rbac(logs)
        with run.step("every honed pod was admitted under restricted") as note:
            note["detail"] = check_pod_security()
        with run.step("delete: owner references and the finalizer remove children and artifacts") as note:
            note["detail"] = check_delete(store)
        with run.step("helm uninstall"):
            sh(kit.helm(), "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "120s")
    except BaseException:
        traceback.print_exc()
        collect_logs(logs)
        return_code = 1
    else:
        collect_logs(logs)
        return_code = 0
    finally:
        if prometheus is not None:
            process, discovery = prometheus
            discovery.stop.set()
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        (out / "inner.json").write_text(json.dumps({"steps": [asdict(s) for s in run.steps], "facts": run.facts}))
    return return_code


def prepare_namespaces() -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    for namespace in (SYSTEM_NS, MODELS_NS):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}
        kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def prepare_store(store: Path) -> str:
    """Two hostPath PVs on one directory, each pre-bound to a claim of the same name in one namespace."""
    from tests.fixtures.models import digits_onnx

    models = store / "models"
    models.mkdir(parents=True, exist_ok=True)
    model, data = digits_onnx(models)
    for path in [store, *store.rglob("*")]:
        os.chown(path, STORE_UID, STORE_UID)
    for namespace in (SYSTEM_NS, MODELS_NS):
        volume = f"{CLAIM}-{namespace}"
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(store), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        }
        pvc = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "10Gi"}},
            },
        }
        kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))
    wait_for(
        "claims bound",
        lambda: all(kget("pvc", CLAIM, "-n", ns)["status"].get("phase") == "Bound" for ns in (SYSTEM_NS, MODELS_NS)),
        timeout=60,
    )
    return f"{model.name} ({model.stat().st_size // 1024} KiB) and {data.name}"


class PodDiscovery:
    """Feeds Prometheus the pods that ask to be scraped, read from the API server every second.

    Debian's Prometheus is built without kubernetes_sd; this does what its pod role does with the
    usual relabelling (keep ``prometheus.io/scrape=true``, address from the pod IP and
    ``prometheus.io/port``, ``namespace`` and ``pod`` labels), through a file_sd file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def targets(self) -> list[dict[str, Any]]:
        groups = []
        for pod in kget("pods", "-n", MODELS_NS)["items"]:
            annotations = pod["metadata"].get("annotations") or {}
            ip = (pod.get("status") or {}).get("podIP")
            if annotations.get("prometheus.io/scrape") != "true" or not ip:
                continue
            groups.append(
                {
                    "targets": [f"{ip}:{annotations.get('prometheus.io/port', '80')}"],
                    "labels": {"namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"]},
                }
            )
        return groups

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            with contextlib.suppress(RuntimeError, json.JSONDecodeError):
                text = json.dumps(self.targets())
                if not self.path.is_file() or self.path.read_text() != text:
                    scratch = self.path.with_suffix(".tmp")
                    scratch.write_text(text)
                    scratch.replace(self.path)  # Prometheus must never read half a file


def start_prometheus(run_dir: Path, logs: Path) -> tuple[subprocess.Popen[bytes], PodDiscovery]:
    """The Debian Prometheus on the node's IP: pods (the operator) reach it, it reaches pod IPs."""
    work = run_dir / "prometheus"
    work.mkdir(exist_ok=True)
    discovery = PodDiscovery(work / "triton-pods.json")
    discovery.path.write_text("[]")
    discovery.thread.start()
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "scrape_configs": [
            {
                "job_name": "triton",
                "file_sd_configs": [{"files": [str(discovery.path)], "refresh_interval": "2s"}],
            }
        ],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))
    log = (logs / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address={NODE_IP}:{PROMETHEUS_PORT}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for("Prometheus ready", lambda: _http_ok(f"http://{NODE_IP}:{PROMETHEUS_PORT}/-/ready"), timeout=60)
    return process, discovery


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def prom_query(query: str) -> list[dict[str, Any]]:
    import urllib.parse
    import urllib.request

    url = f"http://{NODE_IP}:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(json.loads(response.read())["data"]["result"])


def helm_install() -> None:
    sh(
        kit.helm(),
        "install",
        RELEASE,
        REPO / "charts" / "honed",
        "-n",
        SYSTEM_NS,
        "-f",
        EXAMPLE / "values.yaml",
        "--set",
        f"prometheus.url=http://{NODE_IP}:{PROMETHEUS_PORT}",
        "--wait",
        "--timeout",
        "180s",
    )


def _serving() -> dict[str, Any] | None:
    body = om()
    status = body.get("status") or {}
    if status.get("phase") == "Failed":
        raise AssertionError(f"the OptimizedModel failed: {json.dumps(status)[:1500]}")
    ready = condition(body, "Ready").get("status") == "True"
    return body if status.get("phase") == "Serving" and ready else None


def check_job(store: Path) -> str:
    def finished() -> dict[str, Any] | None:
        jobs = kget("jobs", "-n", MODELS_NS, "-l", f"honed.dev/optimizedmodel={MODEL}")["items"]
        done = [j for j in jobs if (j.get("status") or {}).get("succeeded")]
        failed = [j for j in jobs if (j.get("status") or {}).get("failed")]
        if failed:
            raise AssertionError(f"optimization Job failed: {json.dumps(failed[0].get('status'))[:1000]}")
        return done[0] if done else None

    job = wait_for("the optimization Job to succeed", finished, timeout=240)
    pods = kget("pods", "-n", MODELS_NS, "-l", f"job-name={job['metadata']['name']}")["items"]
    image = pods[0]["spec"]["containers"][0]["image"]
    assert "optimizer-cpu" in image, image
    reports = list((store / "honed" / MODELS_NS / MODEL / "optimizations").glob("*/cpu/report.json"))
    assert reports, f"no report.json under {store}"
    report = json.loads(reports[0].read_text())
    seconds = (
        _stamp(job["status"]["completionTime"]) - _stamp(job["status"]["startTime"])
        if job["status"].get("completionTime")
        else None
    )
    return f"{job['metadata']['name']} in {seconds:.0f}s on {image}; winner {report.get('winner')}"


def _stamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_printer_columns(body: dict[str, Any]) -> str:
    table = kubectl("get", "om", MODEL, "-n", MODELS_NS)
    header, row = table.strip().splitlines()[:2]
    winner = body["status"]["winner"]
    assert "Serving" in row and winner["name"] in row, table
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert float(columns["SPEEDUP"]) == winner["speedup"], f"speedup column: {table}"
    assert body["status"]["endpoint"]["http"].split("//")[1].split(":")[0] in row, table
    return " | ".join(" ".join(line.split()) for line in (header, row))


def check_inference(store: Path, facts: dict[str, Any]) -> str:
    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as triton_http

    body = om()
    endpoint = body["status"]["endpoint"]
    service = endpoint["http"].split("//")[1].split(".")[0]
    address = ready_endpoints(service)[0]
    client = triton_http.InferenceServerClient(url=f"{address}:8000")
    data = np.load(store / "models" / "digits_val.npz")
    inputs, labels = data["input"], data["labels"]
    session = ort.InferenceSession(str(store / "models" / "digits.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    output = session.get_outputs()[0].name
    served = []
    # Requests as large as the served config allows (Triton refuses larger batches).
    step = int(body["status"]["winner"]["config"].get("maxBatchSize") or 1)
    for start in range(0, len(inputs), step):
        batch = np.ascontiguousarray(inputs[start : start + step])
        request = triton_http.InferInput(session.get_inputs()[0].name, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        answer = client.infer(endpoint["model"], [request], model_version=str(endpoint["version"]))
        served.append(answer.as_numpy(output))
    got = np.concatenate(served)
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    accuracy = float((got.argmax(1) == labels).mean())
    assert agreement >= 0.98, f"top-1 agreement with the original model {agreement:.3f}"
    # The same batch again: the response cache answers it.
    before = _cache_hits(address)
    request = triton_http.InferInput(session.get_inputs()[0].name, [1, *inputs.shape[1:]], "FP32")
    request.set_data_from_numpy(np.ascontiguousarray(inputs[:1]))
    for _ in range(3):
        client.infer(endpoint["model"], [request], model_version=str(endpoint["version"]))
    hits = _cache_hits(address) - before
    facts.update(top1_agreement=agreement, served_accuracy=accuracy, cache_hits=hits)
    return f"{len(inputs)} samples: top-1 agreement {agreement:.3f}, accuracy {accuracy:.3f}, cache hits +{hits:.0f}"


def _cache_hits(address: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://{address}:8002/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("nv_cache_num_hits"))


def check_scraped() -> str:
    series = wait_for(
        "Triton series in Prometheus",
        lambda: prom_query(f'nv_inference_count{{namespace="{MODELS_NS}",model="{MODEL}"}}'),
        timeout=60,
    )
    return f"{len(series)} nv_inference_count series, pod {series[0]['metric'].get('pod')}"


class SteadyClient:
    """A client at a steady rate that follows the Service's EndpointSlices, as kube-proxy would."""

    def __init__(self, service: str, model: str, workers: int = 4) -> None:
        self.service, self.model = service, model
        self.requests = 0
        self.failures: list[str] = []
        self.addresses: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._endpoints, daemon=True)]
        self.threads += [threading.Thread(target=self._load, args=(i,), daemon=True) for i in range(workers)]

    def __enter__(self) -> SteadyClient:
        self.addresses = ready_endpoints(self.service)
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _endpoints(self) -> None:
        while not self.stop.wait(0.5):
            with contextlib.suppress(RuntimeError, json.JSONDecodeError):
                addresses = ready_endpoints(self.service)
                if addresses:
                    self.addresses = addresses

    def _load(self, worker: int) -> None:
        import numpy as np
        import tritonclient.http as triton_http

        rng = np.random.default_rng(worker)
        clients: dict[str, Any] = {}
        while not self.stop.is_set():
            address = self.addresses[(self.requests + worker) % len(self.addresses)]
            client = clients.get(address) or clients.setdefault(
                address, triton_http.InferenceServerClient(url=f"{address}:8000", network_timeout=30)
            )
            # Fresh inputs: cache misses, so the load reaches the model.
            batch = rng.random((1, 1, 8, 8), dtype=np.float32)
            request = triton_http.InferInput("input", list(batch.shape), "FP32")
            request.set_data_from_numpy(batch)
            try:
                client.infer(self.model, [request])
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{address}: {exc}")
            with self.lock:
                self.requests += 1
            time.sleep(0.02)


def check_feedback_swap(facts: dict[str, Any]) -> str:
    body = om()
    version = body["status"]["endpoint"]["version"]
    service = body["status"]["endpoint"]["http"].split("//")[1].split(".")[0]
    with SteadyClient(service, MODEL) as client:

        def swapped() -> dict[str, Any] | None:
            current = om()
            status = current.get("status") or {}
            endpoint = status.get("endpoint") or {}
            deployed = condition(current, "Deployed").get("status") == "True"
            old_pods = [
                p
                for p in kget("pods", "-n", MODELS_NS, "-l", f"honed.dev/optimizedmodel={MODEL}")["items"]
                if p["metadata"].get("annotations", {}).get("honed.dev/model-version") == str(version)
            ]
            if endpoint.get("version", version) > version and deployed and not old_pods:
                return current
            return None

        current = wait_for("a new version serving after the feedback decision", swapped, timeout=420, interval=2)
        time.sleep(3)  # requests keep flowing to the new pod for a moment after the swap
    feedback = current["status"].get("feedback") or {}
    # The loop's memory says what it did (lastDecision is already the Keep of the cooldown after it).
    if feedback.get("reoptimizations"):
        action, why = "Reoptimize", (current["status"].get("lastOptimization") or {}).get("request", "")
    elif feedback.get("retunes"):
        action, why = "Retune", ((current["status"].get("serving") or {}).get("overrides") or {})
    elif feedback.get("fallenBackFrom"):
        action, why = "Fallback", feedback["fallenBackFrom"]
    else:
        action, why = "none", feedback.get("lastDecision")
    facts.update(
        swap_requests=client.requests,
        swap_failed_requests=len(client.failures),
        feedback_decision=action,
        new_version=current["status"]["endpoint"]["version"],
    )
    assert action != "none", f"the new version was not the feedback loop's doing: {feedback}"
    assert not client.failures, f"{len(client.failures)} failed requests, e.g. {client.failures[:3]}"
    return (
        f"{action} ({str(why)[:70]}); version {version} -> {facts['new_version']}; {client.requests} requests, 0 failed"
    )


def check_gitops() -> str:
    before = om()["metadata"]
    kubectl("apply", "--server-side", "-f", str(EXAMPLE / "optimizedmodel.yaml"))
    after = kget("optimizedmodel", MODEL, "-n", MODELS_NS, "--show-managed-fields")["metadata"]
    assert after["generation"] == before["generation"], (before["generation"], after["generation"])
    diffs = []
    for mode in (["--server-side"], []):
        done = subprocess.run(
            ["kubectl", "diff", *mode, "-f", str(EXAMPLE / "optimizedmodel.yaml")], capture_output=True, text=True
        )
        assert done.returncode == 0, (
            f"kubectl diff {' '.join(mode)}: exit {done.returncode}: {done.stdout}{done.stderr}"
        )
        diffs.append(done.stdout)
    spec_writers = [
        m["manager"] for m in after.get("managedFields") or [] if "f:spec" in json.dumps(m.get("fieldsV1") or {})
    ]
    assert spec_writers == ["kubectl"], f"spec fields written by {spec_writers}"
    return f"generation stays {after['generation']}; diff empty; spec written only by {spec_writers}"


def check_operator_upgrade() -> str:
    def triton_pods() -> dict[str, str]:
        pods = kget("pods", "-n", MODELS_NS, "-l", "app.kubernetes.io/component=server")["items"]
        return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}

    before = triton_pods()
    old_operator = kget("pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=operator")["items"][0]
    # The upgrade replaces the operator's pod and its log with it: keep what it wrote for check_rbac.
    OPERATOR_LOGS.append(kubectl("logs", "-n", SYSTEM_NS, old_operator["metadata"]["name"], "--tail=-1"))
    sh(
        kit.helm(),
        "upgrade",
        RELEASE,
        REPO / "charts" / "honed",
        "-n",
        SYSTEM_NS,
        "--reuse-values",
        "--set",
        "operator.logLevel=debug",
        "--wait",
        "--timeout",
        "180s",
    )

    def new_operator_ready() -> bool:
        pods = kget("pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=operator")["items"]
        return any(
            p["metadata"]["uid"] != old_operator["metadata"]["uid"]
            and any(c.get("ready") for c in p.get("status", {}).get("containerStatuses") or [])
            for p in pods
        )

    wait_for("the upgraded operator ready", new_operator_ready, timeout=120)
    time.sleep(15)  # the new operator's first passes over the resource
    after = triton_pods()
    deployment = kget("deployments", "-n", MODELS_NS, "-l", "app.kubernetes.io/component=server")["items"][0]
    assert after == before, f"serving pods changed: {before} -> {after}"
    return f"{len(after)} Triton pod(s) untouched; Deployment generation {deployment['metadata']['generation']}"


def check_rbac(logs: Path) -> str:
    current = kubectl("logs", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=operator", "--tail=-1")
    log = "".join(OPERATOR_LOGS) + current
    (logs / "operator.log").write_text(log)
    # Refusals as the kube client and kopf log them (log timestamps carry ",403]" milliseconds).
    refused = re.compile(r"forbidden|HTTP 403|\b403 Forbidden|status[=: ]+403|\(403\)", re.IGNORECASE)
    forbidden = [line for line in log.splitlines() if refused.search(line)]
    assert not forbidden, f"the operator was refused: {forbidden[:3]}"
    account = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}-operator"
    may = [("create", "jobs", MODELS_NS), ("patch", "optimizedmodels.honed.dev/status", MODELS_NS)]
    may_not = [
        ("get", "secrets", MODELS_NS),
        ("get", "secrets", "kube-system"),
        ("create", "jobs", "kube-system"),
        ("create", "clusterroles", ""),
        ("create", "clusterrolebindings", ""),
        ("delete", "namespaces", ""),
        ("patch", "nodes", ""),
        ("create", "pods", MODELS_NS),
    ]
    denied = []
    for verb, resource, namespace in may + may_not:
        where = ["-n", namespace] if namespace else []
        done = subprocess.run(
            ["kubectl", "auth", "can-i", verb, resource, *where, f"--as={account}"], capture_output=True, text=True
        )
        allowed = done.stdout.strip() == "yes"
        expected = (verb, resource, namespace) in may
        assert allowed == expected, f"can-i {verb} {resource} -n {namespace or '(cluster)'}: {done.stdout.strip()}"
        if not allowed:
            denied.append(f"{verb} {resource}{' in ' + namespace if namespace else ''}")
    return f"{len(log.splitlines())} log lines, no 403; denied: {'; '.join(denied)}"


def check_pod_security() -> str:
    for namespace in (SYSTEM_NS, MODELS_NS):
        labels = kget("namespace", namespace)["metadata"]["labels"]
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels
    events = kget("events", "-n", MODELS_NS)["items"] + kget("events", "-n", SYSTEM_NS)["items"]
    refused = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert not refused, f"pods refused: {refused[:3]}"
    pods = kget("pods", "-n", MODELS_NS)["items"] + kget("pods", "-n", SYSTEM_NS)["items"]
    return f"{len(pods)} pods admitted in {SYSTEM_NS} and {MODELS_NS}; no FailedCreate"


def check_delete(store: Path) -> str:
    artifacts = store / "honed" / MODELS_NS / MODEL
    assert artifacts.is_dir(), f"no artifacts at {artifacts} before deletion"
    kubectl("delete", "optimizedmodel", MODEL, "-n", MODELS_NS, "--wait=true", "--timeout=120s")
    selector = f"honed.dev/optimizedmodel={MODEL}"

    def children() -> list[str]:
        left = []
        for kind in ("jobs", "deployments", "services", "configmaps", "pods", "replicasets"):
            left += [f"{kind}/{i['metadata']['name']}" for i in kget(kind, "-n", MODELS_NS, "-l", selector)["items"]]
        return left

    wait_for("children garbage-collected", lambda: not children(), timeout=120)
    assert not artifacts.exists(), f"artifacts left in the store: {artifacts}"
    return "Jobs, Deployment, Service, ConfigMaps, pods and store artifacts gone"


def collect_logs(logs: Path) -> None:
    for namespace in (SYSTEM_NS, MODELS_NS):
        with contextlib.suppress(Exception):
            (logs / f"{namespace}-events.txt").write_text(kubectl("get", "events", "-n", namespace, check=False))
            (logs / f"{namespace}-pods.txt").write_text(
                kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
            )
    with contextlib.suppress(Exception):
        (logs / "optimizedmodel.yaml").write_text(kubectl("get", "om", "-A", "-o", "yaml", check=False))
        log = kubectl("logs", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=operator", "--tail=-1", check=False)
        if log:
            (logs / "operator-final.log").write_text(log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="out/e2e", help="where result.json and logs go (default out/e2e)")
    parser.add_argument("--run-dir", default="/tmp/honed-e2e", help="the kit's RUN_DIR (keep it short)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running (then run down.sh yourself)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return inner(args)
    why = kit.missing()
    if why:
        print(f"make e2e cannot run here: {why}", file=sys.stderr)
        return 2
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
