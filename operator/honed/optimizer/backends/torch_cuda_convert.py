"""Turn an exported fp32 program into the module a CUDA candidate runs: device, precision, fp8.

An exported program (``torch.export``) records the device and dtypes it was traced with as
constants in its graph (``arange(device='cpu')``, ``to(dtype=torch.float32)``), so moving its
weights is not enough: this rewrites those constants too. The conversion is deterministic, so
the artifact stores the fp32 program once and every process that loads it derives the same
graph, which is what lets the compiler's saved cache artifacts hit in a new process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import fx

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.bfloat16}
"""Precision name -> the dtype weights and activations run in (fp8 runs its matmuls in fp8
and everything else in bf16, the only output dtype rowwise-scaled fp8 matmuls support)."""

FP8_MAX = 448.0  # largest finite float8_e4m3fn
_FP8_PREFIX = "_fp8_"
_WIDE_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_FP8_MIN_WEIGHT = 1 << 16  # smaller matmuls lose more to the extra quantize pass than fp8 gains


def load_program(path: Path) -> torch.nn.Module:
    """The module in an exported program (.pt2) or a TorchScript file, on the CPU, for inference.

    An exported program's module refuses ``eval()``: it runs in the mode it was exported in,
    and the engine exports in eval mode.
    """
    if path.suffix == ".pt2":
        module: torch.nn.Module = torch.export.load(str(path)).module()
    else:
        module = torch.jit.load(str(path), map_location="cpu")
        module.eval()
    return module


def keyword_inputs(module: torch.nn.Module) -> list[str]:
    """The input names an exported program takes as keywords (empty: it takes them positionally).

    An exported program checks its call against the structure it was exported with, so inputs
    exported as positional arguments must be passed positionally and keywords as keywords.
    """
    spec = getattr(module, "_in_spec", None)
    if spec is None or spec.num_children != 2:
        return []
    kwargs = spec.child(1) if hasattr(spec, "child") else spec.children_specs[1]
    return [str(k) for k in (kwargs.context or [])]


def to_device_and_dtype(
    module: torch.nn.Module, device: str, precision: str, channels_last: bool = False
) -> torch.nn.Module:
    """Move ``module`` to ``device`` with floating weights in ``precision``'s dtype.

    For a graph module (exported program) the device and float32 constants in the graph are
    rewritten as well. Integer tensors (token ids, positions) keep their dtype.
    """
    dtype = DTYPES[precision]
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        # Tensors report "cuda:0"; a bare "cuda" in the graph's device checks would not match.
        target = torch.device("cuda", torch.cuda.current_device())
    if isinstance(module, fx.GraphModule):
        _retarget_graph(module.graph, target, dtype)
        module.recompile()
    module.to(target)
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for name, tensor in tensors:
        # fp8 weights and their float32 scales are already in the dtype their matmul needs.
        if name.startswith(_FP8_PREFIX) or tensor.dtype not in _WIDE_FLOATS or tensor.dtype == dtype:
            continue
        tensor.data = tensor.data.to(dtype)
    if channels_last:  # 4-D weights (convolutions) in NHWC, the layout tensor-core convolutions read
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module


def _retarget_graph(graph: fx.Graph, device: torch.device, dtype: torch.dtype) -> None:
    def swap(value: Any) -> Any:
        if isinstance(value, torch.device):
            return device
        if value is torch.float32 and dtype is not torch.float32:
            return dtype
        return value

    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch.ops.aten._assert_tensor_metadata.default and not node.users:
            # Export-time checks of the traced dtype/device: the conversion changes both on purpose.
            graph.erase_node(node)
            continue
        node.args = fx.node.map_aggregate(node.args, swap)
        node.kwargs = fx.node.map_aggregate(node.kwargs, swap)


def fp8_linear(
    x: torch.Tensor, weight_fp8_t: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ W.T + b`` with both operands in float8_e4m3fn, scaled per row of x and of W.

    The activation scale is computed per call from the row's absolute maximum (dynamic
    quantization); the compiler fuses that pass into the op that produced ``x``.
    """
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    amax = rows.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)
    x_scale = amax / FP8_MAX
    x_fp8 = (rows.float() / x_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    out = torch._scaled_mm(
        x_fp8, weight_fp8_t, scale_a=x_scale, scale_b=weight_scale, bias=bias, out_dtype=torch.bfloat16
    )
    return out.reshape(*shape[:-1], out.shape[-1])


def quantize_linears_fp8(module: fx.GraphModule, min_weight: int = _FP8_MIN_WEIGHT) -> int:
    """Replace the graph's large ``aten.linear`` calls on constant weights by :func:`fp8_linear`.

    Weights are quantized here, per output channel; returns how many linears were replaced.
    fp8 matmuls need both matrix dimensions divisible by 16.
    """
    replaced = 0
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
            continue
        weight_node = node.args[1]
        if not isinstance(weight_node, fx.Node) or weight_node.op != "get_attr":
            continue
        weight = _get_attr(module, str(weight_node.target))
        out_features, in_features = weight.shape
        if out_features % 16 or in_features % 16 or weight.numel() < min_weight:
            continue
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX
        w_fp8 = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        base = f"{_FP8_PREFIX}{replaced}"
        # The matmul wants the weight column-major: keep it (N, K) row-major and pass its .t().
        module.register_buffer(f"{base}_weight", w_fp8)
        module.register_buffer(f"{base}_scale", scale.reshape(1, -1).contiguous())
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        with graph.inserting_before(node):
            wq = graph.get_attr(f"{base}_weight")
            wt = graph.call_function(torch.ops.aten.t.default, (wq,))
            ws = graph.get_attr(f"{base}_scale")
            new = graph.call_function(fp8_linear, (node.args[0], wt, ws, bias))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        replaced += 1
    if replaced:
        graph.eliminate_dead_code()
        graph.lint()
        module.recompile()
    return replaced


def _get_attr(module: torch.nn.Module, dotted: str) -> torch.Tensor:
    value: Any = module
    for part in dotted.split("."):
        value = getattr(value, part)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{dotted} is not a tensor")
    return value


def linear_and_conv_counts(module: torch.nn.Module) -> tuple[int, int]:
    """How many linear and convolution calls a graph module makes (to judge fp8's reach)."""
    if not isinstance(module, fx.GraphModule):
        return 0, 0
    linear = conv = 0
    for node in module.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if "linear" in name or name.startswith(("aten.addmm", "aten.mm")):
            linear += 1
        elif "conv" in name:
            conv += 1
    return linear, conv
