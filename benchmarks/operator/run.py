"""Operator benchmark: N OptimizedModels whose optimizer Jobs never finish, on the envtest kit.

    python -m benchmarks.operator.run --models 50 200 1000 --out benchmarks/operator [--name results]
    make bench-operator MODELS="50 200 1000" [NAME=results]

For each N, on a fresh envtest (etcd + kube-apiserver + kube-controller-manager on loopback, no
scheduler or kubelet: the Jobs' pods stay Pending, so every optimization runs for ever):

1. the CRD, a few namespaces and N OptimizedModels (model URI: a file that exists) are created
   before the operator runs; creating them is not timed;
2. baseline: a window with no operator, to measure the control plane's own traffic;
3. busy: ``python -m honed operator --all-namespaces`` is started as its own process, the way a
   user runs it; the harness polls (two LISTs a tick) until every model has its optimizer Job and
   a status (phase and observedGeneration) written;
4. idle: after a settling pause, a window in which nothing changes and the harness is quiet;
5. feedback: every model gets a served winner and endpoint (seeded through the status
   subresource) and ``spec.feedback`` (enabled, a short interval); Prometheus' own counters give
   the queries the operator made per feedback interval.

What is counted, and how (see docs/benchmarks.md):

* ``apiserver_request_total`` from the API server's /metrics, scraped at each window's edges:
  short requests only (WATCH, WATCHLIST and CONNECT are streams, counted by the API server when
  they end); the harness's own requests are counted by the harness and subtracted (its /metrics
  scrapes are not in apiserver_request_total); the baseline's rate is subtracted as the control
  plane's. Where the API server labels requests with ``system_client`` (1.34+), the requests of
  neither kube-controller-manager nor kube-apiserver are reported too.
* The API server's audit log (Metadata level) attributes every request to its client by
  User-Agent: ``honed-operator`` (honed's client) and ``kopf/...`` (kopf's watches, its patches)
  are the operator. Watches are counted as streams opened; lease requests apart.
* The operator's peak RSS is VmHWM from /proc/PID/status; its CPU from /proc/PID/stat.
* ``honed_api_requests_total`` and ``honed_reconciles_total`` from the operator's /metrics
  when it has them.

Writes ``NAME.json`` and ``NAME.md`` to --out after each N (a later N that fails keeps the earlier).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.operator.counting import (
    OPERATOR_CLIENTS,
    AuditWindow,
    Labels,
    audit_windows,
    declares,
    delta,
    group_by,
    parse_audit,
    peak_rate,
    request_counts,
    samples,
    select,
)
from benchmarks.operator.triton_series import SeriesServer, series_per_model

ROOT = Path(__file__).resolve().parents[2]
HARNESS_AGENT = "honed-bench"
GROUP, VERSION, PLURAL = "honed.dev", "v1alpha1", "optimizedmodels"
OM_API = f"/apis/{GROUP}/{VERSION}"
MANAGED_BY = "app.kubernetes.io/managed-by"
POOL = "cpu"
# A pool no served winner names: the reconcile pass of a seeded model then leaves serving alone
# (condition Deployed=False PoolRemoved) instead of writing a repository and a Deployment.
SEEDED_POOL = "bench-served"
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""
BUCKET_S = 10.0  # peak request rates are over this many seconds
# The operator settings the benchmark records (those of later operators too, when they exist).
RECORDED_SETTINGS = (
    "reconcile_interval_s",
    "watch_timeout_s",
    "resync_interval_s",
    "api_qps",
    "api_burst",
    "cluster_scanning",
)


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


class BenchError(Exception):
    """The benchmark cannot go on; the message says why (and the process exits non-zero)."""


@dataclass
class Options:
    models: list[int]
    out: Path
    name: str
    namespaces: int
    baseline_s: float
    settle_s: float
    idle_s: float
    poll_s: float
    reconcile_timeout_s: float
    feedback: bool
    feedback_interval_s: int
    feedback_intervals: int
    feedback_series: bool
    operator_env: dict[str, str]
    keep: bool
    audit: bool
    operator_source: Path


# -- the harness's own API client, counted -------------------------------------------------------


class Api:
    """Raw requests with the kubeconfig's admin credentials; every one is counted as the API
    server's apiserver_request_total names it ("VERB resource"), to be subtracted."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import config

        self.client = config.new_client_from_config(config_file=str(kubeconfig))
        self.client.user_agent = HARNESS_AGENT
        self.client.configuration.connection_pool_maxsize = 16
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(
        self,
        method: str,
        path: str,
        *,
        count: str | None,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
        accept: str = "application/json",
    ) -> Any:
        if count is not None:
            with self._lock:
                self.counts[count] += 1
        headers = {"Accept": accept if not raw else "text/plain"}
        if body is not None:
            headers["Content-Type"] = content_type
        response = self.client.call_api(
            path,
            method,
            query_params=query or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
            _request_timeout=120,
        )
        data = response.data
        return data.decode() if raw else (json.loads(data) if data else None)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def metrics(self) -> str:
        """The API server's /metrics (kube-apiserver v1.36 leaves /metrics out of apiserver_request_total)."""
        return str(self.call("GET", "/metrics", count=None, raw=True))

    def close(self) -> None:
        self.client.close()


def http_text(url: str, timeout_s: float = 10.0, attempts: int = 2) -> str | None:
    """The body at ``url``, or None when it does not answer (twice)."""
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return str(response.read().decode())
        except (OSError, urllib.error.URLError, http.client.HTTPException):
            time.sleep(0.2)
    return None


# -- processes: CPU and memory from /proc ----------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


class Sampler:
    """The operator's RSS every second (VmHWM is the kernel's own peak)."""

    def __init__(self, pid: int, started: float) -> None:
        self.pid = pid
        self.started = started
        self.series: list[tuple[float, int]] = []
        self.hwm_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> dict[str, int]:
        mem = memory_kb(self.pid)
        if mem:
            self.series.append((round(time.time() - self.started, 1), mem.get("VmRSS", 0)))
            self.hwm_kb = max(self.hwm_kb, mem.get("VmHWM", 0))
        return mem

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- a scrape of everything at a window's edge -----------------------------------------------------


@dataclass
class Scrape:
    """Every counter at one window edge. Each source is read at the same moment (in parallel) and
    keeps its own time: a saturated API server or operator answers /metrics seconds late, and a
    source read after it would otherwise be counted over another window."""

    at: float  # when the API server gathered its counters (the middle of its /metrics request)
    requests: dict[Labels, float]
    longrunning: dict[Labels, float]
    harness: Counter[str]
    cpu: dict[str, float | None]
    rss_kb: dict[str, int] = field(default_factory=dict)
    operator_at: float | None = None
    operator_api: dict[Labels, float] | None = None
    operator_reconciles: dict[Labels, float] | None = None
    prometheus_at: float | None = None
    prometheus_queries: float | None = None
    operator_log_offset: int = 0
    read_s: dict[str, float] = field(default_factory=dict)  # how long each /metrics took to answer


def timed(fetch: Callable[[], str | None]) -> tuple[float, float, str | None]:
    """(the middle of the request, how long it took, its answer)."""
    started = time.time()
    text = fetch()
    ended = time.time()
    return (started + ended) / 2, ended - started, text


class Bench:
    """One N: the cluster, the operator, Prometheus; everything stopped by close()."""

    def __init__(self, opts: Options, n: int) -> None:
        self.opts = opts
        self.n = n
        self.work = Path(tempfile.mkdtemp(prefix=f"hbo{n}-", dir="/tmp"))
        self.run_dir = self.work / "k"
        self.audit_log = self.work / "audit.log"
        self.stack = ExitStack()
        self.api: Api | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_log = self.work / "operator.log"
        self.sampler: Sampler | None = None
        self.prometheus: Any = None
        self.series: SeriesServer | None = None
        self.metrics_port = 0
        self.control_plane: dict[str, int] = {}
        self.models: list[tuple[str, str]] = []
        self.uids: dict[str, tuple[str, str]] = {}
        self.operator_env: dict[str, str] = {}
        self.operator_settings: dict[str, Any] = {}
        self.process_env: dict[str, str] = {}

    def say(self, message: str) -> None:
        log(f"[N={self.n}] {message}")

    # -- set-up ----------------------------------------------------------------------------------

    def start_cluster(self) -> float:
        from tests.fixtures.k8s import start_envtest, stop_envtest

        extra = {}
        if self.opts.audit:
            policy = self.work / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            extra["HONED_APISERVER_EXTRA_ARGS"] = " ".join(
                [
                    os.environ.get("HONED_APISERVER_EXTRA_ARGS", ""),
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={self.audit_log}",
                    "--audit-log-format=json",
                    "--audit-log-maxsize=0",
                ]
            ).strip()
        envtest = start_envtest(self.run_dir, extra_env=extra)
        self.stack.callback(stop_envtest, self.run_dir)
        self.kubeconfig = envtest.kubeconfig
        self.api = Api(envtest.kubeconfig)
        self.stack.callback(self.api.close)
        for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
            pid_file = self.run_dir / "pids" / f"{name}.pid"
            if pid_file.is_file():
                self.control_plane[name] = int(pid_file.read_text().strip())
        return envtest.started_s

    def start_prometheus(self) -> None:
        from tests.fixtures.prometheus import PrometheusServer

        # Scrapes nothing until the feedback phase gives it the Triton-shaped series.
        self.prometheus = PrometheusServer(self.work / "prometheus", scrape_interval_s=5.0).start()
        self.stack.callback(self.prometheus.stop)

    def create_models(self) -> float:
        api = self.require_api()
        namespaces = [f"bench-{i}" for i in range(min(self.opts.namespaces, self.n))]
        for ns in namespaces:
            api.call(
                "POST",
                "/api/v1/namespaces",
                count="POST namespaces",
                body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
        # The Job controller needs each namespace's default ServiceAccount to create pods.
        deadline = time.monotonic() + 60
        for ns in namespaces:
            while True:
                listed = api.call("GET", f"/api/v1/namespaces/{ns}/serviceaccounts", count="LIST serviceaccounts")
                if any(sa["metadata"]["name"] == "default" for sa in listed.get("items") or []):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"no default ServiceAccount in {ns} after 60 s")
                time.sleep(0.2)
        model = self.work / "model.onnx"
        model.write_bytes(b"the operator only checks that this file exists; the Job never runs")
        self.models = [(namespaces[i % len(namespaces)], f"m-{i:05d}") for i in range(self.n)]

        def create(key: tuple[str, str]) -> tuple[str, tuple[str, str]]:
            ns, name = key
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "OptimizedModel",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"model": {"uri": f"file://{model}"}, "targets": [{"pool": POOL}]},
            }
            created = api.call("POST", f"{OM_API}/namespaces/{ns}/{PLURAL}", count=f"POST {PLURAL}.{GROUP}", body=body)
            return created["metadata"]["uid"], key

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            self.uids = dict(pool.map(create, self.models))
        return time.monotonic() - started

    def require_api(self) -> Api:
        if self.api is None:
            raise BenchError("the cluster is not started")
        return self.api

    # -- the operator ------------------------------------------------------------------------------

    def prepare_operator(self) -> None:
        """The operator's environment and the settings it will read (before the busy window starts)."""
        from tests.fixtures.prometheus import free_port

        self.metrics_port, health_port = free_port(), free_port()
        source = str(self.opts.operator_source)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            # This checkout's operator (or --operator-source), not whatever the venv has installed.
            "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p),
            "HONED_POOLS": json.dumps([{"name": POOL, "image": "honed/optimizer-cpu:bench", "device": "cpu"}]),
            "HONED_ARTIFACT_STORE": f"file://{self.work}/store",
            "HONED_METRICS_PORT": str(self.metrics_port),
            "HONED_HEALTH_PORT": str(health_port),
            "HONED_LOG_LEVEL": "INFO",
        }
        if self.prometheus is not None:
            env["HONED_PROMETHEUS_URL"] = self.prometheus.url
        env.update(self.opts.operator_env)
        self.operator_env = {k: v for k, v in env.items() if k.startswith("HONED_") and not k.startswith("HONED_K8S")}
        self.operator_settings = effective_settings({**self.operator_env, "PYTHONPATH": env["PYTHONPATH"]})
        self.process_env = env

    def start_operator(self) -> float:
        """``python -m honed operator --all-namespaces``, as a user runs it; returns when it started."""
        command = [sys.executable, "-m", "honed", "operator", "--all-namespaces"]
        started = time.time()
        with self.operator_log.open("wb") as out:
            self.operator = subprocess.Popen(
                command,
                cwd=self.work,
                env=self.process_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.stack.callback(self.stop_operator)
        self.sampler = Sampler(self.operator.pid, started)
        self.stack.callback(self.sampler.close)
        return started

    def stop_operator(self) -> int | None:
        process, self.operator = self.operator, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def check_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is not None:
            raise BenchError(f"the operator exited with {self.operator.returncode}; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.operator_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- scrapes -----------------------------------------------------------------------------------

    def scrape(self) -> Scrape:
        api = self.require_api()
        harness = api.snapshot()  # before the scrape: it is not counted by the API server anyway
        operator = self.operator
        cpu: dict[str, float | None] = {name: cpu_seconds(pid) for name, pid in self.control_plane.items()}
        rss_kb: dict[str, int] = {}
        offset = 0
        if operator is not None:
            cpu["operator"] = cpu_seconds(operator.pid)
            rss_kb = memory_kb(operator.pid)
            with suppress(OSError):
                offset = self.operator_log.stat().st_size
        with ThreadPoolExecutor(3) as pool:
            apiserver = pool.submit(timed, api.metrics)
            # A saturated operator answers its /metrics slowly (one Python process, the GIL).
            own = (
                pool.submit(timed, lambda: http_text(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout_s=60.0))
                if operator is not None
                else None
            )
            prometheus = self.prometheus
            prom = pool.submit(timed, lambda: http_text(f"{prometheus.url}/metrics")) if prometheus else None
            at, took, text = apiserver.result()
        scrape = Scrape(
            at=at,
            requests=samples(text or "", "apiserver_request_total"),
            longrunning=samples(text or "", "apiserver_longrunning_requests"),
            harness=harness,
            cpu=cpu,
            rss_kb=rss_kb,
            operator_log_offset=offset,
            read_s={"apiserver": round(took, 2)},
        )
        if own is not None:
            scrape.operator_at, took, own_text = own.result()
            scrape.read_s["operator"] = round(took, 2)
            if own_text is not None:
                # None: this operator has no such counter; {}: it has, with nothing counted yet.
                for attribute, metric in (
                    ("operator_api", "honed_api_requests_total"),
                    ("operator_reconciles", "honed_reconciles_total"),
                ):
                    if declares(own_text, metric):
                        setattr(scrape, attribute, samples(own_text, metric))
        if prom is not None:
            scrape.prometheus_at, took, prom_text = prom.result()
            scrape.read_s["prometheus"] = round(took, 2)
            if prom_text is not None:
                handled = samples(prom_text, "prometheus_http_requests_total")
                scrape.prometheus_queries = sum(
                    select(handled, handler=("/api/v1/query", "/api/v1/query_range")).values()
                )
        return scrape

    # -- phases ------------------------------------------------------------------------------------

    def wait_reconciled(self, started: float) -> dict[str, Any]:
        """Poll until every model has its Job and a status; the times are from the operator's start."""
        api = self.require_api()
        status_at: dict[str, float] = {}
        job_at: dict[str, float] = {}
        done_at: dict[str, float] = {}
        next_report = 10.0
        selector = f"{MANAGED_BY}=honed"
        while True:
            tick = time.time()
            self.check_operator()
            listed = api.call(
                "GET", f"{OM_API}/{PLURAL}", count=f"LIST {PLURAL}.{GROUP}", query=[("resourceVersion", "0")]
            )
            jobs = api.call(
                "GET",
                "/apis/batch/v1/jobs",
                count="LIST jobs.batch",
                query=[("labelSelector", selector), ("resourceVersion", "0")],
            )
            now = time.time() - started
            for item in listed.get("items") or []:
                uid = item["metadata"]["uid"]
                status = item.get("status") or {}
                if uid in self.uids and status.get("phase") and status.get("observedGeneration") is not None:
                    status_at.setdefault(uid, now)
            for job in jobs.get("items") or []:
                for ref in job["metadata"].get("ownerReferences") or []:
                    if ref.get("uid") in self.uids:
                        job_at.setdefault(ref["uid"], now)
            for uid in self.uids:
                if uid in status_at and uid in job_at:
                    done_at.setdefault(uid, now)
            if now >= next_report or len(done_at) == self.n:
                rss = memory_kb(self.operator.pid).get("VmRSS", 0) / 1024 if self.operator else 0
                self.say(
                    f"  {now:6.1f} s: {len(done_at)}/{self.n} reconciled "
                    f"(Jobs {len(job_at)}, status {len(status_at)}); operator RSS {rss:.0f} MB"
                )
                next_report = now + 10.0
            if len(done_at) == self.n or now > self.opts.reconcile_timeout_s:
                break
            time.sleep(max(0.0, self.opts.poll_s - (time.time() - tick)))
        times = sorted(done_at.values())

        def quantile(q: float) -> float | None:
            return round(times[min(len(times) - 1, math.ceil(q * len(times)) - 1)], 1) if times else None

        return {
            "reconciled": len(done_at),
            "all_s": round(max(times), 1) if len(done_at) == self.n else None,
            "timed_out": len(done_at) < self.n,
            "jobs_all_s": round(max(job_at.values()), 1) if len(job_at) == self.n else None,
            "status_all_s": round(max(status_at.values()), 1) if len(status_at) == self.n else None,
            "first_s": round(times[0], 1) if times else None,
            "p50_s": quantile(0.5),
            "p90_s": quantile(0.9),
            "poll_s": self.opts.poll_s,
        }

    def wait_pods(self, timeout_s: float = 300.0) -> float | None:
        """Seconds until the Job controller has made every Job's pod (None: not within the timeout).

        kube-controller-manager's client is rate-limited (20 requests/s): with 1,000 Jobs it is
        still creating pods, and the operator still seeing them, well after every model is
        reconciled. The idle window waits for that, so that nothing changes in it.
        """
        api = self.require_api()
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self.check_operator()
            pods = api.call(
                "GET",
                "/api/v1/pods",
                count="LIST pods",
                query=[("labelSelector", "batch.kubernetes.io/job-name"), ("resourceVersion", "0")],
                accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )
            if len(pods.get("items") or []) >= self.n:
                return time.monotonic() - started
            time.sleep(2.0)
        return None

    def seed_served(self) -> None:
        """Give every model a served winner and endpoint, then turn its feedback loop on."""
        api = self.require_api()

        def seed(key: tuple[str, str]) -> None:
            ns, name = key
            base = f"{name}-triton.{ns}.svc.cluster.local"
            status = {
                "winner": {
                    "pool": SEEDED_POOL,
                    "name": "onnx-fp32.onnxruntime",
                    "backend": "onnxruntime",
                    "precision": "fp32",
                    "optimization": "bench",
                    "version": 1,
                    "report": "file:///nonexistent/report.json",
                    "artifact": "file:///nonexistent/artifact",
                },
                "endpoint": {
                    "http": f"http://{base}:8000",
                    "grpc": f"{base}:8001",
                    "metrics": f"http://{base}:8002/metrics",
                    "model": name,
                    "version": 1,
                },
            }
            path = f"{OM_API}/namespaces/{ns}/{PLURAL}/{name}"
            merge = "application/merge-patch+json"
            api.call(
                "PATCH",
                f"{path}/status",
                count=f"PATCH {PLURAL}.{GROUP}/status",
                body={"status": status},
                content_type=merge,
            )
            feedback = {"enabled": True, "p99LatencyMs": 1000, "interval": f"{self.opts.feedback_interval_s}s"}
            api.call(
                "PATCH",
                path,
                count=f"PATCH {PLURAL}.{GROUP}",
                body={"spec": {"feedback": feedback}},
                content_type=merge,
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(seed, self.models))

    def serve_series(self) -> None:
        self.series = SeriesServer(self.models)
        self.stack.callback(self.series.close)
        self.prometheus.set_targets([self.series.address])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with suppress(OSError, AssertionError, ValueError):
                result = self.prometheus.query("count(nv_inference_count)")
                if result and float(result[0]["value"][1]) >= self.n:
                    return
            time.sleep(1)
        raise BenchError("Prometheus did not scrape the Triton-shaped series within 60 s")

    def feedback_evaluations(self, start: int, end: int) -> int:
        """'feedback for NS/NAME: ...' lines the operator logged between two offsets."""
        with self.operator_log.open("rb") as handle:
            handle.seek(start)
            chunk = handle.read(max(0, end - start)).decode(errors="replace")
        return len(re.findall(r"feedback for \S+/\S+: ", chunk))

    def close(self) -> int | None:
        code = self.stop_operator()
        self.stack.close()
        return code


# -- one N, start to end -------------------------------------------------------------------------


def window(
    bench: Bench, s0: Scrape, s1: Scrape, baseline_per_min: float | None, audit: AuditWindow | None
) -> dict[str, Any]:
    """One window's figures from its edge scrapes (and the audit log, when there is one)."""
    seconds = s1.at - s0.at
    minutes = seconds / 60
    n = bench.n
    change = delta(s0.requests, s1.requests)
    counts = request_counts(change)
    harness = s1.harness - s0.harness
    harness_total = sum(harness.values())
    per_min = (counts.total - harness_total) / minutes
    out: dict[str, Any] = {
        "start": round(s0.at, 3),
        "seconds": round(seconds, 1),
        "apiserver_request_total": {
            "short_requests": counts.total,
            "harness_requests": harness_total,
            "per_min_all_clients_minus_harness": round(per_min, 1),
            "watches_ended": counts.watches_ended,
            "open_watches_at_end": sum(select(s1.longrunning, verb="WATCH").values()),
        },
    }
    metric = out["apiserver_request_total"]
    if baseline_per_min is not None:
        operator_per_min = per_min - baseline_per_min
        metric["operator_per_min"] = round(operator_per_min, 1)
        metric["operator_per_model_per_min"] = round(operator_per_min / n, 3)
    if counts.has_system_client:
        # Neither kube-controller-manager nor kube-apiserver itself: the operator and the harness.
        others = request_counts(select(change, system_client=""))
        by_verb = Counter(others.by_verb_resource)
        by_verb.subtract(harness)
        metric["non_system_per_min"] = round((others.total - harness_total) / minutes, 1)
        metric["non_system_per_model_per_min"] = round((others.total - harness_total) / minutes / n, 3)
        metric["non_system_by_verb_resource_per_min"] = {
            k: round(v / minutes, 2) for k, v in sorted(by_verb.items(), key=lambda kv: -kv[1]) if v > 0
        }
        metric["control_plane_per_min"] = {
            client: round(value / minutes, 1) for client, value in counts.by_client.items() if client != "other"
        }
    cpu = {}
    for name, after in s1.cpu.items():
        # The operator starts inside the busy window: its counters start at 0 there.
        before = s0.cpu.get(name, 0.0 if name == "operator" else None)
        if before is not None and after is not None:
            cpu[name] = round((after - before) / seconds, 3)
    out["cpu_cores"] = cpu
    out["metrics_read_s_at_end"] = s1.read_s
    if s1.rss_kb:
        out["operator_rss_mb"] = {
            "at_end": round(s1.rss_kb.get("VmRSS", 0) / 1024, 1),
            "peak_so_far": round(s1.rss_kb.get("VmHWM", 0) / 1024, 1),
        }
    if s1.operator_api is not None:
        own = delta(s0.operator_api or {}, s1.operator_api)
        # Over the operator's own read times (its process start, in the busy window).
        own_seconds = (s1.operator_at or s1.at) - (s0.operator_at or s0.at)
        out["honed_api_requests_total"] = {
            "total": sum(own.values()),
            "per_min": round(sum(own.values()) / (own_seconds / 60), 1) if own_seconds > 0 else None,
            "by_verb_resource": {
                f"{verb} {resource}": value
                for (verb, resource), value in sorted(group_by(own, "verb", "resource").items())
            },
        }
    else:
        out["honed_api_requests_total"] = None  # this operator does not count its own requests
    if s1.operator_reconciles is not None:
        passes = delta(s0.operator_reconciles or {}, s1.operator_reconciles)
        out["reconcile_passes"] = {key[0]: value for key, value in group_by(passes, "result").items()}
    if audit is not None:
        out["audit"] = audit_figures(audit, n)
    return out


def audit_figures(audit: AuditWindow, n: int) -> dict[str, Any]:
    minutes = audit.seconds / 60
    operator = sum(audit.requests[c] for c in OPERATOR_CLIENTS)
    return {
        "operator_per_min": round(operator / minutes, 1),
        "operator_per_model_per_min": round(operator / minutes / n, 3),
        "operator_peak_per_s": round(peak_rate(audit.operator_per_bucket, BUCKET_S, audit.seconds), 1),
        "per_min_by_client": {
            c: round(audit.requests.get(c, 0) / minutes, 1)
            for c in sorted({*audit.requests, *OPERATOR_CLIENTS, "kube-controller-manager", "kube-apiserver"})
        },
        "lease_requests_by_client": dict(audit.leases),
        "watches_opened_by_client": dict(audit.watches),
        "operator_watches_opened": dict(audit.operator_watches),
        "operator_by_verb_resource_per_min": {
            k: round(v / minutes, 2) for k, v in sorted(audit.operator_by_verb_resource.items(), key=lambda kv: -kv[1])
        },
        "operator_errors": {str(code): count for code, count in sorted(audit.operator_errors.items())},
    }


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """The operator's settings as the operator itself reads them from ``env`` (its own code: a later
    operator has settings this checkout does not know)."""
    # honed.controller.settings in later operators, honed.settings before.
    code = (
        "import json\ntry:\n    from honed.controller.settings import load_settings\n"
        "except ImportError:\n    from honed.settings import load_settings\ns = load_settings(); "
        f"print(json.dumps({{k: getattr(s, k) for k in {list(RECORDED_SETTINGS)!r} if hasattr(s, k)}}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HONED_")}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120, cwd="/"
    )
    if result.returncode != 0:
        raise BenchError(f"the operator's settings do not load: {result.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def run_one(opts: Options, n: int) -> dict[str, Any]:
    bench = Bench(opts, n)
    result: dict[str, Any] = {"models": n, "namespaces": min(opts.namespaces, n)}
    scrapes: dict[str, Scrape] = {}
    spans: dict[str, tuple[float, float]] = {}
    try:
        started_s = bench.start_cluster()
        bench.say(f"envtest up in {started_s:.1f} s{' (audit log on)' if opts.audit else ''}; CRD installed")
        if opts.feedback:
            bench.start_prometheus()
        result["apply_s"] = round(bench.create_models(), 1)
        bench.say(f"{n} models applied in {result['apply_s']} s across {result['namespaces']} namespaces")

        time.sleep(5)  # the namespace and Job controllers' start-up work settles
        scrapes["baseline0"] = bench.scrape()
        time.sleep(opts.baseline_s)
        scrapes["baseline1"] = bench.scrape()
        baseline = window(bench, scrapes["baseline0"], scrapes["baseline1"], None, None)
        baseline_per_min = baseline["apiserver_request_total"]["per_min_all_clients_minus_harness"]
        bench.say(f"baseline, no operator, {opts.baseline_s:.0f} s: {baseline_per_min} requests/min (control plane)")

        bench.prepare_operator()
        scrapes["busy0"] = bench.scrape()
        started = bench.start_operator()
        result["operator_settings"] = bench.operator_settings
        bench.say(
            f"operator started (pid {bench.operator.pid if bench.operator else '?'}): {result['operator_settings']}"
        )
        result["reconcile"] = bench.wait_reconciled(started)
        scrapes["busy1"] = bench.scrape()
        spans["busy"] = (started, scrapes["busy1"].at)
        rec = result["reconcile"]
        if rec["timed_out"]:
            bench.say(f"only {rec['reconciled']}/{n} reconciled after {opts.reconcile_timeout_s:.0f} s; going on")
        else:
            bench.say(f"all {n} reconciled {rec['all_s']} s after the operator started")

        pods_s = bench.wait_pods()
        result["job_pods_all_s"] = None if pods_s is None else round(time.time() - started, 1)
        if pods_s is None:
            bench.say("the Job controller had not created every pod after 300 s; idle starts anyway")
        elif pods_s > 2:
            bench.say(f"the Job controller created the last pods {pods_s:.0f} s later")
        # kopf starts the per-resource daemons (the periodic passes) after one reconcile interval:
        # the idle window starts after they do, so that it sees the steady state.
        reconcile_interval = float(result["operator_settings"].get("reconcile_interval_s", 30.0))
        settle = max(opts.settle_s, started + reconcile_interval + 5 - time.time())
        bench.say(f"settling {settle:.0f} s, then idle for {opts.idle_s:.0f} s (the harness is quiet)")
        time.sleep(settle)
        scrapes["idle0"] = bench.scrape()
        time.sleep(opts.idle_s)
        scrapes["idle1"] = bench.scrape()
        spans["idle"] = (scrapes["idle0"].at, scrapes["idle1"].at)
        bench.check_operator()

        if opts.feedback:
            if opts.feedback_series:
                bench.serve_series()
            bench.say(
                f"feedback: seeding a served winner on every model, spec.feedback every {opts.feedback_interval_s} s"
            )
            scrapes["feedback_seeding"] = bench.scrape()
            bench.seed_served()
            interval = opts.feedback_interval_s
            # kopf starts each feedback daemon after initial_delay (the reconcile interval).
            warmup = reconcile_interval + interval + 5
            bench.say(f"feedback: {warmup:.0f} s warm-up, then {opts.feedback_intervals} intervals measured")
            time.sleep(warmup)
            scrapes["feedback0"] = bench.scrape()
            time.sleep(opts.feedback_intervals * interval)
            scrapes["feedback1"] = bench.scrape()
            spans["feedback"] = (scrapes["feedback0"].at, scrapes["feedback1"].at)
            bench.check_operator()
        if bench.sampler is not None:
            bench.sampler.sample()
    finally:
        exit_code = bench.close()
        result["operator_exit_code"] = exit_code
        if bench.sampler is not None:
            result["rss_mb"] = {
                "peak": round(bench.sampler.hwm_kb / 1024, 1),
                "series_every_5s": [(t, round(kb / 1024, 1)) for t, kb in bench.sampler.series[::5]],
            }

    spans["baseline"] = (scrapes["baseline0"].at, scrapes["baseline1"].at)
    audits: dict[str, AuditWindow] = {}
    if opts.audit and bench.audit_log.is_file():
        with bench.audit_log.open(errors="replace") as lines:
            audits = audit_windows(parse_audit(lines), spans, bucket_s=BUCKET_S)
        result["audit_log_mb"] = round(bench.audit_log.stat().st_size / 2**20, 1)
    windows = {"baseline": window(bench, scrapes["baseline0"], scrapes["baseline1"], None, audits.get("baseline"))}
    for name in ("busy", "idle", "feedback"):
        if f"{name}0" in scrapes and f"{name}1" in scrapes:
            windows[name] = window(bench, scrapes[f"{name}0"], scrapes[f"{name}1"], baseline_per_min, audits.get(name))
    # The busy window starts at the operator's start, not at the scrape just before it.
    windows["busy"]["start"] = round(spans["busy"][0], 3)
    result["windows"] = windows
    rss = result.setdefault("rss_mb", {})
    for name in ("busy", "idle", "feedback"):
        end = scrapes.get(f"{name}1")
        if end is not None and end.rss_kb:
            rss[f"end_of_{name}"] = round(end.rss_kb.get("VmRSS", 0) / 1024, 1)
            rss[f"peak_by_end_of_{name}"] = round(end.rss_kb.get("VmHWM", 0) / 1024, 1)
    first = audits["busy"].first_operator_at if "busy" in audits else None
    if first is not None:
        # Start-up: Python, kopf and the login, until the operator's first request reached the API server.
        result["reconcile"]["first_request_s"] = round(first - spans["busy"][0], 1)
    if "feedback0" in scrapes and "feedback1" in scrapes:
        f0, f1 = scrapes["feedback0"], scrapes["feedback1"]
        # Prometheus' counter over Prometheus' own read times.
        intervals = ((f1.prometheus_at or f1.at) - (f0.prometheus_at or f0.at)) / opts.feedback_interval_s
        queries = (
            (f1.prometheus_queries or 0) - (f0.prometheus_queries or 0) if f0.prometheus_queries is not None else None
        )
        evaluations = bench.feedback_evaluations(f0.operator_log_offset, f1.operator_log_offset)
        result["prometheus"] = {
            "interval_s": opts.feedback_interval_s,
            "intervals_measured": round(intervals, 2),
            "series_per_model": series_per_model() if opts.feedback_series else 0,
            "queries": queries,
            "queries_per_interval": round(queries / intervals, 1) if queries is not None else None,
            "evaluations": evaluations,
            "evaluations_per_interval": round(evaluations / intervals, 1),
            "queries_per_evaluation": round(queries / evaluations, 1) if queries is not None and evaluations else None,
            # Below N evaluations per interval the loop is behind: the queries are then what the
            # machine could answer, not what N models ask for.
            # (0.7: a loop that evaluates every model in one round per interval shows 3 rounds in 4
            # intervals when the window's edges fall between rounds.)
            "keeps_up": evaluations / intervals >= 0.7 * n,
        }
        seeding = scrapes.get("feedback_seeding")
        if seeding is not None and seeding.prometheus_queries is not None and f1.prometheus_queries is not None:
            # From the seeding to the end: an evaluation queries Prometheus first and logs last (after
            # the resource's lock and two API requests), so when the loop is behind, its queries and
            # its log line fall into different windows; over the whole phase they pair up.
            total_queries = f1.prometheus_queries - seeding.prometheus_queries
            total_evaluations = bench.feedback_evaluations(seeding.operator_log_offset, f1.operator_log_offset)
            result["prometheus"]["since_seeding"] = {
                "seconds": round((f1.prometheus_at or f1.at) - (seeding.prometheus_at or seeding.at), 1),
                "queries": total_queries,
                "evaluations": total_evaluations,
                "queries_per_evaluation": round(total_queries / total_evaluations, 2) if total_evaluations else None,
            }
            if total_evaluations:
                result["prometheus"]["queries_per_interval_all_models"] = round(
                    total_queries / total_evaluations * n, 1
                )
    if not opts.keep:
        shutil.rmtree(bench.work, ignore_errors=True)
    else:
        result["work_dir"] = str(bench.work)
    return result


# -- output ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    prometheus = ""
    binary = shutil.which("prometheus")
    if binary:
        with suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
            prometheus = (version.stdout or version.stderr).splitlines()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "prometheus": prometheus,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with suppress(Exception):
        import kopf

        out["kopf"] = getattr(kopf, "__version__", None) or _dist_version("kopf")
    out["kubernetes_client"] = _dist_version("kubernetes")
    bin_dir = Path(os.environ.get("HONED_K8S_BIN") or os.environ.get("KUBEBUILDER_ASSETS") or "/opt/k8s/bin")
    with suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            [str(bin_dir / "kube-apiserver"), "--version"], capture_output=True, text=True, timeout=20
        ).stdout
        out["kube_apiserver"] = text.strip()
    return out


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def checkout(source: Path) -> dict[str, Any]:
    """What was measured: the operator source's git commit (the last that changed it), when it has one."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "operator_source": str(source),
        "commit": git("rev-parse", "HEAD").strip(),
        # The operator measured: the last commit that changed its directory.
        "operator_commit": git("log", "-1", "--format=%H", "--", ".").strip(),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
        "operator_code_dirty": bool(git("status", "--porcelain", "--", ".").strip()),
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]
    m = report["machine"]
    o = report["options"]
    lines = [
        f"# Operator benchmark: {report['name']}",
        "",
        f"`{report['command']}`",
        "",
        f"Operator: {_source(report['checkout'])}; "
        f"{report['versions'].get('kube_apiserver', 'kube-apiserver ?')} (envtest: etcd + kube-apiserver + "
        f"kube-controller-manager, no scheduler or kubelet); kopf {report['versions'].get('kopf')}; {m['prometheus']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores shared with other jobs, {m['memory_gib']} GiB; load average "
        f"{m['load_average_start']} at start, {m.get('load_average_end')} at end.",
        f"Windows: baseline {o['baseline_s']:.0f} s without the operator; busy = operator start to every model "
        f"reconciled (polled every {o['poll_s']:g} s); idle {o['idle_s']:.0f} s, from {o['settle_s']:.0f} s "
        f"after every Job's pod exists; feedback {o['feedback_intervals']} intervals of {o['feedback_interval_s']} s.",
        "",
        "| models | all reconciled (s) | p50 / p90 (s) | peak RSS (MB) | busy req/min | busy req/min, audit "
        "| busy peak req/s, audit | idle req/min | idle req/model/min | idle req/model/min, audit "
        "| Prometheus queries / interval | … for all N | feedback evaluations / interval |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['models']} | failed: {r['error']} |" + "|" * 11)
            continue
        rec = r.get("reconcile", {})
        busy = r.get("windows", {}).get("busy", {})
        idle = r.get("windows", {}).get("idle", {})
        busy_audit, idle_audit = busy.get("audit") or {}, idle.get("audit") or {}
        prom = r.get("prometheus") or {}
        all_s = fmt(rec.get("all_s"))
        if rec.get("timed_out"):
            all_s = f"> {o['reconcile_timeout_s']:.0f} ({rec.get('reconciled')} done)"
        lines.append(
            f"| {r['models']:,} | {all_s} | {fmt(rec.get('p50_s'))} / {fmt(rec.get('p90_s'))} "
            f"| {fmt(r.get('rss_mb', {}).get('peak'))} "
            f"| {fmt(_operator_rate(busy))} | {fmt(busy_audit.get('operator_per_min'))} "
            f"| {fmt(busy_audit.get('operator_peak_per_s'))} "
            f"| {fmt(_operator_rate(idle))} | {fmt(_operator_rate(idle, per_model=True), 3)} "
            f"| {fmt(idle_audit.get('operator_per_model_per_min'), 3)} "
            f"| {fmt(prom.get('queries_per_interval'))} | {fmt(prom.get('queries_per_interval_all_models'))} "
            f"| {_evaluations(prom, r['models'])} |"
        )
    lines += [
        "",
        "Requests are short requests (watches and leases apart). *req/min*: the API server's "
        "`apiserver_request_total` delta over the window for clients other than kube-controller-manager and "
        "kube-apiserver itself (its `system_client` label), less the harness's own requests; where the API "
        "server has no such label, every request less the harness's and less the baseline rate measured without "
        "the operator (both are in the table below). *audit*: the requests the audit log attributes to the "
        "operator's own clients (User-Agent `honed-operator` and `kopf/*`); peak over 10 s. *Prometheus queries "
        "/ interval*: measured in the window; *for all N*: queries per evaluation since the feedback was turned "
        "on, times N (what one interval costs when every model is evaluated, whatever the window's alignment).",
        "",
        "## Targets",
        "",
        "| target | " + " | ".join(f"{r['models']:,} models" for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    lines += _targets(runs)
    lines += ["", "## Every figure per window", ""]
    header = "| window | " + " | ".join(f"{r['models']:,} models" for r in runs) + " |"
    lines += [header, "|---|" + "---:|" * len(runs)]
    rows: list[tuple[str, Callable[[dict[str, Any]], Any], int]] = [
        ("window length (s)", lambda w: w["seconds"], 1),
        ("apiserver_request_total, all clients less harness (req/min)", lambda w: _metric(w, "per_min_all"), 1),
        ("… less the baseline = operator (req/min)", lambda w: _metric(w, "operator_per_min"), 1),
        (
            '… of clients with system_client="" (not kcm, not kube-apiserver), less harness (req/min)',
            lambda w: _metric(w, "non_system_per_min"),
            1,
        ),
        ("audit: operator's clients (req/min)", lambda w: _audit(w)["operator_per_min"], 1),
        (
            "audit: kube-controller-manager (req/min)",
            lambda w: _audit(w)["per_min_by_client"]["kube-controller-manager"],
            1,
        ),
        ("audit: watch streams the operator opened", lambda w: sum(_audit(w)["operator_watches_opened"].values()), 0),
        ("audit: lease requests of the operator", lambda w: _operator_leases(_audit(w)), 0),
        ("watches open at the end (all clients)", lambda w: _metric(w, "open_watches_at_end"), 0),
        ("honed_api_requests_total (req/min)", lambda w: w["honed_api_requests_total"]["per_min"], 1),
        ("reconcile passes", lambda w: sum(w["reconcile_passes"].values()), 0),
        ("operator RSS at the end (MB)", lambda w: w["operator_rss_mb"]["at_end"], 1),
        ("operator peak RSS so far, VmHWM (MB)", lambda w: w["operator_rss_mb"]["peak_so_far"], 1),
        ("operator CPU (cores)", lambda w: w["cpu_cores"]["operator"], 2),
        ("kube-apiserver CPU (cores)", lambda w: w["cpu_cores"]["kube-apiserver"], 2),
        ("etcd CPU (cores)", lambda w: w["cpu_cores"]["etcd"], 2),
    ]
    for window_name in ("baseline", "busy", "idle", "feedback"):
        if not any(window_name in r.get("windows", {}) for r in runs):
            continue
        lines.append(f"| **{window_name}** |" + " |" * len(runs))
        for label, get, digits in rows:
            cells = []
            for r in runs:
                value = None
                with suppress(KeyError, TypeError, AttributeError):
                    value = get(r["windows"][window_name])
                cells.append(fmt(float(value) if isinstance(value, int | float) else value, digits))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Idle traffic by verb and resource (operator's clients, audit log; requests per minute)", ""]
    keys: list[str] = []
    for r in runs:
        by = ((r.get("windows", {}).get("idle") or {}).get("audit") or {}).get(
            "operator_by_verb_resource_per_min"
        ) or {}
        keys += [k for k in by if k not in keys]
    if keys:
        lines += [header.replace("window", "verb resource"), "|---|" + "---:|" * len(runs)]
        for key in keys:
            cells = [
                fmt(
                    ((r.get("windows", {}).get("idle") or {}).get("audit") or {})
                    .get("operator_by_verb_resource_per_min", {})
                    .get(key),
                    2,
                )
                for r in runs
            ]
            lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    else:
        lines.append("(no audit log, or no operator requests while idle)")
    lines.append("")
    return "\n".join(lines)


def _source(checkout: dict[str, Any]) -> str:
    source = checkout.get("operator_source") or str(ROOT / "operator")
    name = "operator/" if source == str(ROOT / "operator") else f"`{source}`"
    if not checkout.get("commit"):
        return f"{name} (not in git)"
    dirty = ", with uncommitted changes" if checkout.get("operator_code_dirty") else ""
    return (
        f"{name} as of {checkout.get('operator_commit', '')[:12]} "
        f"(checkout {checkout.get('branch')} @ {checkout['commit'][:12]}{dirty})"
    )


def _evaluations(prom: dict[str, Any], n: int) -> str:
    if not prom:
        return "–"
    behind = "" if prom.get("keeps_up", True) else " (behind)"
    return f"{fmt(prom.get('evaluations_per_interval'))} of {n:,}{behind}"


def _metric(w: dict[str, Any], key: str) -> Any:
    metric = w["apiserver_request_total"]
    return metric["per_min_all_clients_minus_harness"] if key == "per_min_all" else metric[key]


def _audit(w: dict[str, Any]) -> dict[str, Any]:
    audit = w["audit"]
    if audit is None:
        raise KeyError("audit")
    return dict(audit)


def _operator_leases(audit: dict[str, Any]) -> int:
    return sum(v for k, v in audit["lease_requests_by_client"].items() if k in OPERATOR_CLIENTS)


def _operator_rate(w: dict[str, Any], *, per_model: bool = False) -> float | None:
    """The operator's requests per minute from apiserver_request_total: the requests of clients other
    than kube-controller-manager and kube-apiserver (label system_client, 1.34+) less the harness's;
    on older API servers, every request less the harness's and less the baseline."""
    metric = w.get("apiserver_request_total") or {}
    if "non_system_per_min" in metric:
        return metric.get("non_system_per_model_per_min" if per_model else "non_system_per_min")
    return metric.get("operator_per_model_per_min" if per_model else "operator_per_min")


def _targets(runs: list[dict[str, Any]]) -> list[str]:
    def cell(ok: bool | None, text: str) -> str:
        return text if ok is None else f"{text} {'✓' if ok else '✗'}"

    rows = []
    idle = []
    for r in runs:
        value = _operator_rate(r.get("windows", {}).get("idle") or {}, per_model=True)
        idle.append(cell(None if value is None else value <= 0.1, fmt(value, 3)))
    rows.append("| idle ≤ 0.1 requests per model per minute (beyond watches and leases) | " + " | ".join(idle) + " |")
    reconcile = []
    for r in runs:
        rec = r.get("reconcile") or {}
        all_s = rec.get("all_s")
        ok = None if r["models"] != 1000 else (all_s is not None and all_s <= 60)
        reconcile.append(cell(ok, "not all" if rec.get("timed_out") else f"{fmt(all_s)} s"))
    rows.append("| 1,000 models reconciled ≤ 60 s on 2 cores | " + " | ".join(reconcile) + " |")
    rss = []
    for r in runs:
        peak = (r.get("rss_mb") or {}).get("peak")
        rss.append(cell(None if peak is None else peak <= 300, f"{fmt(peak)} MB"))
    rows.append("| operator peak RSS ≤ 300 MB | " + " | ".join(rss) + " |")
    qps = []
    for r in runs:
        settings = r.get("operator_settings") or {}
        limit, burst = settings.get("api_qps"), settings.get("api_burst")
        busy = r.get("windows", {}).get("busy") or {}
        audit = busy.get("audit") or {}
        peak = audit.get("operator_peak_per_s")
        # The operator's own requests (audit) when known; else all of the window less the baseline.
        mean = audit.get("operator_per_min", _operator_rate(busy))
        text = f"mean {fmt(None if mean is None else mean / 60)}/s, peak {fmt(peak)}/s over {BUCKET_S:.0f} s"
        if limit is None:
            qps.append(f"{text}; no QPS setting")
            continue
        # A token bucket allows QPS on average and, in any window, QPS x window + burst: the peak
        # window's bound. 5% for requests counted at the window's edges.
        bound = float(limit) + float(burst or 0) / BUCKET_S
        ok = mean is not None and peak is not None and mean / 60 <= float(limit) * 1.05 and peak <= bound * 1.05
        qps.append(cell(ok, f"{text} vs QPS {limit} (at most {fmt(bound)}/s over {BUCKET_S:.0f} s with burst {burst})"))
    rows.append("| busy request rate within the configured QPS and burst | " + " | ".join(qps) + " |")
    prom = []
    for r in runs:
        p = r.get("prometheus") or {}
        since = p.get("since_seeding") or {}
        behind = "" if p.get("keeps_up", True) else "; the loop is behind"
        prom.append(
            f"{fmt(p.get('queries_per_interval'))} measured, {fmt(p.get('queries_per_interval_all_models'))} for all "
            f"{r['models']:,} ({fmt(since.get('queries_per_evaluation'), 2)} per evaluation){behind}"
        )
    rows.append("| Prometheus queries per interval independent of N | " + " | ".join(prom) + " |")
    return rows


def write(report: dict[str, Any], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", type=int, default=[50, 200, 1000], help="N values (default 50 200 1000)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "operator", help="where NAME.json/.md go")
    parser.add_argument("--name", default="results", help="file name stem (default results)")
    parser.add_argument("--namespaces", type=int, default=5, help="namespaces the models are spread over (5)")
    parser.add_argument("--baseline", type=float, default=30.0, help="seconds without the operator (30)")
    parser.add_argument("--settle", type=float, default=60.0, help="pause before the idle window (60 s)")
    parser.add_argument("--idle", type=float, default=180.0, help="idle window seconds (180)")
    parser.add_argument("--poll", type=float, default=1.0, help="harness poll period while busy, seconds (1)")
    parser.add_argument("--reconcile-timeout", type=float, default=600.0, help="give up waiting after (600 s)")
    parser.add_argument("--no-feedback", action="store_true", help="skip the Prometheus / feedback phase")
    parser.add_argument("--feedback-interval", type=int, default=15, help="spec.feedback.interval, seconds (15)")
    parser.add_argument("--feedback-intervals", type=int, default=4, help="intervals measured (4)")
    parser.add_argument(
        "--no-feedback-series", action="store_true", help="no Triton-shaped series: each evaluation stops early"
    )
    parser.add_argument("--no-audit", action="store_true", help="no API server audit log (no per-client split)")
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="HONED_X=VALUE",
        help="extra operator setting, repeatable (HONED_API_QPS=20, HONED_RESYNC_INTERVAL_S=600, ...)",
    )
    parser.add_argument("--keep", action="store_true", help="keep each N's work directory (logs, audit log)")
    parser.add_argument(
        "--operator-source",
        type=Path,
        default=ROOT / "operator",
        help="directory holding the honed package to run (default: this checkout's operator/; another "
        "worktree's operator/ measures another version with the same harness)",
    )
    args = parser.parse_args(argv)
    operator_env = {}
    for item in args.operator_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("HONED_"):
            parser.error(f"--operator-env takes HONED_NAME=VALUE, got {item!r}")
        operator_env[key] = value
    # Settings of later operators given in the environment are passed on and recorded too.
    for key in ("HONED_API_QPS", "HONED_API_BURST", "HONED_RESYNC_INTERVAL_S", "HONED_RECONCILE_INTERVAL_S"):
        if key in os.environ and key not in operator_env:
            operator_env[key] = os.environ[key]
    if any(n < 1 for n in args.models):
        parser.error("--models takes positive numbers")
    return Options(
        models=args.models,
        out=args.out,
        name=args.name,
        namespaces=max(1, args.namespaces),
        baseline_s=args.baseline,
        settle_s=args.settle,
        idle_s=args.idle,
        poll_s=args.poll,
        reconcile_timeout_s=args.reconcile_timeout,
        feedback=not args.no_feedback,
        feedback_interval_s=args.feedback_interval,
        feedback_intervals=args.feedback_intervals,
        feedback_series=not args.no_feedback_series,
        operator_env=operator_env,
        keep=args.keep,
        audit=not args.no_audit,
        operator_source=args.operator_source.resolve(),
    )


def preflight(opts: Options) -> str | None:
    from tests.fixtures.kit import ENVTEST_BINARIES, missing
    from tests.fixtures.prometheus import INSTALL_HINT, prometheus_binary

    why = missing(ENVTEST_BINARIES, root=False)
    if why:
        return why
    if not (opts.operator_source / "honed" / "__init__.py").is_file():
        return f"no honed package in --operator-source {opts.operator_source}"
    if opts.feedback and prometheus_binary() is None:
        return f"no prometheus binary for the feedback phase: {INSTALL_HINT}, or pass --no-feedback"
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a SIGTERM stops everything started, as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    why = preflight(opts)
    if why:
        print(f"bench-operator: {why}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.operator.run " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "name": opts.name,
        "command": command.strip(),
        "machine": machine(),
        "versions": versions(),
        "checkout": checkout(opts.operator_source),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "runs": [],
    }
    failed = False
    for n in opts.models:
        log(f"[N={n}] start")
        started = time.monotonic()
        try:
            result = run_one(opts, n)
        except BenchError as exc:
            print(f"bench-operator: N={n}: {exc}", file=sys.stderr)
            result, failed = {"models": n, "error": str(exc).splitlines()[0]}, True
        except KeyboardInterrupt:
            print("bench-operator: interrupted; everything it started is stopped", file=sys.stderr)
            return 130
        except Exception as exc:  # a bug or the kit failing: the traceback helps, the next N may still run
            traceback.print_exc()
            print(f"bench-operator: N={n} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            result, failed = {"models": n, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}, True
        result["wall_s"] = round(time.monotonic() - started, 1)
        report["runs"].append(result)
        report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        write(report, opts.out, opts.name)
        log(f"[N={n}] done in {result['wall_s']:.0f} s; wrote {opts.out / opts.name}.json and .md")
    print((opts.out / f"{opts.name}.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
