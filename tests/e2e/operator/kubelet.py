"""A kubelet for envtest (real API server and controllers, no node): it runs what the operator asks for, here.

- A Job's pod (created by the real Job controller): its container command runs as a local process,
  the real ``honed optimize``; the request ConfigMap is materialised where the pod would mount it;
  the termination message is what the container wrote to its termination log (else the log tail,
  as FallbackToLogsOnError does). The pod's status then says how it ended, and the Job controller
  completes or fails the Job (or starts another pod, which runs again).
- A Deployment: a real local Triton starts on the model repository its arguments name, loads
  the model with explicit control, and once the model is ready the Deployment's pods are made
  ready, so its controllers count the replicas ready. A changed Deployment replaces the server,
  as a rollout replaces pods.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honed.controller import names
from honed.controller.jobs import REQUEST_KEY, REQUEST_PATH, TERMINATION_LOG
from honed.controller.kube import CONFIGMAPS, DEPLOYMENTS, JOBS, PODS, KubeClient
from honed.serving.server import TritonServer
from tests.integration.operator.harness import roll_out, terminate_pod


def flag(args: list[str], name: str) -> str | None:
    prefix = f"--{name}="
    return next((a[len(prefix) :] for a in args if a.startswith(prefix)), None)


@dataclass
class Kubelet:
    api: KubeClient
    namespace: str
    work: Path
    start_triton: Any  # tests.fixtures.triton.StartTriton
    handled: set[str] = field(default_factory=set)
    server: TritonServer | None = None
    serving: str | None = None  # version/serving-config of the Deployment template the server runs
    job_logs: dict[str, Path] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(0.2)

    async def step(self) -> None:
        for job in await self.api.list(JOBS, self.namespace, {names.MANAGED_BY: "honed"}):
            for pod in await self.api.list(PODS, self.namespace, {"job-name": job["metadata"]["name"]}):
                if pod["metadata"]["uid"] not in self.handled and pod.get("status", {}).get("phase") == "Pending":
                    self.handled.add(pod["metadata"]["uid"])
                    await self.run_pod(job, pod)
        for deployment in await self.api.list(DEPLOYMENTS, self.namespace, {names.MANAGED_BY: "honed"}):
            # What a rollout changes: the served version and its serving config (pod annotations).
            template = deployment["spec"]["template"]["metadata"]["annotations"]
            applied = f"{template[names.MODEL_VERSION]}/{template[names.SERVING_CONFIG]}"
            if applied != self.serving:
                await self.serve(deployment)
                self.serving = applied

    async def run_pod(self, job: dict[str, Any], manifest: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        pod = self.work / manifest["metadata"]["name"]
        pod.mkdir(parents=True)
        configmap = await self.api.get(CONFIGMAPS, self.namespace, name)
        assert configmap is not None, f"Job {name} has no request ConfigMap"
        request = pod / REQUEST_KEY
        request.write_text(configmap["data"][REQUEST_KEY])
        termination_log = pod / "termination-log"
        container = manifest["spec"]["containers"][0]
        command = [str(request) if part == REQUEST_PATH else part for part in container["command"]]
        assert command[0] == "honed"
        command = [sys.executable, "-m", "honed.cli", *command[1:]]
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}}
        env["HONED_TERMINATION_LOG"] = str(termination_log)
        log = pod / "log.txt"
        self.job_logs[name] = log
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=pod
            )
            code = await process.wait()
        message = termination_log.read_text().strip() if termination_log.is_file() else ""
        if not message and code != 0:
            message = "\n".join(log.read_text(errors="replace").strip().splitlines()[-20:])
        assert container["terminationMessagePath"] == TERMINATION_LOG
        await terminate_pod(self.api, manifest, exit_code=code, message=message)

    async def serve(self, deployment: dict[str, Any]) -> None:
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        repository, model = flag(args, "model-repository"), flag(args, "load-model")
        assert repository and model, args
        version = deployment["spec"]["template"]["metadata"]["annotations"][names.MODEL_VERSION]
        cache = flag(args, "cache-config")
        options: dict[str, Any] = {}
        if cache is not None:
            options["cache_bytes"] = int(cache.split("size=", 1)[1])
        old, self.server = self.server, None
        if old is not None:
            await asyncio.to_thread(old.stop)
        server = await asyncio.to_thread(self.start_triton, Path(repository), **options)
        await asyncio.to_thread(server.load_model, model)
        assert server.is_model_ready(model, version), f"Triton did not load {model} version {version}"
        self.server = server
        await roll_out(self.api, self.namespace, deployment["metadata"]["name"])
