"""Why the original model does not run: a runtime's error text -> its cause in one line and its own fix.

The baseline failing ends the run, so its message is the one a new user reads. Runtimes
word their refusals in stable phrases (ONNX Runtime's status names, its version checks);
each known phrase maps to the fix for that cause, and anything else keeps the runtime's
own words with a fix that does not guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from honed.optimizer.tensors import DEFAULT_OPEN_DIM

SHAPES_HINT = "check the --input shapes/dtypes and the --data arrays against the model's inputs"


@dataclass(frozen=True)
class Diagnosis:
    """What a runtime's error means for the user: the cause, the fix, and which kind of fix (the exit code)."""

    cause: str
    hint: str
    # What kind of fix it takes, which decides the exit code: the input, more memory, more time.
    kind: Literal["input", "memory", "time"] = "input"


def clean(reason: str) -> str:
    """Drop the C++ source location and function signature ONNX Runtime puts before its message."""
    text = re.sub(r"\S*onnxruntime_src/\S+:\d+\s+[^()]*\([^()]*\)\s*", "", reason)
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : ", "", text)
    return " ".join(text.split())


def _ir(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"the model's IR version {m[1]} is newer than this ONNX Runtime reads (up to IR {m[2]})",
        "re-export the model with an older onnx / opset, or upgrade onnxruntime",
    )


def _opset(m: re.Match[str]) -> Diagnosis:
    # The runtime names its newest opset at the end of a long message, which may be cut off.
    newest = re.search(r"support for domain (\S+) is till opset (\d+)", m.string)
    domain, supported = (newest[1], newest[2]) if newest else ("ai.onnx", str(int(m[1]) - 1))
    limit = f"up to opset {supported}" if newest else f"opset {m[1]} only as a preview"
    return Diagnosis(
        f"the model imports {domain} opset {m[1]}; this ONNX Runtime supports {domain} {limit}",
        f"re-export the model with opset {supported} or older (e.g. torch.onnx.export(..., "
        f"opset_version={supported})), or upgrade onnxruntime",
    )


def _unknown_op(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"ONNX Runtime does not know the operator {m[1]}",
        "export the model with standard ONNX operators only (custom ops need their library registered "
        "with ONNX Runtime, which honed does not do)",
    )


def _no_kernel(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"ONNX Runtime has no CPU kernel for {m[1]} (opset {m[2]}) with the tensor types this model gives it",
        f"re-export the model so {m[1]} gets types ONNX Runtime implements (e.g. float32, int64), "
        "or with another opset",
    )


def _protobuf(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the runtime cannot deserialize the model file (protobuf parsing failed)",
        "the file is truncated or not an ONNX model: export or download it again",
    )


def _invalid_graph(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"the runtime finds the graph invalid: {m[1].strip()}",
        "re-export the model with a current exporter; onnx.checker.check_model(model, full_check=True) "
        "shows the failing node",
    )


def _shapes(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(f"the inputs do not fit the model: {m[0].strip()[:300]}", SHAPES_HINT)


def _index_range(m: re.Match[str]) -> Diagnosis:
    node = re.search(r"running (\S+) node\. Name:\s*'([^']*)'", m.string)
    where = f" ({node[1]} node {node[2]})" if node else ""
    return Diagnosis(
        f"the inputs index past a table inside the model{where}: {m[0].strip()[:200]}",
        "the input values or lengths do not fit what the model looks up: token ids must be below its "
        "vocabulary size, and lengths that depend on each other must agree (a decoder's attention_mask "
        f"spans the past plus the new tokens). Without --data, honed fills each open axis with {DEFAULT_OPEN_DIM}: "
        "give each input its real length with --input NAME:DTYPE:batch,LEN, or pass --data with real inputs",
    )


def _killed(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the runtime's process was killed (signal 9), most often for running out of memory",
        "run on a machine with more memory, or lower --batch-sizes",
        kind="memory",
    )


def _timeout(m: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the time budget ran out before the original model was built and run", "raise --time-budget", kind="time"
    )


_RULES = [
    (r"Unsupported model IR version:\s*(\d+),\s*max supported IR version:\s*(\d+)", _ir),
    (r"Opset (\d+) is under development", _opset),
    (r"(\S+) is not a registered function/op", _unknown_op),
    (r"Could not find an implementation for (\S+?)\((\d+)\) node", _no_kernel),
    (r"INVALID_PROTOBUF|protobuf parsing failed", _protobuf),
    (r"INVALID_GRAPH : (?:This is an invalid model\.)?(.*)", _invalid_graph),
    (
        r"(Got invalid dimensions for input: \S+.*|Invalid rank for input: \S+.*|Unexpected input data type.*"
        r"|Required inputs .* are missing.*|must have shape .*)",
        _shapes,
    ),
    (
        r"(indices element out of data bounds.*|Out of range value in index tensor.*|invalid indice found.*)",
        _index_range,
    ),
    (r"killed by signal 9", _killed),
    (r"time budget exhausted|timed out after", _timeout),
]


def explain(reason: str) -> Diagnosis:
    """The cause and the fix for a baseline candidate's failure ``reason``."""
    text = clean(reason)
    for pattern, diagnose in _RULES:
        found = re.search(pattern, text, re.DOTALL)
        if found:
            return diagnose(found)
    return Diagnosis(
        text[:400],
        "the runtime's own message above names what failed; the model must run in that runtime "
        "as given before honed can compare anything with it",
    )
