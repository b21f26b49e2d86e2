"""CPU/GPU latency of a model or a layer: median of repeated timed forwards after warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def median_seconds(run: Callable[[], object], device: torch.device, repeats: int,
                   warmup: int, min_sample_s: float = 0.0) -> float:
    """Median seconds of one `run()`. Each sample times enough back-to-back calls to last
    `min_sample_s` (a single call of a small layer is too short for the clock)."""
    for _ in range(warmup):
        run()
    _synchronize(device)
    inner = 1
    if min_sample_s > 0:
        start = time.perf_counter()
        run()
        _synchronize(device)
        inner = max(1, int(min_sample_s / max(time.perf_counter() - start, 1e-7)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            run()
        _synchronize(device)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def measure_latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int,
                       repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time in milliseconds of one eval-mode forward of a `batch` of zeros (the
    values do not change the work of a conv net)."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    return 1000 * median_seconds(lambda: model(x), device, repeats, warmup)


def latency_ratio(model: nn.Module, reference: nn.Module, input_shape: tuple[int, ...],
                  batch: int, rounds: int = 5, repeats: int = 10) -> tuple[float, float, float]:
    """(model ms, reference ms, model / reference): both timed in alternating rounds and the
    median taken over rounds, so a machine that slows down or speeds up for seconds at a time
    (a shared VM) shifts both alike instead of the ratio."""
    pairs = [(measure_latency_ms(model, input_shape, batch, repeats, warmup=2),
              measure_latency_ms(reference, input_shape, batch, repeats, warmup=2))
             for _ in range(rounds)]
    return (statistics.median(m for m, _ in pairs), statistics.median(r for _, r in pairs),
            statistics.median(m / r for m, r in pairs))
