from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunesearch.data import load_dataset
from prunesearch.evaluators import WeightSharingEvaluator, recalibrate_batchnorm
from prunesearch.models import create_model
from prunesearch.models.options import TrainConfig
from prunesearch.scoring import evaluate_accuracy
from prunesearch.spaces import Space
from prunesearch.training import train_model


@pytest.fixture(scope="module")
def trained():
    data = load_dataset("synthetic", seed=0)
    torch.manual_seed(0)
    model = create_model("resnet20", 1, data.num_classes, width_mult=0.5)
    train_model(model, data, TrainConfig(epochs=3, batch_size=64), seed=0,
                device=torch.device("cpu"), progress=False)
    model.eval()
    space = Space.from_model(model, data.train_x[:1])
    return data, model, space


def test_recalibrated_statistics_are_the_calibration_average():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    batches = [torch.randn(8, 1, 6, 6) for _ in range(3)]
    recalibrate_batchnorm(net, batches)
    with torch.no_grad():
        feats = torch.cat([net[0](b) for b in batches])
    torch.testing.assert_close(net[1].running_mean, feats.mean((0, 2, 3)))
    assert not net.training


def test_adaptive_bn_beats_stale_statistics_on_a_slim_candidate(trained):
    data, model, space = trained
    evaluator = WeightSharingEvaluator(space, model, data.train_x[:256], data.val_x, data.val_y)
    arch = space.uniform(0.25)
    stale = evaluator.slicer.build(arch).eval()
    stale_acc = evaluate_accuracy(stale, data.val_x, data.val_y)
    fresh_acc = evaluator.evaluate([arch])[0].val_score
    assert fresh_acc > stale_acc


def test_dense_arch_scores_like_the_dense_model(trained):
    data, model, space = trained
    evaluator = WeightSharingEvaluator(space, model, data.train_x[:256], data.val_x, data.val_y)
    dense_acc = evaluate_accuracy(model, data.val_x, data.val_y)
    assert evaluator.evaluate([space.largest()])[0].val_score == pytest.approx(dense_acc, abs=0.05)
    assert dense_acc > 0.6  # the synthetic task is learnable: the fixture trained something


def test_results_are_cached_and_failures_recorded(trained):
    data, model, space = trained

    class Flaky(WeightSharingEvaluator):
        calls = 0

        def _score(self, arch):
            Flaky.calls += 1
            if arch == space.smallest():
                raise RuntimeError("out of memory (simulated)")
            return super()._score(arch)

    evaluator = Flaky(space, model, data.train_x[:128], data.val_x, data.val_y)
    archs = [space.sample(np.random.default_rng(0)), space.smallest()]
    first = evaluator.evaluate(archs)
    again = evaluator.evaluate(archs)
    assert Flaky.calls == 2 and first == again
    assert first[0].ok and not first[1].ok and "simulated" in first[1].error
    assert first[1].macs == space.macs(space.smallest())
