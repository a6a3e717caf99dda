"""PyTorch on CPU: eager (the baseline for PyTorch sources), bf16 autocast, torch.compile.

Eager candidates run the user's own module (factory or TorchScript file); compile candidates
run the exported program (``.pt2``) through torch.compile, which is what gets deployed.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from honed.optimizer.artifact import ArtifactMeta
from honed.optimizer.backends.base import (
    BuildContext,
    CandidatePlan,
    PlanOrSkip,
    SearchContext,
    device_plans,
    missing_import,
)
from honed.optimizer.machine import default_threads
from honed.optimizer.report import Skipped

NAME = "torch"
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def availability() -> str | None:
    """None when torch imports, else why not and the fix."""
    return missing_import("torch", "pip install 'honed[torch]'")


@device_plans("cpu")
def plans(ctx: SearchContext) -> list[PlanOrSkip]:
    """PyTorch and TorchScript sources only: bf16 eager, torch.compile or a frozen TorchScript.

    bf16 needs a CPU with native bf16; torch.compile (fp32, bf16) runs the exported program of a
    PyTorch source. int8 is skipped: OpenVINO and ONNX Runtime serve it better on CPUs.
    """
    if ctx.source_format == "onnx":
        return []
    out: list[PlanOrSkip] = []
    src = "torch" if ctx.source_format == "pytorch" else "torchscript"
    bf16 = bool(BF16_FLAGS & ctx.cpu_flags)
    if "bf16" in ctx.precisions:
        if bf16:
            out.append(CandidatePlan(NAME, "bf16", source=src, variant="eager"))
        else:
            out.append(Skipped(name=f"{src}-bf16.eager", reason="this CPU has neither AVX512_BF16 nor AMX"))
    if ctx.source_format == "pytorch":
        if not ctx.has_torch_program:
            out.append(Skipped(name="torch-fp32.compile", reason="torch.export could not capture the model"))
        else:
            if "fp32" in ctx.precisions:
                out.append(CandidatePlan(NAME, "fp32", source="torch", variant="compile"))
            if "bf16" in ctx.precisions and bf16:
                out.append(CandidatePlan(NAME, "bf16", source="torch", variant="compile"))
    elif "fp32" in ctx.precisions:
        out.append(CandidatePlan(NAME, "fp32", source="torchscript", variant="freeze"))
    if "int8" in ctx.precisions:
        out.append(Skipped(name=f"{src}-int8.{NAME}", reason="int8 on CPU is served better by OpenVINO and ORT"))
    return out


def build(plan: CandidatePlan, ctx: BuildContext, out_dir: Path) -> ArtifactMeta:
    """Write the artifact into ``out_dir`` and run it once, so compiling counts in the build time and fails here.

    The artifact holds the program file, or for the user's own module the factory that makes it.
    """
    options: dict[str, Any] = {"autocast": "bf16" if plan.precision == "bf16" else None}
    if plan.variant == "eager" and plan.source == "torch":
        # The user's module itself: re-created from its factory wherever this artifact is loaded.
        options["factory"] = plan.options["factory"]
        options["sys_path"] = plan.options.get("sys_path", [])
        model_file = ""
    else:
        assert ctx.torch_path is not None
        model_file = "model.pt2" if plan.source == "torch" else "model.ts"
        shutil.copyfile(ctx.torch_path, out_dir / model_file)
    if ctx.torch_call and model_file != "model.pt2":
        # The user's own module (not the flat exported program): called as at export, outputs named alike.
        options["call"] = ctx.torch_call
    meta = ArtifactMeta(
        backend=NAME,
        precision=plan.precision,
        variant=plan.variant,
        model_file=model_file,
        options=options,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
    )
    runner = TorchRunner(meta, out_dir, ctx.threads)
    # Compile (or freeze) now so the build time includes it and errors surface here, not at serving.
    from honed.optimizer.torch_export import example_feeds

    runner.run(example_feeds(ctx.inputs, batch=1))
    return meta


class TorchRunner:
    """A PyTorch model on the CPU, eager or compiled, with bf16 autocast where planned.

    It runs the user's module, a TorchScript file or the exported program.
    """

    def __init__(self, meta: ArtifactMeta, directory: Path, threads: int | None) -> None:
        """Load the model; ``threads`` (None: the CPUs this process may use) applies to the whole process."""
        import torch

        # torch's default is one thread per host core, blind to the container's CPU quota.
        torch.set_num_threads(threads or default_threads())
        self.torch = torch
        from honed.optimizer.torch_call import Convention

        self.meta = meta
        self.input_names = [spec.name for spec in meta.inputs]
        self.output_names = [spec.name for spec in meta.outputs]
        self.module = self._load(meta, directory)
        # An exported program already returns the flat tuple of outputs in order; anything else
        # returns what the model returns, flattened and matched to the artifact's outputs by name.
        self.convention = Convention.from_options(meta.options["call"]) if meta.options.get("call") else None
        self.autocast = meta.options.get("autocast") == "bf16"

    def settings(self) -> dict[str, Any]:
        """How this runs, for the report: for the baseline, what every CPU speedup is against."""
        torch, meta = self.torch, self.meta
        if meta.options.get("factory"):
            module = f"as given ({meta.options['factory']}), eval mode"
        elif meta.model_file.endswith(".ts"):
            module = "the TorchScript file as given" if meta.variant != "freeze" else "the TorchScript file, frozen"
        else:
            module = "the exported program"
        return {
            "module": module,
            "mode": {"compile": "torch.compile", "freeze": "torch.jit.freeze"}.get(meta.variant, "eager"),
            "precision": "bf16 autocast" if self.autocast else "fp32",
            "grad": "torch.inference_mode",
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }

    def _load(self, meta: ArtifactMeta, directory: Path) -> Any:
        torch = self.torch
        if meta.options.get("factory"):
            from honed.optimizer.sources import load_factory

            for entry in meta.options.get("sys_path", []):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
            return load_factory(meta.options["factory"])
        path = directory / meta.model_file
        if meta.model_file.endswith(".ts"):
            module = torch.jit.load(str(path), map_location="cpu").eval()
            if meta.variant == "freeze":
                module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
            return module
        module = torch.export.load(str(path)).module()
        return torch.compile(module, dynamic=False) if meta.variant == "compile" else module

    def _context(self) -> AbstractContextManager[Any]:
        if self.autocast:
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return nullcontext()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the artifact's output order (bf16 ones as float32).

        ValueError or InputError when the model's outputs no longer match the artifact's.
        """
        from honed.optimizer.torch_call import flatten

        args = [self.torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in self.input_names]
        with self.torch.inference_mode(), self._context():
            if self.convention is None:
                result = [tensor for _, tensor in flatten(self.module(*args))]
                if len(result) != len(self.output_names):
                    raise ValueError(f"the program gives {len(result)} outputs, the artifact has {self.output_names}")
            else:
                result = self._by_name(flatten(self.convention(self.module, args)))
        return [r.float().numpy() if r.dtype == self.torch.bfloat16 else r.numpy() for r in result]

    def _by_name(self, named: list[tuple[str, Any]]) -> list[Any]:
        outputs = dict(named)
        if sorted(outputs) != sorted(self.output_names):
            from honed.errors import InputError

            raise InputError(
                f"the model now returns outputs {list(outputs)}, the artifact was built for {self.output_names}",
                hint="the factory must return the same model each time it is called; rebuild with honed optimize",
            )
        return [outputs[name] for name in self.output_names]


def load(meta: ArtifactMeta, directory: Path, threads: int | None) -> TorchRunner:
    """Load an artifact this backend built."""
    return TorchRunner(meta, directory, threads)
