"""Serving choices derived from the winner's own benchmark: batch limits, queue delay, instances.

Pure functions of the report; every choice comes with a note saying why, which ends up as a
comment in config.pbtxt and in ``honed serve``'s output.
"""

from __future__ import annotations

from dataclasses import dataclass

from honed.optimizer.report import Candidate, Latency, Report
from honed.serving.config import DynamicBatching, InstanceGroup

# A batch size "helps" when it moves at least this much more items per second.
HELPFUL_GAIN = 1.10


@dataclass(frozen=True)
class ServingOptions:
    """What a user may set; None means derive it from the benchmark."""

    response_cache: bool = True
    dynamic_batching: bool = True
    max_queue_delay_us: int | None = None
    max_batch_size: int | None = None
    instances: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class BatchingChoice:
    """The max batch size and dynamic batching chosen, with notes saying why."""

    max_batch_size: int
    dynamic: DynamicBatching | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class InstanceChoice:
    """The instance group and threads per instance chosen, with notes saying why."""

    group: InstanceGroup
    threads: int
    notes: tuple[str, ...]


def batch_fixed(report: Report) -> bool:
    """Whether Triton cannot batch requests: the model pins its batch size, or a tensor lacks a first-axis batch.

    Triton stacks requests on the first axis of every input and output; an RNN state
    ``[layers, batch, hidden]`` or an output with no batch axis cannot be stacked that way.
    """
    tensors = [*report.model.inputs, *report.model.outputs]
    return report.model.batch == "fixed" or not all(spec.batched for spec in tensors)


def measured(candidate: Candidate) -> dict[int, tuple[Latency | None, float]]:
    """Batch size -> (latency, items/s) from the benchmark; throughput derived from p50 if absent."""
    sizes: dict[int, tuple[Latency | None, float]] = {}
    keys = set(candidate.latency_by_batch_ms) | set(candidate.throughput)
    for key in keys:
        b = int(key)
        latency = candidate.latency_by_batch_ms.get(key)
        if latency is None and b == 1:
            latency = candidate.latency_ms
        items = candidate.throughput.get(key)
        if items is None and latency is not None and latency.p50 > 0:
            items = b * 1000.0 / latency.p50
        sizes[b] = (latency, items or 0.0)
    if not sizes and candidate.latency_ms is not None and candidate.latency_ms.p50 > 0:
        sizes[1] = (candidate.latency_ms, 1000.0 / candidate.latency_ms.p50)
    return dict(sorted(sizes.items()))


def choose_batching(report: Report, candidate: Candidate, options: ServingOptions) -> BatchingChoice:
    """Max batch size, preferred batch sizes and queue delay for ``candidate``, from its benchmark.

    A value set in ``options`` wins. Where the benchmark shows a batch size that beats filling up to
    the largest measured (a throughput peak, or the largest batch within the latency budget), that
    size is the max; with a max set by option above it, it is the preferred size.
    """
    if batch_fixed(report):
        fixed = report.model.fixed_batch_size
        unstacked = [s.name for s in (*report.model.inputs, *report.model.outputs) if not s.batched]
        why = (
            f"the model's batch axis is fixed{f' at {fixed}' if fixed else ''}"
            if report.model.batch == "fixed" or not unstacked
            else f"{', '.join(unstacked)} {'has' if len(unstacked) == 1 else 'have'} no batch on the first axis"
        )
        return BatchingChoice(
            0, None, (f"max_batch_size 0: {why}, so requests are sent whole and Triton cannot batch them",)
        )
    table = measured(candidate)
    largest = max(table, default=1)
    items = {b: t for b, (_, t) in table.items()}
    latency = {b: lat for b, (lat, _) in table.items() if lat is not None}
    budget = report.settings.latency_budget_ms
    best, why_best = _best_batch(items, latency, largest, budget)
    if options.max_batch_size:
        max_batch, notes = options.max_batch_size, [f"max_batch_size {options.max_batch_size}: set by option"]
    elif best is not None and options.dynamic_batching:
        # Measured (benchmarks/serving, MiniLM int8 on 2 CPUs, preferred size 8 and max 32): at 32 in
        # flight Triton formed batches of 13-18. A request waits longer than the queue delay behind the
        # busy instance, so the batcher sends all that queued, up to max_batch_size, whatever the
        # preferred sizes: only the max keeps batches at the size that measured best.
        max_batch, notes = (
            best,
            [
                f"max_batch_size {best}: {why_best}; under load Triton sends everything queued up to the max, "
                "so the max is what keeps batches at this size (a request of a larger batch is refused: set "
                "the max batch size to accept one)"
            ],
        )
    else:
        max_batch, notes = largest, [f"max_batch_size {largest}: the largest batch the benchmark measured"]
    if not options.dynamic_batching:
        return BatchingChoice(max_batch, None, (*notes, "dynamic batching off: asked for"))
    if max_batch <= 1:
        return BatchingChoice(max_batch, None, (*notes, "no dynamic batching: the benchmark measured batch 1 only"))

    preferred: tuple[int, ...] = ()
    if best is not None and best < max_batch:  # a max set by option: the best size is still the one to form
        preferred = (best,)
        notes.append(f"preferred batch {best}: {why_best}")
    elif best is None:
        notes.append(
            f"no preferred batch sizes: the benchmark shows no batch size better than filling up to {max_batch}"
        )

    delay_us, why = _queue_delay(options, candidate.device.startswith(("cuda", "gpu")))
    notes.append(f"max_queue_delay {delay_us} us: {why}")
    return BatchingChoice(max_batch, DynamicBatching(delay_us, preferred), tuple(notes))


def _best_batch(
    items: dict[int, float], latency: dict[int, Latency], largest: int, budget: float | None
) -> tuple[int | None, str]:
    """The measured batch size to keep batches at, below the largest measured, and why; None for the largest."""
    peak = max(items, key=lambda b: items[b]) if items else largest
    if 1 < peak < largest and items[peak] >= HELPFUL_GAIN * items[largest]:
        return peak, f"the measured throughput peak ({items[peak]:.0f}/s vs {items[largest]:.0f}/s at batch {largest})"
    if budget is not None and largest in latency and latency[largest].p99 > budget:
        within = [b for b, lat in latency.items() if lat.p99 <= budget]
        if within and max(within) > 1:
            fits = max(within)
            return fits, (
                f"the largest measured batch within the {budget:g} ms budget (p99 {latency[fits].p99:.2f} ms); "
                f"batch {largest} takes {latency[largest].p99:.2f} ms"
            )
    return None, ""


def _queue_delay(options: ServingOptions, on_gpu: bool) -> tuple[int, str]:
    """No request waits for company unless an option says so.

    Requests that arrive while the instance runs a batch queue behind it and form the next batch
    without any delay; a delay only gathers requests that arrive together at an idle instance,
    and every request that finds it idle pays it. Measured, served (queue delay vs none, paired
    per round): on an H200 (benchmarks/gpu/serving-1.md, BERT-base fp16) 78 us cost a lone request
    0.24 ms and moved 12-14% fewer items at 8 and 32 in flight; on 2 CPUs
    (benchmarks/serving/queue-delay.md, MiniLM int8, three runs) a tenth of a batch-1 inference
    (721 us) cost a lone request 5-13% and moved between 6% fewer and 12% more items at 8 and 32
    in flight, inside the machine's noise.
    """
    if options.max_queue_delay_us is not None:
        return max(0, options.max_queue_delay_us), "set by option"
    where = "a GPU instance" if on_gpu else "one CPU instance"
    return 0, (
        f"{where}: the requests that queue while it runs a batch form the next one, and waiting for more "
        "costs every request that finds it idle (measured: a lone request paid 5-13%, items/s under load "
        "moved within noise)"
    )


def choose_instances(report: Report, candidate: Candidate, options: ServingOptions) -> InstanceChoice:
    """The instance group and threads per instance for ``candidate``.

    Unless ``options`` set them: one instance on all the benchmark's threads, which is what was
    measured (on a GPU, one instance fed whole batches).
    """
    threads_total = max(1, report.device.threads)
    if candidate.device.startswith(("cuda", "gpu")):
        count = options.instances or 1
        return InstanceChoice(
            InstanceGroup("KIND_GPU", count),
            options.threads or threads_total,
            (
                f"{count} GPU instance{'s' if count > 1 else ''}: the dynamic batcher feeds "
                f"{'each' if count > 1 else 'it'} whole batches",
            ),
        )
    count = options.instances or 1
    threads = options.threads or max(1, threads_total // count)
    why = (
        "set by option"
        if options.instances or options.threads
        else f"the benchmark ran one runtime on all {threads_total} threads; batching, not parallel "
        "instances, is what it measured"
    )
    return InstanceChoice(
        InstanceGroup("KIND_CPU", count),
        threads,
        (f"{count} CPU instance{'s' if count > 1 else ''} x {threads} threads: {why}",),
    )


def instance_threads(configured: int | None, instances: int, cpus: int) -> int:
    """Threads for one model instance in the serving container: its share of the CPUs there.

    config.pbtxt carries the count derived from the benchmark machine; the serving container may
    run under a smaller CPU limit, and every instance of the group is its own process sharing it.
    """
    share = max(1, cpus // max(1, instances))
    return max(1, min(configured, share) if configured else share)
