"""CUDA-event timing and the GPU facts recorded with every GPU result."""

from __future__ import annotations

from honed.optimizer.gpu_timing import event_times_ms, gpu_info, gpu_key, peak_gpu_bytes_during


def test_event_times_grow_with_the_work() -> None:
    import torch

    a = torch.randn(2048, 2048, device="cuda")
    small = event_times_ms(lambda: a @ a, iters=20, warmup=3)
    large = event_times_ms(lambda: [a @ a for _ in range(8)], iters=20, warmup=3)
    assert len(small) == 20 and min(small) > 0
    # Eight products take longer than one: the events time the GPU work, not the launch.
    assert sorted(large)[10] > 4 * sorted(small)[10]


def test_peak_memory_counts_allocations() -> None:
    import torch

    def allocate() -> None:
        x = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
        x.fill_(1)

    assert peak_gpu_bytes_during(allocate) >= 64 << 20


def test_gpu_info_names_the_gpu_driver_and_libraries() -> None:
    info = gpu_info()
    assert info["gpu"] and info["capability"] and info["torch"] and info["cuda_runtime"]
    assert info["driver"], "nvidia-smi and NVML both failed to give the driver version"
    assert gpu_key().startswith(info["gpu"].split()[0].lower())
