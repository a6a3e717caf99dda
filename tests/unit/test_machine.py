"""The CPUs a run may use: affinity capped by the cgroup CPU quota, read from fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from honed.optimizer.machine import cpu_limit, default_threads, device_info, effective_cpus, loaded_note
from honed.serving.tuning import instance_threads

NO_PROC = Path("/nonexistent/proc/self/cgroup")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_cgroup_v2_quota_caps_the_affinity_mask(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "100000 100000")
    limit = cpu_limit(tmp_path, self_cgroup=NO_PROC, affinity=8)
    assert (limit.cpus, limit.affinity, limit.quota) == (1, 8, 1.0)
    assert "cgroup v2" in limit.source and "cpu.max" in limit.source


def test_a_fractional_quota_rounds_up(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "150000 100000")
    assert cpu_limit(tmp_path, self_cgroup=NO_PROC, affinity=8).cpus == 2
    write(tmp_path / "cpu.max", "10000 100000")  # 100m: still one thread, never zero
    assert cpu_limit(tmp_path, self_cgroup=NO_PROC, affinity=8).cpus == 1


def test_cgroup_v2_max_means_no_quota(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "max 100000")
    limit = cpu_limit(tmp_path, self_cgroup=NO_PROC, affinity=3)
    assert (limit.cpus, limit.quota) == (3, None)


def test_the_affinity_mask_caps_a_larger_quota(tmp_path: Path) -> None:
    write(tmp_path / "cpu.max", "800000 100000")
    assert cpu_limit(tmp_path, self_cgroup=NO_PROC, affinity=2).cpus == 2


def test_cgroup_v2_without_a_namespace_reads_the_own_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    write(tmp_path / "kubepods" / "pod1" / "cpu.max", "200000 100000")  # the pod's limit
    write(tmp_path / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000")  # the container sets none
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "0::/kubepods/pod1/ctr")
    limit = cpu_limit(tmp_path, self_cgroup=proc, affinity=16)
    assert limit.cpus == 2 and "pod1" in limit.source


@pytest.mark.parametrize("controller", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota_and_period(tmp_path: Path, controller: str) -> None:
    write(tmp_path / controller / "cpu.cfs_quota_us", "200000")
    write(tmp_path / controller / "cpu.cfs_period_us", "100000")
    limit = cpu_limit(tmp_path, self_cgroup=NO_PROC, affinity=4)
    assert (limit.cpus, limit.quota) == (2, 2.0) and "cgroup v1" in limit.source


def test_cgroup_v1_minus_one_means_no_quota(tmp_path: Path) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000")
    assert cpu_limit(tmp_path, self_cgroup=NO_PROC, affinity=4) == cpu_limit(
        tmp_path / "missing", self_cgroup=NO_PROC, affinity=4
    )


def test_no_cgroup_at_all_leaves_the_affinity_mask(tmp_path: Path) -> None:
    limit = cpu_limit(tmp_path / "missing", self_cgroup=NO_PROC, affinity=5)
    assert (limit.cpus, limit.quota, limit.source) == (5, None, "")


def test_this_process_uses_one_count_everywhere() -> None:
    info = device_info(default_threads())
    assert info.cpus == effective_cpus() >= default_threads() >= 1
    assert info.cpu_limit and ("affinity" in info.cpu_limit)


@pytest.mark.parametrize(
    ("configured", "instances", "cpus", "threads"),
    [(2, 1, 1, 1), (None, 1, 4, 4), (4, 2, 4, 2), (1, 1, 8, 1), (None, 3, 2, 1)],
)
def test_serving_instances_share_the_serving_containers_cpus(
    configured: int | None, instances: int, cpus: int, threads: int
) -> None:
    assert instance_threads(configured, instances, cpus) == threads


def test_a_report_says_when_the_machine_was_loaded_while_timing() -> None:
    assert loaded_note([1.2, 1.9], cpus=2) is None
    assert loaded_note([], cpus=2) is None  # no load average on this platform
    note = loaded_note([1.5, 3.4], cpus=2)
    assert note is not None and "1.5 before, 3.4 after, on 2 CPUs" in note and "ratios" in note
