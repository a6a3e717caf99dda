"""What the machine is: CPU model and flags, the CPUs this process may use, load; recorded in every report.

``effective_cpus()`` is the one answer to "how many threads": the Job and Triton containers run
under a CPU quota (a Kubernetes CPU limit) while ``os.cpu_count()``, the affinity mask and every
runtime's default see all of the host's cores. A runtime with more threads than its quota allows
is throttled every scheduling period, which makes timings slower and far noisier than one thread less.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from honed.optimizer.report import DeviceInfo

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 mounts the cpu controller under either name, depending on the distribution.
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True)
class CpuLimit:
    """The CPUs this process may use and where the limit comes from."""

    cpus: int  # min(affinity, ceil(quota)), at least 1
    affinity: int  # CPUs in the scheduler's affinity mask
    quota: float | None  # CPUs' worth of time per period the cgroup allows; None = no quota
    source: str  # which file set the quota, for the report


def cpu_limit(root: Path = CGROUP_ROOT, *, self_cgroup: Path = SELF_CGROUP, affinity: int | None = None) -> CpuLimit:
    """Read the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``)."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    affinity = max(1, affinity)
    quota, source = _v2_quota(root, self_cgroup)
    if quota is None:
        quota, source = _v1_quota(root)
    cpus = affinity if quota is None else min(affinity, max(1, math.ceil(quota)))
    return CpuLimit(cpus=max(1, cpus), affinity=affinity, quota=quota, source=source)


def _v2_quota(root: Path, self_cgroup: Path) -> tuple[float | None, str]:
    """The smallest ``cpu.max`` quota from this process's cgroup up to the root.

    Inside a container with its own cgroup namespace (Kubernetes on cgroup v2) the root IS the
    container's cgroup; without one, /proc/self/cgroup names the path below the root, and a
    limit on any ancestor (the pod's cgroup) applies too.
    """
    dirs = [root]
    try:
        for line in self_cgroup.read_text().splitlines():
            hierarchy, _, path = line.partition("::")
            if hierarchy == "0" and path.strip("/"):
                own = root / path.strip("/")
                dirs += [own, *(p for p in own.parents if p.is_relative_to(root) and p != root)]
    except OSError:
        pass  # no /proc/self/cgroup (not Linux, or a sandbox): the root's cpu.max is all there is
    best: tuple[float | None, str] = (None, "")
    for directory in dirs:
        try:
            fields = (directory / "cpu.max").read_text().split()
        except OSError:
            continue
        if len(fields) == 2 and fields[0] != "max":
            quota = int(fields[0]) / max(1, int(fields[1]))
            if best[0] is None or quota < best[0]:
                best = (quota, f"cgroup v2 {directory / 'cpu.max'}: {fields[0]}/{fields[1]}")
    return best


def _v1_quota(root: Path) -> tuple[float | None, str]:
    for name in V1_CPU_DIRS:
        directory = root / name
        try:
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:  # -1 means no quota
            return quota / period, f"cgroup v1 {directory}: cfs_quota_us {quota} / cfs_period_us {period}"
        return None, ""
    return None, ""


@lru_cache(maxsize=1)
def effective_cpus() -> int:
    """CPUs this process may use: its affinity mask capped by its cgroup quota (at least 1)."""
    return cpu_limit().cpus


def default_threads() -> int:
    """Threads per runtime: the effective CPUs, and no hyperthread siblings (they slow inference down)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or 0
    except ImportError:
        physical = 0
    cpus = effective_cpus()
    return max(1, min(cpus, physical) if physical else cpus)


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
    """The CPU's feature flags from /proc/cpuinfo (``avx512_bf16``, ``avx512_vnni``...); empty without /proc."""
    return set(_cpuinfo()[1])


def load_average() -> float | None:
    """The 1-minute load average, where the platform has one."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def loaded_note(timing_load: list[float], cpus: int | None) -> str | None:
    """A note for the report when the machine ran more than its CPUs while candidates were timed.

    Other work then shares the cores, and latencies read high by a varying amount; None when the
    load stayed within the CPUs (or is unknown).
    """
    if not timing_load or not cpus or max(timing_load) <= cpus:
        return None
    before, after = timing_load[0], timing_load[-1]
    return (
        f"the machine was loaded while timing (load average {before:.1f} before, {after:.1f} after, on {cpus} "
        "CPUs): the latencies include waiting for the CPU; compare candidates by their ratios, which "
        "interleaved rounds keep fair, and re-run on a quiet machine for absolute figures"
    )


def device_info(threads: int, gpu: str | None = None) -> DeviceInfo:
    """The report's account of this machine: CPU model and relevant flags, the CPUs it may use and why, load average."""
    name, flags = _cpuinfo()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []
    limit = cpu_limit()
    if limit.quota is not None:
        where = f"{limit.quota:g} CPUs by {limit.source}, {limit.affinity} in the affinity mask"
    else:
        where = f"{limit.affinity} in the affinity mask, no cgroup CPU quota"
    return DeviceInfo(
        cpu=name,
        flags=sorted(flags & RELEVANT_FLAGS),
        threads=threads,
        cpus=limit.cpus,
        cpu_limit=where,
        gpu=gpu,
        load_average=load,
    )
