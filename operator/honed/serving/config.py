"""config.pbtxt from typed data: Triton's own ``ModelConfig`` protobuf, printed by protobuf.

``render`` builds the message, checks what Triton checks at load time, and prints it with
``google.protobuf.text_format`` under a comment header saying why each derived value was chosen;
``parse_config`` reads config.pbtxt text back into the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from honed.errors import EnvironmentProblem, InputError
from honed.optimizer.tensors import TRITON_DTYPES, TensorSpec

InstanceKind = Literal["KIND_CPU", "KIND_GPU"]


@dataclass(frozen=True)
class TensorConfig:
    """One input or output as Triton sees it: without the batch axis when batching is on."""

    name: str
    data_type: str  # TYPE_FP32 ...
    dims: tuple[int, ...]

    @classmethod
    def from_spec(cls, spec: TensorSpec, *, batched: bool) -> TensorConfig:
        """The tensor as Triton sees it, without the batch axis when ``batched``; InputError for dtypes it lacks."""
        if spec.dtype not in TRITON_DTYPES:
            raise InputError(
                f"tensor {spec.name!r} has dtype {spec.dtype!r}, which Triton cannot serve",
                hint=f"use one of {', '.join(sorted(TRITON_DTYPES))}",
            )
        dims = tuple(spec.item_shape if batched else spec.shape)
        return cls(spec.name, TRITON_DTYPES[spec.dtype], dims)


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher: how long a request may wait for others (µs), and the batch sizes it prefers."""

    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class InstanceGroup:
    """How many instances of the model run, and on which kind of device."""

    kind: InstanceKind = "KIND_CPU"
    count: int = 1


@dataclass(frozen=True)
class Warmup:
    """A warmup request of zeros at ``batch_size``; a load fails when it fails."""

    name: str
    batch_size: int
    inputs: tuple[TensorConfig, ...]


def warmups(inputs: tuple[TensorConfig, ...], max_batch_size: int) -> tuple[Warmup, ...]:
    """Zero-filled warmup requests at every ``warmup_batch_sizes`` size (other variable dims get 1)."""
    concrete = tuple(TensorConfig(t.name, t.data_type, tuple(d if d > 0 else 1 for d in t.dims)) for t in inputs)
    return tuple(Warmup(f"zeros-batch-{b}", b, concrete) for b in warmup_batch_sizes(max_batch_size))


def warmup_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... below ``max_batch_size``, and the max: every batch shape a runtime may compile.

    The dynamic batcher forms any size up to the max; honed's OpenVINO runtime pads a batch to the
    next power of two and compiles each such shape on first use, which would cost the first batch
    of each size seconds under load had the load not warmed it.
    """
    sizes = [1]
    while sizes[-1] * 2 < max_batch_size:
        sizes.append(sizes[-1] * 2)
    if max_batch_size > 1:
        sizes.append(max_batch_size)
    return sizes


@dataclass(frozen=True)
class ModelConfigData:
    """A model's config.pbtxt as typed data; ``render`` prints it after Triton's load-time checks."""

    name: str
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    max_batch_size: int
    # The versions this config serves (version_policy specific): a config describes the version it
    # was written for, so a restart never loads a version with another version's settings.
    versions: tuple[int, ...]
    platform: str = ""
    backend: str = ""
    default_model_filename: str = ""
    dynamic_batching: DynamicBatching | None = None
    instance_group: InstanceGroup = InstanceGroup()
    response_cache: bool = True
    warmup: tuple[Warmup, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # why each derived value was chosen; rendered as comments


def render(config: ModelConfigData) -> str:
    """The config.pbtxt text; raises InputError when Triton would reject or misread it.

    The ``ModelConfig`` protobuf is built from ``config`` and printed by protobuf's own printer;
    the notes on each derived choice go in a comment header.
    """
    message = build_message(config)
    _check(message)
    from google.protobuf import text_format

    header = [
        "# Written by honed from the optimization report; a new deployment writes a new version.",
        *(f"# {note}" for note in config.notes),
    ]
    return "\n".join(header) + "\n\n" + str(text_format.MessageToString(message))


def build_message(config: ModelConfigData) -> Any:
    """Triton's ``ModelConfig`` protobuf holding ``config`` (unchecked: ``render`` checks it)."""
    pb = _model_config_pb2()
    message = pb.ModelConfig(
        name=config.name,
        platform=config.platform,
        backend=config.backend,
        default_model_filename=config.default_model_filename,
        max_batch_size=config.max_batch_size,
    )
    message.version_policy.specific.SetInParent()  # an empty list is refused by _check, not dropped
    message.version_policy.specific.versions.extend(config.versions)
    for tensors, field_ in ((config.inputs, message.input), (config.outputs, message.output)):
        for tensor in tensors:
            field_.add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type), dims=tensor.dims)
    if config.dynamic_batching is not None:
        batching = message.dynamic_batching
        batching.SetInParent()  # present even with every value at its default
        batching.preferred_batch_size.extend(config.dynamic_batching.preferred_batch_sizes)
        batching.max_queue_delay_microseconds = config.dynamic_batching.max_queue_delay_us
    group = config.instance_group
    message.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(group.kind), count=group.count)
    message.response_cache.SetInParent()
    message.response_cache.enable = config.response_cache
    for key, value in sorted(config.parameters.items()):
        message.parameters[key].string_value = value
    for warmup in config.warmup:
        entry = message.model_warmup.add(name=warmup.name, batch_size=warmup.batch_size)
        for tensor in warmup.inputs:
            entry.inputs[tensor.name].CopyFrom(
                pb.ModelWarmup.Input(data_type=pb.DataType.Value(tensor.data_type), dims=tensor.dims, zero_data=True)
            )
    return message


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:  # the serving extra is not installed
        raise EnvironmentProblem(
            f"tritonclient is not installed ({exc})", hint="pip install 'honed[serving]'"
        ) from None
    return model_config_pb2


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text into tritonclient's ``ModelConfig`` and check what Triton checks.

    Returns the protobuf message. Raises InputError naming the field when the text would be
    rejected by Triton at load time (a syntax error, or a combination Triton refuses).
    """
    pb = _model_config_pb2()
    from google.protobuf import text_format

    message = pb.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise InputError(f"config.pbtxt does not parse as Triton's ModelConfig: {exc}") from None
    _check(message)
    return message


def config_json(text: str) -> str:
    """config.pbtxt text as the JSON that Triton's load API takes in place of the file."""
    from google.protobuf import json_format

    return str(json_format.MessageToJson(parse_config(text), preserving_proto_field_name=True, indent=None))


def _check(message: Any) -> None:
    """Raise InputError naming the field for what Triton would refuse at load time."""
    _check_model(message)
    _check_tensors(message)
    _check_batching(message)
    _check_warmup(message)


def _check_model(message: Any) -> None:
    if not message.name:
        raise InputError("config.pbtxt has no model name")
    if not (message.platform or message.backend):
        raise InputError(f"model {message.name}: set a platform or a backend")
    policy = message.version_policy
    if policy.HasField("specific") and (not policy.specific.versions or any(v <= 0 for v in policy.specific.versions)):
        raise InputError(
            f"model {message.name}: version_policy specific names versions {list(policy.specific.versions)}",
            hint="name at least one version, all positive",
        )
    if message.max_batch_size < 0:
        raise InputError(f"model {message.name}: max_batch_size must be >= 0")


def _check_tensors(message: Any) -> None:
    for kind, tensors in (("input", message.input), ("output", message.output)):
        if not tensors:
            raise InputError(f"model {message.name} declares no {kind}")
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise InputError(f"model {message.name}: duplicate {kind} names {names}")
        for tensor in tensors:
            if any(d == 0 or d < -1 for d in tensor.dims):
                raise InputError(
                    f"model {message.name}: {kind} {tensor.name!r} has dims {list(tensor.dims)}",
                    hint="dimensions are positive or -1 (variable)",
                )


def _check_batching(message: Any) -> None:
    if not message.HasField("dynamic_batching"):
        return
    if message.max_batch_size == 0:
        raise InputError(f"model {message.name}: dynamic batching needs max_batch_size > 0")
    for size in message.dynamic_batching.preferred_batch_size:
        if not 0 < size <= message.max_batch_size:
            raise InputError(
                f"model {message.name}: preferred batch size {size} is outside "
                f"1..max_batch_size ({message.max_batch_size})"
            )


def _check_warmup(message: Any) -> None:
    inputs = {t.name: t for t in message.input}
    for warmup in message.model_warmup:
        if message.max_batch_size and not 0 < warmup.batch_size <= message.max_batch_size:
            raise InputError(
                f"model {message.name}: warmup {warmup.name!r} batch {warmup.batch_size} "
                f"exceeds max_batch_size {message.max_batch_size}"
            )
        if set(warmup.inputs) != set(inputs):
            raise InputError(
                f"model {message.name}: warmup {warmup.name!r} must feed exactly the inputs {sorted(inputs)}"
            )
        for name, tensor in warmup.inputs.items():
            if any(d <= 0 for d in tensor.dims):
                raise InputError(f"model {message.name}: warmup input {name!r} needs concrete dims")
