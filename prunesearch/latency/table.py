"""Predicted forward latency of any Arch of a space, in microseconds, with no model built.

Once-for-All / nn-Meter style: every layer call the cost model records (conv, linear, norm,
activation, pooling) is timed alone, as a fresh layer of the same type and settings, at every
(input, output) channel count the space can give it, on the target device at the target batch
size; identical layers share their entries. Each entry is timed in turns with one reference
layer and kept as a ratio to it (`_Clock`), so the machine's drift while the table is built
does not tilt it. A subnetwork's table sum misses what a layer timed alone does not pay:
residual adds, framework overhead per call, and at large batches the memory a running network
allocates and streams through for every tensor it writes (a layer runs slower inside the
network than alone, much of it page faults on fresh tensors, which prunesearch/allocator.py
now spares the process). So the prediction is calibrated on a few built subnetworks (each
timed as a ratio to the dense model in alternating turns, times the dense model's median):
latency = a * table sum + w * elements written + b * kept calls + c, non-negative least
squares; the elements-written term carries the large-batch memory traffic. How well the
prediction and each term do is measured in benchmarks/latency_model.py (benchmarks/README.md,
"Latency table accuracy").
Tables are cached on disk by (device, torch version, threads, batch, malloc settings: see
prunesearch/allocator.py, the space's structure).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

from prunesearch.allocator import allocator_settings
from prunesearch.fileio import write_json
from prunesearch.latency.measure import latency_ratio, median_seconds, paired_seconds
from prunesearch.latency.runtimes import forward_call, runtime_version
from prunesearch.spaces import Arch, Space
from prunesearch.spaces.cost import record_calls
from prunesearch.spaces.layers import channels_last, side_size, slicer_for

log = logging.getLogger("prunesearch")
FORMAT = 2
CALIBRATION_ARCHS = 24
CALIBRATION_PAIRS = 8
MAX_COMBOS = 256  # channel pairs per layer call; more (wide concats) are scaled from dense


@dataclass(frozen=True)
class _Layer:
    """One layer call: how to rebuild it at other channel counts, and its dense input."""

    module: nn.Module
    kind: str
    in_shape: tuple[int, ...]  # dense input, batch of one
    template: str  # everything but the channel counts: identical layers share entries

    def replica(self, cin: int, cout: int) -> nn.Module:
        m = self.module
        if self.kind == "conv":
            # whole groups go, each keeping its input width (depthwise: one channel)
            groups = 1 if m.groups == 1 else m.groups * cin // m.in_channels
            transposed = {"output_padding": m.output_padding} if m.transposed else {}
            return type(m)(cin, cout, m.kernel_size, stride=m.stride, padding=m.padding,
                           dilation=m.dilation, groups=groups, bias=m.bias is not None,
                           padding_mode=m.padding_mode, **transposed)
        if self.kind == "linear":
            return nn.Linear(cin, cout, bias=m.bias is not None)
        if self.kind == "embedding":
            return nn.Embedding(m.num_embeddings, cout)
        replica = copy.deepcopy(m)  # activations and pooling hold no per-channel state
        cut = slicer_for(type(m))  # norms: cut to cin channels as the Slicer cuts them
        if cut is not None and cin != side_size(m, "out"):
            cut(replica, torch.arange(cin), None)
        return replica

    def input(self, cin: int, batch: int, device: torch.device) -> torch.Tensor:
        if self.kind == "embedding":  # indices: the dense call's, repeated over the batch
            return torch.zeros((batch, *self.in_shape[1:]), dtype=torch.long, device=device)
        shape = [batch, *self.in_shape[1:]]
        if len(shape) > 1:
            shape[-1 if channels_last(self.kind) else 1] = cin
        return torch.zeros(shape, device=device)


def device_fingerprint(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"cpu:{cpu}:{torch.get_num_threads()} threads"


class LatencyModel:
    """`predict(arch)`: microseconds of one forward of `batch` examples on the table's
    device; `meta` says how the table was made and how well the calibration fit."""

    def __init__(self, space: Space, templates: list[str], entries: dict[str, float],
                 coef: list[float], meta: dict[str, Any]) -> None:
        self.space = space
        self._templates = templates
        self._entries = entries
        self.coef = coef
        self.meta = meta
        self._grids: dict[tuple[int, tuple[int, ...], str], torch.Tensor] = {}  # expected()

    def features(self, arch: Arch) -> tuple[float, int, int]:
        """(sum of the kept calls' table entries in microseconds, elements the kept calls
        write per example, number of kept calls): what the calibration weighs."""
        calls = self.space.call_channels(arch)
        cost = self.space.cost.calls
        return (sum(self._entry(i, cin, cout) for i, cin, cout in calls),
                sum(cost[i].out.unit * cout for i, _, cout in calls), len(calls))

    def _entry(self, index: int, cin: int, cout: int) -> float:
        """The timed entry of one call at (cin, cout); a call with more channel pairs than
        MAX_COMBOS was timed dense only, and its entry is scaled by the work it keeps."""
        call = self.space.cost.calls[index]
        if call.kind == "opaque":  # never cut: a constant the calibration's intercept holds
            return 0.0
        entry = self._entries.get(f"{self._templates[index]}|{cin}|{cout}")
        if entry is not None:
            return entry
        dense = self._entries[f"{self._templates[index]}|{call.inp.full}|{call.out.full}"]
        kept = cout / call.out.full
        if call.kind in ("conv", "linear") and call.groups == 1:
            kept *= cin / call.inp.full
        return dense * kept

    def expected(self, probs: dict[int, torch.Tensor]) -> torch.Tensor:
        """E[predicted latency] in microseconds under independent distributions over the
        choices of the dimensions in `probs` (width: channel counts; depth: blocks kept; a
        dimension not given stays full): differentiable in `probs`, and equal to `predict`
        for one-hot distributions. TAS's latency loss."""
        kept = {d: self.space.block_kept(d, p) for d, p in probs.items()
                if self.space.dims[d].kind == "depth"}
        total = written = calls = torch.zeros(())
        for i, call in enumerate(self.space.cost.calls):
            runs = (kept[call.block[0]][call.block[1]]
                    if call.block is not None and call.block[0] in kept else 1.0)
            total = total + runs * self._expected(i, probs, "entry")
            written = written + runs * self._expected(i, probs, "written")
            calls = calls + runs
        a, w, b, c = self.coef
        return a * total + w * written + b * calls + c

    def _expected(self, index: int, probs: dict[int, torch.Tensor], what: str) -> torch.Tensor:
        """E[table entry] (or E[elements written]) of one call over the distributions of the
        width dims it depends on: the values on the grid of their choices, contracted with
        each distribution."""
        dims = tuple(d for d in _width_dims(self.space, index) if d in probs)
        grid = self._grids.get((index, dims, what))
        if grid is None:
            unit = self.space.cost.calls[index].out.unit
            values = [self._entry(index, cin, cout) if what == "entry" else unit * cout
                      for cin, cout in _channels_over(self.space, index, dims)]
            shape = [len(self.space.dims[d].choices) for d in dims]
            grid = self._grids[(index, dims, what)] = torch.tensor(values).reshape(shape)
        out = grid
        for d in dims:  # contract the leading axis with that dimension's distribution
            out = torch.tensordot(probs[d].to(out.dtype), out, dims=([0], [0]))
        return out

    def predict(self, arch: Arch) -> float:
        return float(np.dot(self.coef, [*self.features(arch), 1.0]))

    def ratio(self, arch: Arch) -> float:
        """Predicted latency as a fraction of the full network's."""
        return self.predict(arch) / self.predict(self.space.largest())


def _layers(space: Space, model: nn.Module, batch: int) -> list[_Layer]:
    modules = dict(model.named_modules())
    shapes = [(name, s) for name, calls in record_calls(model, space.example).items()
              for s in calls]
    layers = []
    for call, (name, (in_shape, _)) in zip(space.cost.calls, shapes, strict=True):
        module = modules[name]
        settings = {k: v for k, v in vars(module).items()
                    if not k.startswith("_") and k not in ("training", "in_channels",
                                                           "out_channels", "in_features",
                                                           "out_features", "num_features",
                                                           "normalized_shape")}
        template = json.dumps([type(module).__name__, call.kind, list(in_shape[2:]),
                               len(in_shape), repr(sorted(settings.items())), batch])
        layers.append(_Layer(module, call.kind, tuple(in_shape), template))
    return layers


def _width_dims(space: Space, index: int) -> list[int]:
    """The width dimensions one call's channel counts depend on (cost-model slopes)."""
    call = space.cost.calls[index]
    return sorted({d for d, _ in call.inp.slopes} | {d for d, _ in call.out.slopes})


def _channels_over(space: Space, index: int,
                   dims: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(input, output) channels of one call at every combination of the choices of `dims`
    (the other dimensions full), in `itertools.product` order."""
    call = space.cost.calls[index]
    for values in itertools.product(*(space.dims[d].choices for d in dims)):
        lost = [0] * len(space.dims)
        for d, v in zip(dims, values, strict=True):
            lost[d] = space.dims[d].full - v
        yield call.inp.channels(lost), call.out.channels(lost)


def _channel_pairs(space: Space, index: int) -> set[tuple[int, int]]:
    """Every (input, output) channel count of one call over the choices of the width
    dimensions it depends on; none when there are more than MAX_COMBOS combinations."""
    dims = _width_dims(space, index)
    if np.prod([len(space.dims[d].choices) for d in dims]) > MAX_COMBOS:
        return set()
    return set(_channels_over(space, index, dims))


class _Clock:
    """Times layer replicas against one fixed reference layer, sampled in alternating pairs
    (`paired_seconds`): an entry is its median ratio to the reference times the reference's
    median over the whole table, so a machine that slows down while some entries are timed
    does not make those entries dearer than the rest."""

    def __init__(self, reference: nn.Module, x: torch.Tensor, device: torch.device,
                 runtime: str) -> None:
        self._reference = forward_call(reference, x, runtime)
        self._device, self._runtime = device, runtime
        self._seconds: list[float] = []

    def ratio(self, layer: _Layer, cin: int, cout: int, batch: int, repeats: int) -> float:
        module = layer.replica(cin, cout).to(self._device).eval()
        x = layer.input(cin, batch, self._device)
        run = forward_call(module, x, self._runtime)
        _, seconds, ratio = paired_seconds(run, self._reference, self._device,
                                           pairs=2, samples=repeats, warmup=2,
                                           min_sample_s=2e-4)
        self._seconds.append(seconds)
        return ratio

    @property
    def reference_us(self) -> float:
        return 1e6 * statistics.median(self._seconds)


def _reference_layer(space: Space, layers: list[_Layer], batch: int,
                     device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """The dense conv/linear call of median multiply-adds among them: timed beside every
    entry, so no dearer than a typical layer."""
    full = [0] * len(space.dims)
    computing = sorted((space.cost.calls[i].ops(full), i) for i in range(len(layers))
                       if space.cost.calls[i].kind in ("conv", "linear"))
    index = computing[len(computing) // 2][1]
    call, layer = space.cost.calls[index], layers[index]
    module = layer.replica(call.inp.full, call.out.full).to(device).eval()
    return module, layer.input(call.inp.full, batch, device)


ANCHOR_REPEATS = 20


def _reanchored(table: LatencyModel, model: nn.Module, batch: int, device: torch.device,
                runtime: str) -> LatencyModel:
    """A cached table put on the machine as it runs now: the dense model is timed again and
    every prediction scaled so the dense one matches it. A shared machine's speed moves
    between runs (benchmarks/README.md); ratios to dense, which the search and its limits
    use, do not change, the microseconds reported do."""
    x = torch.zeros(batch, *table.space.example.shape[1:], device=device)
    now_us = 1e6 * median_seconds(forward_call(model, x, runtime), device,
                                  repeats=ANCHOR_REPEATS, warmup=3)
    at_build = table.predict(table.space.largest())
    scale = now_us / at_build
    meta = {**table.meta, "anchor": {"dense_predicted_us_at_build": at_build,
                                     "dense_measured_us_now": now_us, "scale": scale}}
    return LatencyModel(table.space, table._templates, table._entries,
                        [c * scale for c in table.coef], meta)


def calibration_archs(space: Space, seed: int) -> list[Arch]:
    """Up to CALIBRATION_ARCHS distinct subnetworks: the largest, the smallest, the uniform
    sweep, then random ones (a space with fewer archs gives what it has: the draws are
    capped)."""
    rng = np.random.default_rng(seed)
    archs = dict.fromkeys([space.largest(), space.smallest(), *space.uniform_sweep()])
    for _ in range(50 * CALIBRATION_ARCHS):
        if len(archs) >= CALIBRATION_ARCHS:
            break
        archs.setdefault(space.sample(rng))
    return list(archs)[:CALIBRATION_ARCHS]


def cache_key(space: Space, layers: list[_Layer], device: torch.device, batch: int,
              runtime: str = "torch") -> str:
    made_of = {"format": FORMAT, "device": device_fingerprint(device),
               "allocator": allocator_settings(),
               "torch": torch.__version__, "batch": batch,
               "dims": [[d.name, list(d.choices)] for d in space.dims if d.kind != "density"],
               "layers": [layer.template for layer in layers]}
    if runtime != "torch":  # torch tables keep the keys they had before runtimes
        made_of["runtime"] = runtime_version(runtime)
    canonical = json.dumps(made_of, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def build_latency_model(space: Space, model: nn.Module, batch: int, device: torch.device,
                        cache_dir: Path | None = None, repeats: int = 4,
                        seed: int = 0, runtime: str = "torch") -> LatencyModel:
    """The latency table of `space` over `model` for `batch` on `device` in `runtime`
    (torch eager; onnxruntime: every layer and calibration network exported to ONNX and
    timed in onnxruntime on the CPU): from the cache, or measured (layers, then the
    calibration subnetworks) and cached. Weights do not matter, only the layers' types,
    settings and shapes."""
    from prunesearch.fileio import default_cache_dir

    model = model.eval()
    layers = _layers(space, model, batch)
    templates = [layer.template for layer in layers]
    key = cache_key(space, layers, device, batch, runtime)
    path = (cache_dir or default_cache_dir().parent / "latency") / f"{key}.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            cached = LatencyModel(space, templates, saved["entries"], saved["coef"],
                                  {**saved["meta"], "cached": True})
        except (ValueError, KeyError):
            log.warning("latency table %s is unreadable; measuring it again", path)
        else:
            return _reanchored(cached, model, batch, device, runtime)
    start = time.perf_counter()
    clock = _Clock(*_reference_layer(space, layers, batch, device), device, runtime)
    ratios: dict[str, float] = {}
    for i, layer in enumerate(layers):
        if layer.kind == "opaque":
            continue  # not timed alone (see LatencyModel._entry)
        pairs = _channel_pairs(space, i)
        call = space.cost.calls[i]
        dense = (call.inp.full, call.out.full)
        for cin, cout in sorted(pairs | {dense}):
            entry = f"{layer.template}|{cin}|{cout}"
            if entry not in ratios:
                ratios[entry] = clock.ratio(layer, cin, cout, batch, repeats)
    entries = {entry: ratio * clock.reference_us for entry, ratio in ratios.items()}
    table_s = time.perf_counter() - start
    slicer = space.slicer(model)
    shape = tuple(space.example.shape[1:])
    rows, ratios_to_dense, dense_ms = [], [], []
    for arch in calibration_archs(space, seed):
        # each as a ratio to the dense model timed alongside, times the dense model's median
        # over all of them: a machine that drifts while the subnetworks are timed does not
        # bend the fit
        _, dense, ratio = latency_ratio(slicer.build(arch).to(device), model, shape, batch,
                                        pairs=CALIBRATION_PAIRS, runtime=runtime)
        ratios_to_dense.append(ratio)
        dense_ms.append(dense)
        rows.append(arch)
    measured = 1000 * statistics.median(dense_ms) * np.array(ratios_to_dense)
    partial = LatencyModel(space, templates, entries, [1.0, 0.0, 0.0, 0.0], {})
    features = np.array([[*partial.features(a), 1.0] for a in rows])
    scale = features.max(axis=0)  # columns of one size: µs, elements, calls
    coef = nnls(features / scale, measured)[0] / scale
    fitted = features @ coef
    meta = {"device": device_fingerprint(device), "allocator": allocator_settings(),
            "batch": batch, "torch": torch.__version__, "runtime": runtime_version(runtime),
            "dense_measured_us": 1000 * statistics.median(dense_ms),
            "entries": len(entries), "calibration_archs": len(rows),
            "calibration_median_abs_error": float(np.median(np.abs(fitted / measured - 1))),
            "table_s": table_s, "total_s": time.perf_counter() - start, "key": key,
            "cached": False}
    write_json(path, {"entries": entries, "coef": coef.tolist(), "meta": meta})
    log.info("latency table for batch %d: %d entries, %.0f s", batch, len(entries),
             meta["total_s"])
    return LatencyModel(space, templates, entries, coef.tolist(), meta)
