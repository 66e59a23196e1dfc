"""Measured device memory: the allocator's peak, beside the compiler's prediction.

On GPU and TPU every device keeps allocator statistics (`Device.memory_stats()`); a run logs
their peak as `device_peak_gib` in every metrics row, and at step 0 the prediction of the
compiled train step (`device_peak_estimate_gib`: XLA's memory analysis, what `--mode=dry_run`
reports), so the estimate and the truth sit side by side. The CPU backend keeps no statistics:
there both fields are absent, never zero.
"""

import jax

GIB = 2**30


def device_peak_gib() -> float | None:
    """The largest `peak_bytes_in_use` over this process's devices, in GiB; None where the
    backend keeps no allocator statistics (CPU)."""
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats()
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        peaks.append(stats["peak_bytes_in_use"])
    return max(peaks) / GIB


def with_device_peak(values: dict) -> dict:
    """`values` plus `device_peak_gib` where the backend measures it."""
    peak = device_peak_gib()
    return values if peak is None else {**values, "device_peak_gib": peak}
