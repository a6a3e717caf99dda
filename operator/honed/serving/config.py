"""config.pbtxt from typed data, checked by parsing it into Triton's own ``ModelConfig`` protobuf.

The text is rendered by hand (not by protobuf's printer) so that each derived choice can carry a
comment saying why it was made; ``parse_config`` then proves Triton will read it as intended.
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
        if spec.dtype not in TRITON_DTYPES:
            raise InputError(
                f"tensor {spec.name!r} has dtype {spec.dtype!r}, which Triton cannot serve",
                hint=f"use one of {', '.join(sorted(TRITON_DTYPES))}",
            )
        dims = tuple(spec.item_shape if batched else spec.shape)
        return cls(spec.name, TRITON_DTYPES[spec.dtype], dims)


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class InstanceGroup:
    kind: InstanceKind = "KIND_CPU"
    count: int = 1


@dataclass(frozen=True)
class Warmup:
    """A warmup request of zeros at ``batch_size``; a load fails when it fails."""

    name: str
    batch_size: int
    inputs: tuple[TensorConfig, ...]


@dataclass(frozen=True)
class ModelConfigData:
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
    """The config.pbtxt text; raises InputError when Triton would reject or misread it."""
    lines = [
        "# Written by honed from the optimization report; a new deployment writes a new version.",
        *(f"# {note}" for note in config.notes),
        "",
    ]
    lines.append(f"name: {_q(config.name)}")
    if config.platform:
        lines.append(f"platform: {_q(config.platform)}")
    if config.backend:
        lines.append(f"backend: {_q(config.backend)}")
    if config.default_model_filename:
        lines.append(f"default_model_filename: {_q(config.default_model_filename)}")
    lines.append(f"max_batch_size: {config.max_batch_size}")
    lines.append(f"version_policy: {{ specific: {{ versions: [ {', '.join(map(str, config.versions))} ] }} }}")
    lines += _tensors("input", config.inputs)
    lines += _tensors("output", config.outputs)
    if config.dynamic_batching is not None:
        db = config.dynamic_batching
        lines.append("dynamic_batching {")
        if db.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, db.preferred_batch_sizes))} ]")
        lines.append(f"  max_queue_delay_microseconds: {db.max_queue_delay_us}")
        lines.append("}")
    group = config.instance_group
    lines.append(f"instance_group [ {{ kind: {group.kind}, count: {group.count} }} ]")
    lines.append(f"response_cache {{ enable: {'true' if config.response_cache else 'false'} }}")
    for key, value in sorted(config.parameters.items()):
        lines.append(f"parameters {{ key: {_q(key)} value: {{ string_value: {_q(value)} }} }}")
    for warmup in config.warmup:
        lines.append("model_warmup {")
        lines.append(f"  name: {_q(warmup.name)}")
        lines.append(f"  batch_size: {warmup.batch_size}")
        for tensor in warmup.inputs:
            lines.append(
                f"  inputs {{ key: {_q(tensor.name)} value: {{ data_type: {tensor.data_type}, "
                f"dims: [ {', '.join(map(str, tensor.dims))} ], zero_data: true }} }}"
            )
        lines.append("}")
    text = "\n".join(lines) + "\n"
    parse_config(text)
    return text


def _tensors(kind: str, tensors: tuple[TensorConfig, ...]) -> list[str]:
    out = [f"{kind} ["]
    for i, t in enumerate(tensors):
        sep = "," if i < len(tensors) - 1 else ""
        out.append(
            f"  {{ name: {_q(t.name)}, data_type: {t.data_type}, dims: [ {', '.join(map(str, t.dims))} ] }}{sep}"
        )
    out.append("]")
    return out


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text into tritonclient's ``ModelConfig`` and check what Triton checks.

    Returns the protobuf message. Raises InputError naming the field when the text would be
    rejected by Triton at load time (a syntax error, or a combination Triton refuses).
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:  # the serving extra is not installed
        raise EnvironmentProblem(
            f"tritonclient is not installed ({exc})", hint="pip install 'honed[serving]'"
        ) from None
    message = model_config_pb2.ModelConfig()
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
    if message.HasField("dynamic_batching"):
        if message.max_batch_size == 0:
            raise InputError(f"model {message.name}: dynamic batching needs max_batch_size > 0")
        for size in message.dynamic_batching.preferred_batch_size:
            if not 0 < size <= message.max_batch_size:
                raise InputError(
                    f"model {message.name}: preferred batch size {size} is outside "
                    f"1..max_batch_size ({message.max_batch_size})"
                )
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
