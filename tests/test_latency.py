"""The latency table: covers every subnetwork of a space, caches on disk by what it depends on.
How well it predicts is measured in benchmarks/latency_model.py, never timed here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from prunesearch.app.prepare import space_of
from prunesearch.latency import build_latency_model
from prunesearch.latency.gate import NEAR, LatencyGate
from prunesearch.models import build_model
from prunesearch.spaces.options import SpaceConfig

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_small"])
def test_table_predicts_every_subnetwork_and_is_cached(name, tmp_path):
    model = build_model(name, (1, 28, 28), 10, 0.5).eval()
    space = space_of(SpaceConfig(), model, torch.zeros(1, 1, 28, 28))
    table = build_latency_model(space, model, 2, CPU, cache_dir=tmp_path, repeats=1)
    assert not table.meta["cached"] and table.meta["calibration_archs"] >= 8
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(25)]
    predicted = [table.predict(a) for a in archs]  # a missing table entry would raise
    assert all(math.isfinite(p) and p > 0 for p in predicted)
    assert table.ratio(space.largest()) == pytest.approx(1.0)
    # the smallest drops blocks and channels: fewer calls, fewer elements written (single
    # timings are too noisy on a busy machine to compare the table sums at one repeat)
    small, large = table.features(space.smallest()), table.features(space.largest())
    assert small[2] < large[2] and small[1] < large[1]

    again = build_latency_model(space, model, 2, CPU, cache_dir=tmp_path, repeats=1)
    assert again.meta["cached"]  # re-anchored: the dense model timed again, ratios kept
    anchor = again.meta["anchor"]
    assert anchor["dense_measured_us_now"] > 0
    assert again.predict(space.largest()) == pytest.approx(anchor["dense_measured_us_now"])
    assert [again.ratio(a) for a in archs] == pytest.approx([table.ratio(a) for a in archs])
    other_batch = build_latency_model(space, model, 3, CPU, cache_dir=tmp_path, repeats=1)
    assert other_batch.meta["key"] != table.meta["key"]
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_table_replicas_rebuild_each_call_with_its_shapes():
    """A replica at the dense channel counts computes the dense call's output shape, for a
    transposed convolution's output_padding too (the table times what the network runs); at
    the narrowest architecture's counts it runs with them (a GroupNorm keeps whole groups)."""
    from torch import nn

    from prunesearch.latency.table import _layers
    from prunesearch.spaces import Space

    model = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.GroupNorm(4, 8), nn.ReLU(),
                          nn.ConvTranspose2d(8, 6, 3, 2, 1, output_padding=1),
                          nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 10, 1)).eval()
    example = torch.zeros(1, 1, 8, 8)
    space = Space.from_model(model, example)
    assert sorted(d.name for d in space.dims) == ["width:1", "width:3"]  # 1: norm groups
    narrow = {i: (cin, cout) for i, cin, cout in space.call_channels(space.smallest())}
    for i, (layer, call) in enumerate(zip(_layers(space, model, 1), space.cost.calls,
                                          strict=True)):
        replica = layer.replica(call.inp.full, call.out.full)
        with torch.no_grad():
            expected = layer.module(layer.input(call.inp.full, 1, CPU))
            assert replica(layer.input(call.inp.full, 1, CPU)).shape == expected.shape
            cin, cout = narrow[i]
            assert layer.replica(cin, cout)(layer.input(cin, 1, CPU)).shape[1] == cout


class _ConvGRU(torch.nn.Module):
    """Two convolutions, then a GRU reading the columns: an opaque layer, never cut."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.rnn = nn.GRU(8 * 8, 16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.stem(x).permute(0, 3, 1, 2).flatten(2)
        return self.head(self.rnn(seq)[0][:, -1])


def test_a_table_over_a_network_with_a_recurrent_layer_predicts_it_as_a_constant(tmp_path):
    """The GRU is counted by torch-pruning's rule (MACs equal its count) and is not timed
    alone: the calibration's intercept holds it, every subnetwork keeps it."""
    import torch_pruning as tp

    from prunesearch.spaces import Space

    model, example = _ConvGRU().eval(), torch.zeros(1, 1, 8, 8)
    space = Space.from_model(model, example)
    assert [d.name for d in space.dims] == ["width:stem.0"]
    assert any(name == "stem.2" for name, _ in space.kept_whole)  # the GRU reads it
    assert space.dense_macs == tp.utils.count_ops_and_params(model, example)[0]
    table = build_latency_model(space, model, 1, CPU, cache_dir=tmp_path, repeats=1)
    assert not any(key.startswith('["GRU"') for key in table._entries)
    for arch in (space.smallest(), space.largest()):
        assert math.isfinite(table.predict(arch)) and table.predict(arch) > 0


def test_an_onnxruntime_table_times_exported_layers_and_is_kept_apart(tmp_path):
    """search.latency_runtime = onnxruntime: layers and calibration networks run as ONNX in
    onnxruntime; the table predicts every subnetwork and is cached under its own key."""
    from prunesearch.latency.runtimes import forward_call

    model = build_model("mlp", (1, 8, 8), 10, 0.25).eval()  # few layers: few exports
    space = space_of(SpaceConfig(width_ratios=[0.5, 1.0]), model, torch.zeros(1, 1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    got = forward_call(model, x, "onnxruntime")()[0]  # the runtime runs the same network
    assert np.allclose(got, model(x).detach().numpy(), atol=1e-4)
    table = build_latency_model(space, model, 1, CPU, cache_dir=tmp_path, repeats=1,
                                runtime="onnxruntime")
    assert table.meta["runtime"].startswith("onnxruntime") and not table.meta["cached"]
    archs = [space.sample(np.random.default_rng(i)) for i in range(10)]
    assert all(math.isfinite(table.predict(a)) and table.predict(a) > 0 for a in archs)
    eager = build_latency_model(space, model, 1, CPU, cache_dir=tmp_path, repeats=1)
    assert eager.meta["key"] != table.meta["key"] and len(list(tmp_path.glob("*.json"))) == 2


def test_calls_with_too_many_channel_pairs_are_scaled_from_their_dense_entry(tmp_path,
                                                                              monkeypatch):
    from prunesearch.latency import table as latency_table

    monkeypatch.setattr(latency_table, "MAX_COMBOS", 1)  # every multi-choice call: dense only
    model = build_model("resnet20", (1, 28, 28), 10, 0.5).eval()
    space = space_of(SpaceConfig(), model, torch.zeros(1, 1, 28, 28))
    table = build_latency_model(space, model, 1, CPU, cache_dir=tmp_path, repeats=1)
    assert table.meta["entries"] <= len(space.cost.calls)
    archs = [space.sample(np.random.default_rng(i)) for i in range(5)]
    assert all(math.isfinite(table.predict(a)) for a in archs)
    assert table.features(space.smallest())[0] < table.features(space.largest())[0]


TINY = Path(__file__).parent / "configs" / "tiny.toml"


def test_a_run_searched_on_latency_keeps_its_limit_and_exports_by_it(tmp_path):
    """search.objective = latency: candidates record the table's prediction, none over
    search.max_latency is recorded (the dense arch of the uniform sweep is refused), the front,
    fine-tuning targets and `export --max-latency` are latency ratios, and the plot draws
    either axis."""
    import json

    from prunesearch.app.config import load_config
    from prunesearch.app.export import export_run
    from prunesearch.app.run import run_job
    from prunesearch.runs.journal import read_journal
    from prunesearch.runs.rundir import RunView

    cfg = load_config(TINY, ["search.objective=latency", "search.max_latency=0.8",
                             "search.latency_batch=2",
                             "finetune.targets=[0.7]", "finetune.epochs=1"])
    run = run_job(cfg, tmp_path / "runs", progress=False).run_dir
    summary = json.loads((run / "summary.json").read_text())
    dense = summary["dense"]["latency_us"]
    assert summary["objective"] == "latency" and dense > 0
    assert summary["latency_table"]["batch"] == 2
    results = [c.result for c in read_journal(run / "candidates.csv")]
    assert results and all(r.latency_us is not None for r in results)
    limit = summary["latency_limit"]  # 0.8 measured, held as the table predicts it
    assert limit["target"] == 0.8
    assert limit["predicted_ratio"] == pytest.approx(0.8 / limit["scale"])
    # near the limit a measurement decides (a candidate predicted up to NEAR[1] x may fit)
    assert limit["candidates_measured"] >= limit["measured_over"] >= 0
    assert limit["candidates_measured"] > 0
    assert max(r.latency_us for r in results) <= NEAR[1] * limit["predicted_ratio"] * dense
    if limit["predicted_ratio"] < 1:
        assert all(r.macs < summary["dense"]["macs"] for r in results)  # full width refused
    view = RunView.load(run)
    costs = [point.cost_ratio for point in view.front]
    assert costs == sorted(costs) and all(c == pytest.approx(point.latency_us / dense, abs=1e-5)
                                          for c, point in zip(costs, view.front, strict=True))
    tuned = view.final_points
    assert len(tuned) == 1
    chosen = next(point for point in view.front if point.id == tuned[0]["id"])
    assert chosen.cost_ratio <= 0.7
    assert view.series("macs").axis == "macs" and view.series().axis == "latency"

    folder = export_run(run, None, ("latency", 0.75), ["pt"], tmp_path / "exp", progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    predicted = meta["latency"]["predicted"]
    pick = meta["latency"]["pick"]  # re-measured now, best proxy first: the first that fits
    assert pick["limit"] == 0.75 and pick["batch"] == 2 and pick["runtime"] == "torch"
    assert pick["measured"][-1]["id"] == meta["id"]
    assert pick["measured"][-1]["measured_ratio"] <= 0.75
    assert all(m["measured_ratio"] > 0.75 for m in pick["measured"][:-1])
    scores = [m["val_score"] for m in pick["measured"]]
    assert scores == sorted(scores, reverse=True)
    assert predicted["ratio_to_dense"] <= 1.15 * 0.75 and "batch_2_ms" in predicted
    measured = meta["latency"]["model"]  # beside the prediction, at its batch too
    assert sorted(measured) == ["batch_1_ms", "batch_2_ms", "batch_64_ms"]
    dense_now = meta["latency"]["dense"]["batch_2_ms"]
    assert predicted["batch_2_ms_anchored"] == pytest.approx(predicted["ratio_to_dense"]
                                                             * dense_now)


def test_a_macs_run_has_no_latency_axis_and_dass_cannot_search_latency(tmp_path):
    from prunesearch.app.config import load_config
    from prunesearch.app.run import run_job
    from prunesearch.errors import UserError
    from prunesearch.runs.rundir import RunView

    run = run_job(load_config(TINY, ["finetune.enabled=false"]), tmp_path / "runs",
                  progress=False).run_dir
    with pytest.raises(UserError, match="recorded no predicted latency"):
        RunView.load(run).series("latency")
    cfg = load_config(TINY, ["name=t", "search.strategy=dass", "search.objective=latency"])
    with pytest.raises(UserError, match="'dass' trades accuracy against macs only"):
        run_job(cfg, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / "t").exists()


def test_a_latency_limit_no_architecture_meets_is_refused_before_the_search(tmp_path):
    from prunesearch.app.config import load_config
    from prunesearch.app.run import run_job
    from prunesearch.errors import UserError

    cfg = load_config(TINY, ["name=fast", "search.objective=latency",
                             "search.max_latency=0.001"])
    with pytest.raises(UserError, match=r"search.max_latency = 0.001 .* the fastest, .* is "
                                        r"predicted at 0\.\d+ of dense"):
        run_job(cfg, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / "fast").exists()  # nothing half-written


def test_a_near_limit_supernet_trains_on_subnetworks_the_table_puts_near_the_limit(
        tmp_path, monkeypatch):
    from prunesearch.app.config import load_config
    from prunesearch.app.prepare import prepare

    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path / "cache"))
    cfg = load_config(TINY, ["search.objective=latency", "search.max_latency=0.6",
                             "search.latency_batch=2", "supernet.epochs=1",
                             "supernet.max_train_images=64", "supernet.sample=near-limit"])
    prep = prepare(cfg, CPU, progress=False)
    meta = prep.supernet_meta
    assert meta is not None and not meta["cached"]
    assert 0 < meta["near_limit_subnets"] < 20_000  # a part of the space, not all of it
    assert prep.latency is not None and prep.gate is not None
    again = prepare(cfg, CPU, progress=False)
    assert again.supernet_meta["cached"] and again.supernet_meta["key"] == meta["key"]


def test_the_limit_is_corrected_by_networks_measured_near_it(tmp_path):
    """Up to 8 networks the table predicts within 0.8-1.2 x the limit are timed; the limit
    moves by their median measured / predicted ratio; with too few near it, it stays."""
    import statistics

    from prunesearch.latency.limit import LIMIT_ARCHS, measured_limit, near_limit

    model = build_model("resnet20", (1, 28, 28), 10, 0.5).eval()
    space = space_of(SpaceConfig(), model, torch.zeros(1, 1, 28, 28))
    table = build_latency_model(space, model, 1, CPU, cache_dir=tmp_path, repeats=1)
    archs = near_limit(table, 0.5, seed=0)
    assert 3 <= len(archs) <= LIMIT_ARCHS and len(set(archs)) == len(archs)
    assert all(0.4 <= table.ratio(a) <= 0.6 for a in archs)
    assert archs == near_limit(table, 0.5, seed=0)  # seeded
    limit = measured_limit(table, model, 0.5, 1, CPU, "torch", seed=0)
    assert [p for p, _ in limit.measured] == [table.ratio(a) for a in archs]
    assert all(m > 0 for _, m in limit.measured)
    assert limit.scale == statistics.median(m / p for p, m in limit.measured)
    assert limit.predicted_ratio == pytest.approx(0.5 / limit.scale)
    nothing = measured_limit(table, model, 0.01, 1, CPU, "torch", seed=0)
    assert nothing.scale == 1.0 and not nothing.measured and nothing.predicted_ratio == 0.01


def test_the_gate_measures_only_near_the_limit_and_the_measurement_decides_there():
    """Far under the limit a candidate fits and far over it is refused, as predicted, with no
    timing; near it the measured ratio decides, both ways, and each arch is timed once."""
    space = space_of(SpaceConfig(), build_model("resnet20", (1, 28, 28), 10, 0.5).eval(),
                     torch.zeros(1, 1, 28, 28))
    archs = {name: space.sample(np.random.default_rng(seed))
             for seed, name in enumerate(["fast", "near_fits", "near_slow", "slow"])}
    predicted = {"fast": 100.0, "near_fits": 1.2e3, "near_slow": 0.9e3, "slow": 2e3}
    measured_ratio = {"near_fits": 0.45, "near_slow": 0.55}
    name_of = {a: n for n, a in archs.items()}
    timed: list[str] = []

    def measure(arch):
        timed.append(name_of[arch])
        return measured_ratio[name_of[arch]]

    gate = LatencyGate(lambda a: predicted[name_of[a]], 1e3, 0.5, measure)
    assert gate.over(archs["fast"]) is None
    assert "predicted" in gate.over(archs["slow"])
    assert gate.over(archs["near_fits"]) is None  # predicted over, measured under
    assert "measured latency 0.550" in gate.over(archs["near_slow"])
    gate.over(archs["near_slow"])
    assert timed == ["near_fits", "near_slow"]
    assert gate.to_dict() == {"candidates_measured": 2, "measured_over": 1}
    table_only = LatencyGate(lambda a: predicted[name_of[a]], 1e3, 0.5)
    assert table_only.over(archs["near_slow"]) is None and "predicted" in table_only.over(
        archs["near_fits"])


def test_expected_latency_equals_the_prediction_for_one_hot_choices(tmp_path):
    """TAS's latency loss: differentiable in the distributions, exact at one-hot ones."""
    model = build_model("resnet20", (1, 28, 28), 10, 0.5).eval()
    space = space_of(SpaceConfig(), model, torch.zeros(1, 1, 28, 28))
    table = build_latency_model(space, model, 1, CPU, cache_dir=tmp_path, repeats=1)
    rng = np.random.default_rng(1)
    for arch in [space.sample(rng) for _ in range(4)] + [space.smallest(), space.largest()]:
        probs = {d: torch.nn.functional.one_hot(torch.tensor(g), len(space.dims[d].choices))
                 .float() for d, g in enumerate(space.encode(arch))}
        assert float(table.expected(probs)) == pytest.approx(table.predict(arch), rel=1e-5)
    logits = {d: torch.zeros(len(dim.choices), requires_grad=True)
              for d, dim in enumerate(space.dims)}
    expected = table.expected({d: torch.softmax(v, 0) for d, v in logits.items()})
    expected.backward()
    assert any(v.grad.abs().sum() > 0 for v in logits.values())
    # between the smallest and the largest prediction, as an expectation must be
    assert table.predict(space.smallest()) < float(expected) < table.predict(space.largest())


def test_tas_searches_a_latency_target(tmp_path):
    import json

    from prunesearch.app.config import load_config
    from prunesearch.app.run import run_job

    cfg = load_config(TINY, ["search.strategy=tas", "search.objective=latency",
                             "search.tas.targets=[0.7]", "search.tas.epochs=1",
                             "search.tas.max_train_images=128", "finetune.enabled=false"])
    run = run_job(cfg, tmp_path / "runs", progress=False).run_dir
    record = json.loads((run / "tas_history.json").read_text())["0.7"]
    assert [e["cost"] for e in record["epochs"]] == ["latency"]
    epoch = record["epochs"][0]
    assert 0 < epoch["expected_ratio"] <= 1 and 0 < epoch["argmax_ratio"] <= 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["objective"] == "latency" and summary["n_evals"] == 1


def test_latency_ratio_times_both_models_and_divides():
    import time as time_module

    from prunesearch.latency import latency_ratio

    class Sleeper(torch.nn.Module):
        def __init__(self, seconds: float) -> None:
            super().__init__()
            self.seconds = seconds
            self.weight = torch.nn.Parameter(torch.zeros(1))  # a device to be found on

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time_module.sleep(self.seconds)
            return x

    slow, fast = Sleeper(0.02), Sleeper(0.002)
    slow_ms, fast_ms, ratio = latency_ratio(slow, fast, (1,), 1, pairs=3)
    assert slow_ms >= 20.0 and fast_ms >= 2.0  # sleep is a floor
    assert ratio == pytest.approx(slow_ms / fast_ms, rel=0.5) and ratio > 2
