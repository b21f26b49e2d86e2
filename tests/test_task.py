"""A user's own task ([task] loss and metric): a segmentation network scored by mean IoU runs
through search, fine-tuning and export with labels per pixel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunesearch
from prunesearch.app.config import load_config
from prunesearch.app.prepare import load_run_data
from prunesearch.data import RawDataset
from prunesearch.errors import ConfigError, UserError
from prunesearch.metrics import metric_from_json
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal

TESTS = Path(__file__).parent
TINY = TESTS / "configs" / "tiny.toml"
SEGMENTATION = ["model.name=test_task:segmenter", "data.dataset=test_task:squares",
                "task.loss=test_task:pixel_cross_entropy", "task.metric=test_task:mean_iou",
                "data.val_size=60", "evaluator.val_images=60", "model.train.epochs=4",
                "model.train.lr=0.05", "finetune.targets=[0.6]", "finetune.epochs=1"]


def squares(seed: int = 0) -> RawDataset:
    """Noisy 12x12 images with one bright square each; the label of a pixel: inside it."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.zeros(n, 12, 12, dtype=torch.long)
        for i in range(n):
            side = int(torch.randint(3, 7, (1,), generator=gen))
            r, c = (int(v) for v in torch.randint(0, 12 - side + 1, (2,), generator=gen))
            y[i, r:r + side, c:c + side] = 1
        x = y[:, None].float() + 0.4 * torch.randn(n, 1, 12, 12, generator=gen)
        return x, y

    train_x, train_y = split(400)
    test_x, test_y = split(120)
    return RawDataset(train_x, train_y, test_x, test_y, 2)


def segmenter(in_chans: int, num_classes: int, **_: object) -> nn.Module:
    """A small fully convolutional network: logits (N, classes, H, W)."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(in_chans, 16), *block(16, 16), nn.Conv2d(16, num_classes, 1))


def pixel_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def mean_iou(logits: torch.Tensor, y: torch.Tensor) -> float:
    pred = logits.argmax(1)
    ious = []
    for c in range(logits.shape[1]):
        union = ((pred == c) | (y == c)).sum()
        if union:
            ious.append(((pred == c) & (y == c)).sum() / union)
    return float(torch.stack(ious).mean())


def pixel_count(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Not a metric in [0, 1]: refused when higher is better."""
    return float(y.numel())


def _prunesearch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunesearch", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_segmentation_task_runs_search_finetuning_and_export(tmp_path):
    env = {**os.environ, "PRUNESEARCH_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    sets = [arg for o in SEGMENTATION for arg in ("--set", o)]
    res = _prunesearch("run", str(TINY), "--out", str(tmp_path / "runs"), "--quiet", *sets,
                       env=env)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    metric = metric_from_json(summary["metric"])
    assert (metric.name, metric.lower_is_better, metric.custom) == ("mean_iou", False, True)
    assert summary["dense"]["test_score"] > 0.7  # chance (all background) is about 0.45
    scores = [c.result.val_score for c in read_journal(run / "candidates.csv")]
    assert len(scores) == 12 and all(0 <= s <= 1 for s in scores) and len(set(scores)) > 1
    tuned = read_finetuned(run)
    assert tuned and all(r["macs_ratio"] <= 0.6 and 0 < r["test_score"] <= 1 for r in tuned)
    res = _prunesearch("export", str(run), "--max-flops", "0.6", "--format", "pt,onnx",
                       "--output", str(tmp_path / "exported"), "--quiet", env=env)
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "exported" / "meta.json").read_text())
    assert meta["metric"]["name"] == "mean_iou" and meta["macs_ratio"] <= 0.6

    sys.path.insert(0, str(TESTS))
    try:
        cfg = load_config(run / "config.toml", run_dir=run)
        data = load_run_data(cfg)
        model = prunesearch.load(tmp_path / "exported", trust_code=True)
    finally:
        sys.path.remove(str(TESTS))
    with torch.no_grad():
        logits = model.eval()(data.test_x)
    assert mean_iou(logits, data.test_y) == pytest.approx(meta["test_score"], abs=1e-6)
    session = ort.InferenceSession(str(tmp_path / "exported" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: data.test_x[:8].numpy()})[0]
    np.testing.assert_allclose(onnx_out, logits[:8].numpy(), atol=1e-4)


def test_task_settings_that_cannot_work_are_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    with pytest.raises(ConfigError, match="finetune.kd"):
        load_config(TINY, [*SEGMENTATION, "finetune.kd=true"])
    with pytest.raises(ConfigError, match=r"\[task\]"):  # labels per pixel need a task
        load_run_data(load_config(TINY, SEGMENTATION[:2]))
    with pytest.raises(ConfigError, match="task.metric.*not_there"):
        load_run_data(load_config(TINY, [*SEGMENTATION, "task.metric=test_task:not_there"]))
    data = load_run_data(load_config(TINY, [*SEGMENTATION, "task.metric=test_task:pixel_count"]))
    with pytest.raises(UserError, match=r"pixel_count.*\[0, 1\]"):
        data.task.score(segmenter(1, 2), data.val_x, data.val_y)
    lower = load_run_data(load_config(TINY, [*SEGMENTATION, "task.metric=test_task:pixel_count",
                                             "task.higher_is_better=false"]))
    score = lower.task.score(segmenter(1, 2), lower.val_x, lower.val_y)
    assert lower.task.metric.value(score) == pytest.approx(lower.val_y.numel())
    assert lower.fingerprint() != data.fingerprint()  # another task: other trained weights
