"""What the search tries: the model and data checked against each other, the baseline and the candidate plans."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.errors import InputError
from honed.optimizer import data as datamod
from honed.optimizer.backends import BACKEND_MODULES, GPU_BACKEND_MODULES, backend_module
from honed.optimizer.backends.base import AS_GIVEN, Backend, CandidatePlan, SearchContext
from honed.optimizer.machine import cpu_flags
from honed.optimizer.options import OptimizeOptions
from honed.optimizer.progress import Progress
from honed.optimizer.report import Skipped
from honed.optimizer.sources import SourceModel, load_source
from honed.optimizer.validate import PaddingMask, check_metric, default_metric, padding_mask


@dataclass
class Prepared:
    """The model and data checked against each other, and what the search takes from them: metric, batch sizes."""

    source: SourceModel
    dataset: datamod.Dataset
    data_path: Path
    metric: str
    batch_sizes: list[int]
    attention: bool
    notes: list[str]
    matmul_heavy: bool = False
    mask: PaddingMask | None = None


def prepare(options: OptimizeOptions, work: Path, progress: Progress) -> Prepared:
    """Load the model and the data and check they fit each other; every problem is an InputError."""
    data = Path(options.data) if options.data else None
    arrays = datamod.read_npz(data) if data else None
    progress.step(f"loading model {options.model}")
    source = load_source(options.model, work, options.inputs, datamod.npz_shapes(arrays) if arrays else None)
    notes = list(source.notes)
    for note in source.notes:
        progress.warn(note)
    fixed = source.fixed_batch
    if arrays is not None and data is not None:
        dataset = datamod.check_arrays(arrays, source.inputs, data, fixed)
    else:
        from honed.optimizer.onnx_graph import integer_input_bounds

        bounds = integer_input_bounds(source.onnx_path) if source.onnx_path else {}
        dataset = datamod.synthesize(source.inputs, options.synthetic_samples, bounds)
        notes.append(
            "no --data given: inputs were synthesized from the input spec, so the accuracy gate "
            "compares outputs with the original's, not task accuracy; pass --data for that"
        )
    step = fixed or 1
    keep = min(dataset.samples, options.max_samples)
    keep -= keep % step
    if keep == 0:
        raise InputError(
            f"the model's batch axis is fixed at {fixed} but the data has {dataset.samples} samples",
            hint=f"give at least {fixed} samples",
        )
    dataset.feeds = {k: v[:keep] for k, v in dataset.feeds.items()}
    dataset.labels = None if dataset.labels is None else dataset.labels[:keep]
    metric = options.metric or default_metric(source.outputs[0].shape, dataset.labels is not None, dataset.synthesized)
    check_metric(metric, dataset.labels is not None)
    batch_sizes = options.batch_sizes
    if fixed is not None:
        batch_sizes = [fixed]
        notes.append(f"the model pins its batch axis at {fixed}; measured at that batch size only")
    attention = dense = False
    if source.onnx_path is not None:
        from honed.optimizer.onnx_graph import has_attention, matmul_heavy

        attention, dense = has_attention(source.onnx_path), matmul_heavy(source.onnx_path)
    data_path = dataset.save(work / "data.npz")
    mask = padding_mask(dataset.feeds)
    return Prepared(source, dataset, data_path, metric, batch_sizes, attention, notes, matmul_heavy=dense, mask=mask)


def _default_baseline(src: SourceModel, device: str, factory_opts: dict[str, Any]) -> CandidatePlan:
    """What every speedup is against: the original run the plain way an expert would time it.

    PyTorch and TorchScript sources: the user's model as given (the factory's module or the
    TorchScript file, never a module rebuilt from the exported program), eager, fp32; on CPU
    with the search's thread count, on CUDA with TF32 off and ``cudnn.benchmark`` on (see
    ``backends.torch_cuda_baseline``). ONNX sources: ONNX Runtime on CPU, TensorRT fp32 on GPUs.
    """
    if src.format == "onnx":
        return (
            CandidatePlan("onnxruntime", "fp32")
            if device == "cpu"
            else CandidatePlan("tensorrt", "fp32", device=device)
        )
    source = "torch" if src.format == "pytorch" else "torchscript"
    return CandidatePlan("torch", "fp32", source, "eager", device, {**factory_opts, AS_GIVEN: True})


def plan_candidates(
    options: OptimizeOptions, prep: Prepared
) -> tuple[CandidatePlan, list[CandidatePlan], list[Skipped]]:
    """The baseline plan, the candidate plans (cheap builds first) and what was skipped, with why.

    Raises:
        InputError: ``--backends`` names a backend unknown on the device, or the baseline's
            backend cannot run here.
    """
    src = prep.source
    known = sorted(GPU_BACKEND_MODULES if options.device == "cuda" else BACKEND_MODULES)
    unknown = [b for b in options.backends if b not in known]
    if unknown:
        raise InputError(
            f"--backends {','.join(unknown)} unknown on {options.device}", hint=f"choose among {', '.join(known)}"
        )
    factory_opts = {"factory": src.factory, "sys_path": [str(Path.cwd())]} if src.factory else {}
    baseline = _default_baseline(src, options.device, factory_opts)
    ctx = _search_context(options, prep)
    plans: list[CandidatePlan] = []
    skipped: list[Skipped] = []
    for name in known:
        module = _runnable_backend(name, options.device, baseline, skipped)
        if module is None or (options.backends and name not in options.backends and name != baseline.backend):
            continue
        for item in module.plans(ctx):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            plan = CandidatePlan(
                item.backend, item.precision, item.source, item.variant, item.device, {**factory_opts, **item.options}
            )
            if plan.name == baseline.name:
                if not baseline.options.get(AS_GIVEN):
                    baseline = plan  # the backend's own options (e.g. ONNX Runtime's) for the baseline
                # else: the same precision and mode rebuilt from the exported program, which the
                # model as given already measures.
            elif not options.backends or name in options.backends:
                plans.append(plan)
    # Cheap builds first: when the time budget runs out, what is left is the slow tail (compiles).
    plans.sort(key=_build_cost)
    return baseline, plans, skipped


def _search_context(options: OptimizeOptions, prep: Prepared) -> SearchContext:
    src = prep.source
    return SearchContext(
        inputs=src.inputs,
        outputs=src.outputs,
        source_format=src.format,
        precisions=list[str](options.precisions),
        cpu_flags=cpu_flags(),
        device=options.device,
        attention=prep.attention,
        matmul_heavy=prep.matmul_heavy,
        has_torch_program=src.torch_path is not None or src.format == "torchscript",
        batch_sizes=prep.batch_sizes,
    )


def _runnable_backend(name: str, device: str, baseline: CandidatePlan, skipped: list[Skipped]) -> Backend | None:
    """Backend ``name``'s module when its runtime is here; else None, with why appended to ``skipped``.

    Raises:
        InputError: the baseline's backend cannot run here.
    """
    try:
        module = backend_module(name, device)
    except ImportError as exc:
        skipped.append(Skipped(name=name, reason=f"backend module missing: {exc}"))
        return None
    reason = module.availability()
    if not reason:
        return module
    if name == baseline.backend:
        raise InputError(
            f"the baseline backend {name} cannot run here: {reason}",
            hint="install it, or run on a device that has it (--device)",
        )
    skipped.append(Skipped(name=name, reason=reason))
    return None


def repro_command(options: OptimizeOptions, plan: CandidatePlan) -> str:
    """The ``honed optimize`` command line that searches only this plan's backend and precision."""
    parts = ["honed", "optimize", options.model]
    if options.data:
        parts += ["--data", str(options.data)]
    parts += [
        "--backends",
        plan.backend,
        "--precisions",
        plan.precision.split("-")[0],
        "--batch-sizes",
        ",".join(map(str, options.batch_sizes)),
        "--max-metric-drop",
        str(options.max_metric_drop),
    ]
    parts += [f"--input {s.name}:{s.dtype}:{','.join(map(str, s.shape))}" for s in options.inputs]
    return " ".join(parts)


def _build_cost(plan: CandidatePlan) -> int:
    if plan.variant == "compile":
        return 3
    if plan.precision.startswith("int8"):
        return 2 if plan.precision != "int8-dynamic" else 1
    return 0
