"""CPU/GPU latency of a model: median of repeated timed forwards after warm-up."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def measure_latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int,
                       repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time in milliseconds of one eval-mode forward of a `batch` of zeros (the
    values do not change the work of a conv net)."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
