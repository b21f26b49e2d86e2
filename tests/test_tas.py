"""TAS: channel-wise interpolation, differentiable expected MACs, the supernet, and a search
that lands in its MACs band on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prunesearch.app.config import load_config
from prunesearch.app.run import run_job
from prunesearch.models import create_model
from prunesearch.runs.journal import read_journal
from prunesearch.spaces import Space
from prunesearch.spaces.supernet import Supernet, channel_interpolate
from prunesearch.strategies.tas import expected_macs, gumbel_picks

TINY = Path(__file__).parent / "configs" / "tiny.toml"


def test_channel_interpolation_is_exact_for_equal_widths_and_shape_correct_otherwise():
    x = torch.randn(2, 6, 5, 5)
    assert torch.equal(channel_interpolate(x, 6), x)
    up, down = channel_interpolate(x[:, :3], 6), channel_interpolate(x, 4)
    assert up.shape == (2, 6, 5, 5) and down.shape == (2, 4, 5, 5)
    # upsampling 3 -> 6 channels repeats each channel twice; pooling averages neighbours
    torch.testing.assert_close(up[:, ::2], x[:, :3])
    torch.testing.assert_close(up[:, 1::2], x[:, :3])
    torch.testing.assert_close(channel_interpolate(x, 3), (x[:, ::2] + x[:, 1::2]) / 2)
    assert channel_interpolate(torch.randn(4, 8), 5).shape == (4, 5)


def test_expected_macs_equal_analytic_macs_for_one_hot_distributions():
    model = create_model("resnet20", 1, 10).eval()
    space = Space.from_model(model, torch.zeros(1, 1, 28, 28))
    rng = np.random.default_rng(0)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(5)]:
        genes = space.encode(arch)
        probs = {d: torch.nn.functional.one_hot(torch.tensor(g), len(space.dims[d].choices))
                 .double() for d, g in enumerate(genes)}
        assert float(expected_macs(space, probs)) == pytest.approx(space.macs(arch), rel=1e-12)
    # and it is differentiable in the distributions
    logits = {d: torch.zeros(len(dim.choices), dtype=torch.double, requires_grad=True)
              for d, dim in enumerate(space.dims)}
    e = expected_macs(space, {d: torch.softmax(v, 0) for d, v in logits.items()})
    e.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in logits.values())


def test_supernet_with_full_choices_is_the_dense_model_and_mixes_otherwise():
    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, width_mult=0.5).eval()
    x = torch.randn(4, 1, 12, 12)
    space = Space.from_model(model, x[:1])
    net = Supernet(space, model, space.graph.channel_order()).eval()
    full = {d: [(len(dim.choices) - 1, torch.tensor(1.0))] for d, dim in enumerate(space.dims)}
    net.sample = full
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))
        logits = {d: torch.zeros(len(dim.choices)) for d, dim in enumerate(space.dims)}
        gen = torch.Generator().manual_seed(0)
        net.sample = {d: gumbel_picks(v, 1.0, 2, gen) for d, v in logits.items()}
        mixed = net(x)
    assert mixed.shape == (4, 10) and not torch.allclose(mixed, model(x))


def test_tas_lands_in_its_band_and_records_history(tmp_path):
    cfg = load_config(TINY, ["search.strategy=tas", "search.tas.targets=[0.5]",
                             "search.tas.epochs=6", "search.tas.arch_lr=0.2",
                             "search.tas.tolerance=0.1", "finetune.targets=[0.6]"])
    outcome = run_job(cfg, tmp_path / "tas", progress=False)
    cands = read_journal(outcome.run_dir / "candidates.csv")
    assert len(cands) == 1
    ratio = cands[0].result.macs / outcome.summary["dense"]["macs"]
    assert abs(ratio - 0.5) <= 0.1
    history = json.loads((outcome.run_dir / "tas_history.json").read_text())["0.5"]
    assert len(history["epochs"]) == 6 and history["final"] == cands[0].result.arch.to_dict()
    assert (outcome.run_dir / "tas_dimensions.png").exists()
    assert not (outcome.run_dir / "tas_state.pt").exists()  # removed once the target is done
    assert outcome.summary["finetune"]["variants"]  # the found architecture was fine-tuned


def test_tas_killed_after_an_epoch_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    import prunesearch.strategies.base as base

    overrides = ["search.strategy=tas", "search.tas.targets=[0.5]", "search.tas.epochs=3",
                 "search.tas.arch_lr=0.2", "finetune.enabled=false"]
    whole = run_job(load_config(TINY, overrides), tmp_path / "whole", progress=False)
    real_write = base.write_torch

    def write_then_die(path, data):
        real_write(path, data)
        raise KeyboardInterrupt  # killed right after the first epoch's state is saved

    monkeypatch.setattr(base, "write_torch", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_job(load_config(TINY, overrides), tmp_path / "cut", progress=False)
    monkeypatch.setattr(base, "write_torch", real_write)
    resumed = run_job(load_config(TINY, overrides), tmp_path / "cut", resume=True,
                      progress=False)
    a = json.loads((whole.run_dir / "tas_history.json").read_text())["0.5"]
    b = json.loads((resumed.run_dir / "tas_history.json").read_text())["0.5"]
    assert [e["epoch"] for e in b["epochs"]] == [1, 2, 3]
    assert a == b
