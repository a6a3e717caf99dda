"""What the machine is: CPU model and flags, threads, load; recorded in every report."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

from honed.optimizer.report import DeviceInfo

# Flags that decide which precisions are worth trying; the report keeps only these.
RELEVANT_FLAGS = {
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "avx_vnni",
    "fma",
    "f16c",
}


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    name, flags = platform.processor() or "unknown", frozenset[str]()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass  # no /proc (not Linux): the platform's name and no flags, so bf16 candidates are skipped
    return name, flags


def cpu_flags() -> set[str]:
    return set(_cpuinfo()[1])


def device_info(threads: int, gpu: str | None = None) -> DeviceInfo:
    name, flags = _cpuinfo()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []
    return DeviceInfo(cpu=name, flags=sorted(flags & RELEVANT_FLAGS), threads=threads, gpu=gpu, load_average=load)
