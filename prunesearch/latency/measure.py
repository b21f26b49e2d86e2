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
    inner = _calls_per_sample(run, device, min_sample_s)
    samples = [_sample(run, device, inner) for _ in range(repeats)]
    return statistics.median(samples)


def measure_latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int,
                       repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time in milliseconds of one eval-mode forward of a `batch` of zeros (the
    values do not change the work of a conv net)."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, *input_shape, device=device)
    return 1000 * median_seconds(lambda: model(x), device, repeats, warmup)


def _calls_per_sample(run: Callable[[], object], device: torch.device,
                      min_sample_s: float) -> int:
    """How many back-to-back calls one sample must time to last `min_sample_s`."""
    if min_sample_s <= 0:
        return 1
    start = time.perf_counter()
    run()
    _synchronize(device)
    return max(1, int(min_sample_s / max(time.perf_counter() - start, 1e-7)))


def _sample(run: Callable[[], object], device: torch.device, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        run()
    _synchronize(device)
    return (time.perf_counter() - start) / inner


def _turn(run: Callable[[], object], device: torch.device, inner: int, samples: int) -> float:
    """One untimed call (the caches now hold this callable's weights and input, as they
    do for a layer inside a running network), then the median of `samples` timed samples."""
    run()
    return statistics.median(_sample(run, device, inner) for _ in range(samples))


@torch.no_grad()
def paired_seconds(run: Callable[[], object], reference: Callable[[], object],
                   device: torch.device, pairs: int, samples: int = 1, warmup: int = 2,
                   min_sample_s: float = 0.0) -> tuple[float, float, float]:
    """(median seconds of `run`, of `reference`, median of the per-pair ratios run /
    reference). The two take turns, `pairs` times, the first of each pair alternating; a turn
    is `samples` timed samples after an untimed call. A shared machine whose speed drifts from
    one second to the next (benchmarks/README.md) moves both turns of a pair alike, so the
    ratio keeps the work's difference and not the moment's."""
    for _ in range(warmup):
        run()
        reference()
    _synchronize(device)
    inner_run = _calls_per_sample(run, device, min_sample_s)
    inner_ref = _calls_per_sample(reference, device, min_sample_s)
    ours, theirs = [], []
    for i in range(pairs):
        if i % 2:
            theirs.append(_turn(reference, device, inner_ref, samples))
            ours.append(_turn(run, device, inner_run, samples))
        else:
            ours.append(_turn(run, device, inner_run, samples))
            theirs.append(_turn(reference, device, inner_ref, samples))
    return (statistics.median(ours), statistics.median(theirs),
            statistics.median(a / b for a, b in zip(ours, theirs, strict=True)))


def latency_ratio(model: nn.Module, reference: nn.Module, input_shape: tuple[int, ...],
                  batch: int, pairs: int = 10,
                  runtime: str = "torch") -> tuple[float, float, float]:
    """(model ms, reference ms, model / reference): eval-mode forwards of a `batch` of zeros
    in `runtime` (torch eager, or onnxruntime on the CPU), timed in alternating pairs
    (`paired_seconds`)."""
    from prunesearch.latency.runtimes import forward_call

    device = next(model.parameters()).device if runtime == "torch" else torch.device("cpu")
    x = torch.zeros(batch, *input_shape, device=device)
    ours, theirs, ratio = paired_seconds(forward_call(model, x, runtime),
                                         forward_call(reference, x, runtime), device, pairs,
                                         samples=2)
    return 1000 * ours, 1000 * theirs, ratio
