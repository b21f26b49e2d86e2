"""The supernet stage: a hard-masked Supernet computes exactly the Slicer's subnetworks, the
stage trains a copy of the dense model, caches it, resumes an interrupted run to the same
weights, and the pipeline builds the search on what it trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from masked_reference import with_norm_statistics
from torch import nn

import prunesearch.training.supernet as stage
from prunesearch.app.config import load_config
from prunesearch.app.prepare import prepare
from prunesearch.app.run import run_job
from prunesearch.config import RunConfig
from prunesearch.data import DatasetSplits, load_dataset
from prunesearch.errors import ConfigError, UserError
from prunesearch.evaluators.weight_sharing import recalibrate_batchnorm
from prunesearch.models import create_model
from prunesearch.models.options import TrainConfig
from prunesearch.spaces import Space
from prunesearch.spaces.options import SpaceConfig
from prunesearch.spaces.supernet import Supernet
from prunesearch.training.options import SupernetConfig
from prunesearch.training.supernet import _sample_of, supernet_key, train_supernet

TINY = Path(__file__).parent / "configs" / "tiny.toml"
RATIOS = (0.25, 0.5, 0.75, 1.0)
SPACE_CFG = SpaceConfig(width_ratios=list(RATIOS))
RECIPE = TrainConfig(epochs=1, batch_size=32, lr=0.05)
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny convolutions are many times slower with 2 threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    return load_dataset("synthetic", seed=0)


def _dense(data: DatasetSplits, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("resnet20", 1, data.num_classes, width_mult=0.5, input_size=(8, 8))
    return with_norm_statistics(model, seed)


def _space(model: nn.Module, data: DatasetSplits) -> Space:
    space = Space.from_model(model, data.train_x[:1], RATIOS, depth=True)
    assert not space.masked and space.depth_stages()  # widths and depths, no weight masks
    return space


def _options(epochs: int = 1, **kw) -> SupernetConfig:
    return SupernetConfig(**{"epochs": epochs, "random_subnets": 1, "max_train_images": 64, **kw})


def _run(model, space, data, cache: Path, *, epochs: int = 1, seed: int = 0):
    return train_supernet(model, space, data, _options(epochs), RECIPE, SPACE_CFG, seed=seed,
                          device=CPU, cache_dir=cache, progress=False)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ[:5]}"


# --- the hard-masked supernet is the Slicer's subnetwork ------------------------------------

def test_hard_supernet_computes_exactly_the_sliced_subnetwork(data):
    model = _dense(data)
    space = _space(model, data)
    order = space.channel_order()
    # the order is a real permutation somewhere, so keeping "the first c" is tested
    assert any(o != sorted(o) for o in order.values())
    net = Supernet(space, model, order, hard=True).eval()
    assert all(p is not q for p, q in zip(net.parameters(), model.parameters(), strict=True))
    x = data.train_x[:8]
    rng = np.random.default_rng(0)
    archs = [space.smallest()] + [space.sample(np.random.default_rng(k)) for k in range(6)]
    archs.append(space.decode([rng.integers(len(d.choices)) if d.kind == "width"
                               else len(d.choices) - 1 for d in space.dims]))  # widths only
    archs.append(space.decode([len(d.choices) - 1 if d.kind == "width" else 0
                               for d in space.dims]))  # depths only
    with torch.no_grad():
        dense = model(x)
        net.sample = {}
        torch.testing.assert_close(net(x), dense, rtol=1e-5, atol=1e-5)
        for arch in archs:
            assert space.reshapes(arch)
            net.sample = _sample_of(space, arch)
            out = net(x)
            sliced = space.slicer(model).build(arch).eval()(x)
            torch.testing.assert_close(out, sliced, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(out, dense, atol=1e-3)  # a different network indeed


def test_sample_of_leaves_full_dims_out_and_names_every_choice_of_the_smallest(data):
    model = _dense(data)
    space = _space(model, data)
    assert _sample_of(space, space.largest()) == {}
    smallest = _sample_of(space, space.smallest())
    assert smallest == {d: [(0, 1.0)] for d in range(len(space.dims))}
    arch = space.sample(np.random.default_rng(3))
    genes = space.encode(arch)
    assert _sample_of(space, arch) == {d: [(g, 1.0)] for d, g in enumerate(genes)
                                       if g != len(space.dims[d].choices) - 1}


def test_channel_order_is_fixed_once_and_the_slicer_keeps_it_over_new_weights(data):
    model = _dense(data)
    space = _space(model, data)
    order = space.channel_order()
    assert space.channel_order() is order
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # "trained further": other weights, so another L1 ranking
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                scale = torch.rand(m.weight.shape[0], generator=gen) + 0.5
                m.weight.mul_(scale.view(-1, *[1] * (m.weight.dim() - 1)))
    assert space.graph.channel_order() != order
    assert space.channel_order() == order
    net = Supernet(space, model, space.channel_order(), hard=True).eval()
    x = data.train_x[:8]
    with torch.no_grad():
        for k in range(3):
            arch = space.sample(np.random.default_rng(10 + k))
            net.sample = _sample_of(space, arch)
            torch.testing.assert_close(net(x), space.slicer(model).build(arch).eval()(x),
                                       rtol=1e-5, atol=1e-5)


def test_recalibrate_batchnorm_restores_momentum_and_averages_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3, momentum=0.3))
    batches = [torch.randn(6, 1, 5, 5) for _ in range(3)]
    recalibrate_batchnorm(model, batches)
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == [0.1, 0.3]
    assert not model.training
    with torch.no_grad():
        features = model[0](torch.cat(batches))
    torch.testing.assert_close(model[1].running_mean, features.mean(dim=(0, 2, 3)))


# --- the stage ------------------------------------------------------------------------------

def test_stage_trains_a_copy_caches_it_and_is_deterministic(data, tmp_path):
    model = _dense(data)
    space = _space(model, data)
    before = _state(model)
    trained, meta = _run(model, space, data, tmp_path / "a")
    assert trained is not model and not trained.training
    _assert_same_state(_state(model), before)  # the dense model is left as it was
    after = _state(trained)
    assert any(not torch.equal(after[k], before[k]) for k in before if k.endswith("weight"))
    # a plain model again: no supernet hooks or patched stage forwards came along
    assert all(not m._forward_hooks and "forward" not in vars(m) for m in trained.modules())
    assert all(m.momentum == 0.1 for m in trained.modules() if isinstance(m, nn.BatchNorm2d))
    # the full network's BatchNorm statistics are re-estimated on the training images
    check = _dense(data)
    check.load_state_dict(after)
    recalibrate_batchnorm(check, list(data.train_x[:64].split(32)))
    _assert_same_state(_state(check), after)

    final = tmp_path / "a" / f"supernet-{meta['key']}.pt"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [final.name]
    assert meta["cached"] is False and meta["checkpoint"] == str(final)
    assert meta["epochs"] == 1 and meta["images_per_epoch"] == 64 and meta["seconds"] > 0
    assert 0 <= meta["val_score"] <= 1 and 0 <= meta["test_score"] <= 1
    json.dumps(meta)  # goes into summary.json

    again, meta2 = _run(model, space, data, tmp_path / "a")
    assert meta2["cached"] is True and meta2["key"] == meta["key"]
    assert again is not model and again is not trained and not again.training
    _assert_same_state(_state(again), after)
    assert meta2["val_score"] == meta["val_score"]

    other, meta3 = _run(model, space, data, tmp_path / "b")  # same seed, fresh cache
    assert meta3["cached"] is False
    _assert_same_state(_state(other), after)


def test_supernet_key_follows_weights_options_recipe_space_and_seed(data):
    model = _dense(data)
    fp = data.fingerprint()
    key = supernet_key(model, SPACE_CFG, _options(), RECIPE, fp, 64, 0)
    assert supernet_key(model, SPACE_CFG, _options(), RECIPE, fp, 64, 0) == key
    changed = _dense(data)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    keys = [supernet_key(changed, SPACE_CFG, _options(), RECIPE, fp, 64, 0),
            supernet_key(model, SPACE_CFG, _options(epochs=2), RECIPE, fp, 64, 0),
            supernet_key(model, SPACE_CFG, _options(temperature=2.0), RECIPE, fp, 64, 0),
            supernet_key(model, SpaceConfig(), _options(), RECIPE, fp, 64, 0),
            supernet_key(model, SPACE_CFG, _options(), RECIPE.model_copy(update={"lr": 0.1}),
                         fp, 64, 0),
            supernet_key(model, SPACE_CFG, _options(), RECIPE, fp, 65, 0),
            supernet_key(model, SPACE_CFG, _options(), RECIPE, "0" * 16, 64, 0),
            supernet_key(model, SPACE_CFG, _options(), RECIPE, fp, 64, 1)]
    assert len({key, *keys}) == 1 + len(keys)
    # the images trained on name the stage, not the prefix option that chose them
    assert supernet_key(model, SPACE_CFG, _options(max_train_images=None), RECIPE, fp, 64,
                        0) == key


def test_interrupted_stage_resumes_to_the_uninterrupted_weights(data, tmp_path, monkeypatch):
    model = _dense(data)
    space = _space(model, data)
    whole, _ = _run(model, space, data, tmp_path / "whole", epochs=2)
    real_write = stage.write_torch

    def write_then_die(path, obj):
        real_write(path, obj)
        if path.name.endswith(".partial.pt"):
            raise KeyboardInterrupt  # killed right after epoch 1's state is saved

    monkeypatch.setattr(stage, "write_torch", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(model, space, data, tmp_path / "cut", epochs=2)
    [partial] = (tmp_path / "cut").iterdir()
    assert partial.name.endswith(".partial.pt")
    assert torch.load(partial, weights_only=True)["epoch"] == 1

    written = []

    def write_and_record(path, obj):
        written.append((path.name, obj.get("epoch")))
        real_write(path, obj)

    monkeypatch.setattr(stage, "write_torch", write_and_record)
    resumed, meta = _run(model, space, data, tmp_path / "cut", epochs=2)
    # only epoch 2 ran again (a restart from scratch would also write epoch 1's state)
    assert written == [(partial.name, 2), (f"supernet-{meta['key']}.pt", None)]
    assert meta["cached"] is False and not partial.exists()
    _assert_same_state(_state(resumed), _state(whole))


def test_corrupt_resume_file_is_refused_with_what_to_do(data, tmp_path):
    model = _dense(data)
    space = _space(model, data)
    key = supernet_key(model, SPACE_CFG, _options(), RECIPE, data.fingerprint(), 64, 0)
    partial = tmp_path / f"supernet-{key}.partial.pt"
    partial.write_bytes(b"not a torch file at all")
    with pytest.raises(UserError, match="delete it") as err:
        _run(model, space, data, tmp_path)
    assert str(partial) in str(err.value)
    torch.save({"epoch": 1}, partial)  # readable, but not a resume state
    with pytest.raises(UserError, match="delete it"):
        _run(model, space, data, tmp_path)


# --- configuration and pipeline -------------------------------------------------------------

def test_supernet_section_is_validated():
    assert RunConfig().supernet.epochs == 0  # off unless a config asks for it
    assert load_config(None).supernet.epochs == 1  # the embedded default job asks
    cfg = load_config(None, ["supernet.epochs=3", "supernet.lr=0.02"])
    assert cfg.supernet.epochs == 3 and cfg.supernet.lr == 0.02
    for bad, named in [("supernet.epochs=-1", "supernet.epochs"),
                       ("supernet.temperature=0", "supernet.temperature"),
                       ("supernet.lr=0", "supernet.lr"),
                       ("supernet.foo=1", "foo")]:
        with pytest.raises(ConfigError, match=named):
            load_config(None, [bad])


def _macs_ratio(space: Space):
    """A stand-in latency predictor: MACs as a ratio to the full network's."""
    return lambda arch: space.macs(arch) / space.macs(space.largest())


def test_near_limit_draws_only_subnetworks_predicted_near_the_limit(data, tmp_path,
                                                                     monkeypatch):
    model = _dense(data)
    space = _space(model, data)
    near = stage.NearLimit(0.3, 1, "torch", _macs_ratio(space))
    pool = near.archs(space, seed=0)
    low, high = (b * 0.3 for b in stage.NEAR_LIMIT)
    assert pool and all(low <= near.ratio(a) <= high for a in pool)
    assert pool == near.archs(space, seed=0)  # seeded: every process draws the same pool
    drawn: list[dict] = []
    sandwich = stage._sandwich_step

    def spy(net, xb, yb, samples, temperature, task):
        drawn.extend(samples[1:])  # samples[0] is the smallest
        return sandwich(net, xb, yb, samples, temperature, task)
    monkeypatch.setattr(stage, "_sandwich_step", spy)
    trained, meta = train_supernet(model, space, data, _options(), RECIPE, SPACE_CFG, seed=0,
                                   device=CPU, cache_dir=tmp_path, progress=False, near=near)
    allowed = [_sample_of(space, a) for a in pool]
    assert drawn and all(sample in allowed for sample in drawn)
    assert meta["near_limit_subnets"] == len(pool)
    uniform_key = supernet_key(model, SPACE_CFG, _options(), RECIPE, data.fingerprint(), 64, 0)
    assert meta["key"] != uniform_key  # a near-limit stage is cached under its own name
    drawn.clear()
    _, again = train_supernet(model, space, data, _options(), RECIPE, SPACE_CFG, seed=0,
                              device=CPU, cache_dir=tmp_path, progress=False,
                              near=stage.NearLimit(0.3, 1, "torch", lambda a: 1 / 0))
    assert again["cached"] and not drawn  # from the cache, the predictor never called


def test_near_limit_refuses_a_limit_no_subnetwork_is_near(data):
    model = _dense(data)
    space = _space(model, data)
    with pytest.raises(UserError, match="raise search.max_latency"):
        stage.NearLimit(0.001, 1, "torch", _macs_ratio(space)).archs(space, seed=0)
    with pytest.raises(ConfigError, match="search.max_latency, which is not set"):
        load_config(None, ["supernet.sample=near-limit"])
    cfg = load_config(None, ["supernet.sample=near-limit", "search.max_latency=0.4"])
    assert cfg.supernet.sample == "near-limit"


def test_pipeline_builds_the_search_on_the_supernet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path / "cache"))
    overrides = ["supernet.epochs=1", "supernet.max_train_images=64", "search.budget=2",
                 "search.batch_size=2", "finetune.enabled=false"]
    cfg = load_config(TINY, overrides)
    prep = prepare(cfg, CPU, progress=False)
    meta = prep.supernet_meta
    assert meta is not None and meta["cached"] is False and meta["epochs"] == 1
    assert Path(meta["checkpoint"]).parent == tmp_path / "cache" / "checkpoints"
    assert prep.evaluator.slicer.model is prep.model
    dense_ckpt = Path(prep.dense_meta["checkpoint"])
    dense_state = torch.load(dense_ckpt, weights_only=True)
    dense_state = dense_state.get("state_dict", dense_state)
    trained = _state(prep.model)
    assert any(not torch.equal(trained[k], dense_state[k].to(trained[k].device))
               for k in trained if k.endswith("weight"))

    outcome = run_job(cfg, tmp_path / "run", progress=False)
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    recorded = summary["supernet"]  # the run's fields lie at the top of summary.json
    assert recorded["cached"] is True and recorded["key"] == meta["key"]
    assert recorded["checkpoint"] == meta["checkpoint"]
    assert summary["timings"]["supernet_s"] >= 0

    off = run_job(load_config(TINY, overrides[2:]), tmp_path / "off", progress=False)
    summary = json.loads((off.run_dir / "summary.json").read_text())
    assert summary["supernet"] is None and "supernet_s" not in summary["timings"]
