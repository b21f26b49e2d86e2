"""The latency table: covers every subnetwork of a space, caches on disk by what it depends on.
How well it predicts is measured in benchmarks/latency_model.py, never timed here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prunesearch.config import SpaceConfig
from prunesearch.latency import build_latency_model
from prunesearch.models import build_model
from prunesearch.pipeline import space_of

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
    # the smallest keeps fewer calls with fewer channels: its table sum cannot be larger
    assert table.table_sum(space.smallest())[0] < table.table_sum(space.largest())[0]

    again = build_latency_model(space, model, 2, CPU, cache_dir=tmp_path, repeats=1)
    assert again.meta["cached"] and [again.predict(a) for a in archs] == predicted
    other_batch = build_latency_model(space, model, 3, CPU, cache_dir=tmp_path, repeats=1)
    assert other_batch.meta["key"] != table.meta["key"]
    assert len(list(tmp_path.glob("*.json"))) == 2


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
    assert table.table_sum(space.smallest())[0] < table.table_sum(space.largest())[0]
