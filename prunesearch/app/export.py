"""`prunesearch export`: a front point (by id, or the best under a MACs or latency ratio) as a
real, smaller model: files checked against the sliced network, with its measured CPU latency
beside the dense model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.allocator import allocator_settings
from prunesearch.app.config import load_config
from prunesearch.app.finetune import variant_name
from prunesearch.app.prepare import Given, Prepared, prepare
from prunesearch.config import RunConfig
from prunesearch.errors import UserError
from prunesearch.front import FrontPoint
from prunesearch.latency.measure import latency_ratio
from prunesearch.latency.runtimes import runtime_version
from prunesearch.objective import CostAxis
from prunesearch.runs.export import (
    FORMATS,
    GIVEN_MODEL,
    build_slim,
    check_export_folder,
    check_onnx_installed,
    write_export,
)
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.rundir import RunView


def choose_export_point(view: RunView, point_id: int | None,
                        limit: tuple[str, float] | None) -> FrontPoint:
    """The candidate to export: by id (any successful candidate), or the most accurate front
    point (test accuracy when fine-tuned, else proxy) at or under `limit`, a (cost axis,
    ratio of the dense model's) pair: ("macs", 0.5) is --max-flops 0.5."""
    if (point_id is None) == (limit is None):
        raise UserError("Pass exactly one of --id N, --max-flops RATIO or --max-latency RATIO.")
    if point_id is not None:
        if not any(c.id == point_id and c.result.ok for c in view.candidates):
            raise UserError(f"Run '{view.path}' has no successful candidate with id {point_id} "
                            f"(ids 0..{len(view.candidates) - 1}; see candidates.csv or "
                            f"`prunesearch show`).")
        test = {p["id"]: p["test_score"] for p in view.final_points}
        return view.candidate_points([point_id])[0].with_test_score(test.get(point_id))
    name, max_ratio = limit
    under = _front_under(view, name, max_ratio, max_ratio)
    return max(under, key=lambda p: (p.test_score is not None, p.test_score or p.val_score))


def _front_under(view: RunView, name: str, max_ratio: float, asked: float) -> list[FrontPoint]:
    """The front points at most `max_ratio` of the dense model's cost on axis `name`; a
    UserError naming the `asked` limit when there are none."""
    if not view.front:
        raise UserError(f"Run '{view.path}' has no front point (none of its "
                        f"{len(view.candidates)} candidates succeeded): nothing to export. See "
                        f"its log.txt, and run the search again with a looser limit.")
    axis = view.axis(name)
    under = [p for p in view.front if axis.ratio(p) <= max_ratio]
    if not under:
        smallest = min(axis.ratio(p) for p in view.front)
        option = "--max-flops" if name == "macs" else f"--max-{name}"
        raise UserError(f"No front point of '{view.path}' has at most {asked} of the dense "
                        f"model's {axis.label} (the smallest has {smallest:.3f}); raise "
                        f"{option}.")
    return under


NEAR = 1.15  # a latency pick re-measures the front points predicted at most NEAR x the limit
PICK_CANDIDATES = 8  # ... the best PICK_CANDIDATES of them by proxy score


def latency_candidates(view: RunView, max_ratio: float) -> list[FrontPoint]:
    """The front points a pick under a latency limit re-measures, best proxy first: those the
    table predicts at most NEAR x the limit (predictions drift with the machine's phase, so
    a point predicted a little over may measure under, and one predicted under may not),
    the prediction corrected as the run corrected its search.max_latency."""
    scale = (view.summary.get("latency_limit") or {}).get("scale", 1.0)
    near = _front_under(view, "latency", NEAR * max_ratio / scale, max_ratio)
    return sorted(near, key=lambda p: p.val_score, reverse=True)[:PICK_CANDIDATES]


def measured_pick(points: list[FrontPoint], prep: Prepared, cfg: RunConfig, max_ratio: float,
                  axis: CostAxis) -> tuple[FrontPoint, dict[str, Any]]:
    """The best proxy point whose latency MEASURED now, in the run's runtime and batch and in
    turns with the dense model, is within the limit; with every measurement beside its
    prediction. A UserError when none fits."""
    slicer = prep.space.slicer(prep.model)  # latency does not depend on the weights
    runtime, batch = cfg.search.latency_runtime, cfg.search.latency_batch
    shape = tuple(prep.data.input_shape)
    measured = []
    for point in points:
        _, _, ratio = latency_ratio(slicer.build(point.arch), prep.model, shape, batch,
                                    pairs=20 if batch == 1 else 8, runtime=runtime)
        measured.append({"id": point.id, "predicted_ratio": axis.ratio(point),
                         "measured_ratio": ratio, "val_score": point.val_score})
        if ratio <= max_ratio:  # best proxy first: the first that fits is the pick
            return point, {"limit": max_ratio, "runtime": runtime, "batch": batch,
                           "measured": measured}
    shown = ", ".join(f"#{m['id']} {m['measured_ratio']:.3f}" for m in measured)
    raise UserError(f"None of the {len(points)} best front points predicted near {max_ratio} "
                    f"of the dense model's latency measures under it now ({shown}); raise "
                    f"--max-latency, or search again with a lower search.max_latency.")


def _predicted_latency(view: RunView, point: FrontPoint, cfg: RunConfig,
                       dense_now_ms: float) -> dict[str, Any] | None:
    """What the run's latency table predicted for the point (None: the run predicted none),
    in the table's microseconds and anchored on the dense model as the export timed it: a
    shared machine's speed moves between the table's building and now (benchmarks/README.md),
    which the ratio survives and the microseconds do not. The table's device may differ from
    the CPU the export measures on."""
    dense = view.summary["dense"].get("latency_us")
    if point.latency_us is None or not dense:
        return None
    table = view.summary.get("latency_table") or {}
    ratio, batch = point.latency_us / dense, cfg.search.latency_batch
    return {f"batch_{batch}_ms": point.latency_us / 1000, "ratio_to_dense": ratio,
            f"batch_{batch}_ms_anchored": ratio * dense_now_ms,
            "table_device": table.get("device")}


def measured_latency(model: nn.Module, dense: nn.Module, shape: tuple[int, ...],
                     batches: list[int], runtime: str
                     ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Milliseconds of the model and the dense model per batch size, and their ratio, timed
    in alternating pairs in `runtime` (CPU)."""
    model_ms, dense_ms, ratio = {}, {}, {}
    for b in batches:
        key = f"batch_{b}_ms"
        model_ms[key], dense_ms[key], ratio[key] = latency_ratio(
            model, dense, shape, b, pairs=20 if b == 1 else 8, runtime=runtime)
    return model_ms, dense_ms, ratio


def export_spec(cfg: RunConfig, prep: Prepared, point: FrontPoint,
                given: Given | None) -> dict[str, Any]:
    """arch.json: what rebuilds the module (a given network's name marks that `load` needs
    that network passed in again), and how its inputs were normalised in training."""
    model = GIVEN_MODEL if given is not None and given.model is not None else cfg.model.name
    return {"model": model, "width_mult": cfg.model.width_mult,
            "input_shape": list(prep.data.input_shape), "num_classes": prep.data.num_classes,
            "arch": point.arch.to_dict(),
            "input_normalization": prep.data.input_normalization()}


def slim_model(run_dir: Path, cfg: RunConfig, prep: Prepared, point: FrontPoint,
               spec: dict[str, Any], given: Given | None) -> tuple[nn.Module, str]:
    """The point as a physically smaller module: its fine-tuned weights when the run's
    variant trained it, else the sliced weights the search scored (BatchNorm recalibrated)."""
    tuned = [r for r in read_finetuned(run_dir)
             if r["id"] == point.id and r["variant"] == variant_name(cfg)]
    if tuned:
        state = torch.load(run_dir / tuned[0]["weights"], map_location="cpu", weights_only=True)
        full = given.model if given is not None else None
        return build_slim(spec, state, full), f"fine-tuned ({tuned[0]['variant']})"
    return (prep.evaluator.build(point.arch),
            "sliced dense weights, BatchNorm recalibrated (not fine-tuned)")


def export_run(run_dir: Path, point_id: int | None, limit: tuple[str, float] | None,
               formats: list[str], out: Path | None, progress: bool = True,
               given: Given | None = None) -> Path:
    """`prunesearch export`: the chosen point as files (on the CPU), with checks and latency."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UserError(f"--format takes a comma list of {', '.join(FORMATS)}; got {formats}.")
    if "onnx" in formats:
        check_onnx_installed()
    view = RunView.load(run_dir)
    by_latency = limit is not None and limit[0] == "latency"
    folder = out
    if by_latency:  # re-measured once the dense model is ready; write_export checks its folder
        near = latency_candidates(view, limit[1])
    else:
        point = choose_export_point(view, point_id, limit)
        folder = out if out is not None else run_dir / "export" / str(point.id)
    if folder is not None:  # before the dense model is loaded: a bad folder fails at once
        check_export_folder(folder)
    cfg = load_config(run_dir / "config.toml", run_dir=run_dir)
    prep = prepare(cfg, torch.device("cpu"), progress, latency_table=False, given=given)
    pick = None
    if by_latency:
        point, pick = measured_pick(near, prep, cfg, limit[1], view.axis("latency"))
        folder = out if out is not None else run_dir / "export" / str(point.id)
    spec = export_spec(cfg, prep, point, given)
    model, source = slim_model(run_dir, cfg, prep, point, spec, given)

    batches = sorted({1, 64, cfg.search.latency_batch})  # and the batch the run predicted
    shape = tuple(prep.data.input_shape)
    latency, dense_latency, ratio = measured_latency(model, prep.model, shape, batches, "torch")
    runtimes = {"torch": runtime_version("torch")}
    if "onnx" in formats:  # timed as deployed: both networks exported and run by onnxruntime
        ort_model, ort_dense, ort_ratio = measured_latency(model, prep.model, shape, batches,
                                                           "onnxruntime")
        runtimes["onnxruntime"] = runtime_version("onnxruntime")
    meta = {
        "id": point.id, "source": source, "run": str(run_dir), "arch": point.arch.to_dict(),
        "macs": point.macs, "params": point.params, "macs_ratio": point.macs_ratio,
        "proxy_val_score": point.val_score,
        "test_score": prep.data.task.score(model, prep.data.test_x, prep.data.test_y),
        "metric": prep.data.task.metric.to_json(),
        "dense": {"macs": prep.space.dense_macs, "test_score": prep.dense_meta.get("test_score")},
        "latency": {"device": "cpu", "threads": torch.get_num_threads(),
                    "allocator": allocator_settings(),
                    "statistic": "medians over turns alternating with the dense model (a turn: "
                                 "one untimed forward, then the median of 2 timed ones); the "
                                 "ratio is the median of the per-pair ratios",
                    "model": latency, "dense": dense_latency, "ratio_to_dense": ratio,
                    "runtimes": runtimes, "pick": pick,
                    "predicted": _predicted_latency(
                        view, point, cfg, dense_latency[f"batch_{cfg.search.latency_batch}_ms"])},
    }
    if "onnx" in formats:
        meta["latency"]["onnxruntime"] = {"model": ort_model, "dense": ort_dense,
                                          "ratio_to_dense": ort_ratio}
    full = given.model if given is not None else None
    write_export(model, spec, meta, folder, formats, prep.data.val_x[:8].cpu(), full)
    return folder
