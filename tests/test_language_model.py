"""A language model end to end, nothing downloaded: a tiny Hugging Face Llama on the bytes of
the standard library's sources, searched, fine-tuned and exported, scored by perplexity (stored
as 1 / perplexity, higher is better) and shown as perplexity."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import prunesearch
from prunesearch.app.config import load_config
from prunesearch.app.export import export_run
from prunesearch.app.prepare import load_run_data
from prunesearch.app.run import run_job
from prunesearch.metrics import ACCURACY, PERPLEXITY, metric_of
from prunesearch.runs.finetuned import read_finetuned
from prunesearch.runs.journal import read_journal
from prunesearch.scoring import Task

LM = Path(__file__).parents[1] / "configs" / "lm.toml"
QUICK = ["search.budget=8", "model.train.epochs=1", "model.train.max_train_images=1500",
         "finetune.targets=[0.5]", "finetune.max_train_images=500", "evaluator.val_images=200"]


def test_the_score_of_next_token_data_is_one_over_perplexity():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 11)
    y = torch.randint(0, 11, (5, 7))
    model = torch.nn.Identity()  # its "logits" are the input
    model.weight = torch.nn.Parameter(torch.zeros(1))  # evaluate_* read the device from it
    ce = F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1)).item()
    assert Task.default(y).score(model, logits, y, batch_size=2) == pytest.approx(
        math.exp(-ce))
    assert metric_of(y) is PERPLEXITY and metric_of(y[:, 0]) is ACCURACY
    assert PERPLEXITY.value(math.exp(-ce)) == pytest.approx(math.exp(ce))


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    cfg = load_config(LM, QUICK)
    return run_job(cfg, tmp_path_factory.mktemp("lm"), device="cpu", progress=False).run_dir


def test_a_language_model_is_searched_and_fine_tuned_on_perplexity(lm_run):
    summary = json.loads((lm_run / "summary.json").read_text())
    assert summary["metric"]["name"] == "perplexity" and summary["metric"]["lower_is_better"]
    scores = [c.result.val_score for c in read_journal(lm_run / "candidates.csv")]
    assert len(scores) == 8 and all(0 < s < 1 for s in scores)
    assert len(set(scores)) > 1  # smaller networks predict bytes differently
    tuned = read_finetuned(lm_run)
    assert tuned and all(r["macs_ratio"] <= 0.5 for r in tuned)
    # the stored test score is 1 / the test perplexity of the saved weights, recomputed here
    data = load_run_data(load_config(lm_run / "config.toml"))
    folder = export_run(lm_run, tuned[0]["id"], None, ["pt", "onnx"],
                        lm_run.parent / "exported", progress=False)
    model = prunesearch.load(folder)
    assert data.task.score(model, data.test_x, data.test_y) == pytest.approx(
        tuned[0]["test_score"], rel=1e-6)
    tokens = data.test_x[:4]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(tokens).numpy()
    assert np.abs(session.run(None, {"input": tokens.numpy()})[0] - expected).max() <= 1e-4


def test_show_prints_perplexity_not_accuracy(lm_run, cli_env):
    res = subprocess.run([sys.executable, "-m", "prunesearch", "show", str(lm_run)],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "val perplexity (proxy)" in res.stdout and "accuracy" not in res.stdout
    summary = json.loads((lm_run / "summary.json").read_text())
    assert f"val perplexity {1 / summary['dense']['val_score']:.2f}" in " ".join(
        res.stdout.split())
