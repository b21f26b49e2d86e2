"""Model zoo, registry, user models, dense training and the dense-checkpoint cache."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from prunesearch.data import DatasetSplits, make_splits
from prunesearch.data.synthetic import load_synthetic
from prunesearch.errors import ModelError
from prunesearch.models import (
    build_model,
    create_model,
    depth_stages,
    list_models,
    load_user_model,
    register_model,
    registry,
)
from prunesearch.models.options import ModelConfig, TrainConfig
from prunesearch.scoring import evaluate_accuracy
from prunesearch.training import (
    TrainReport,
    checkpoint_key,
    dense_model,
    random_translate,
    train_model,
)
from prunesearch.training.loop import (
    ScheduleSpan,
    continued_span,
    dense_span,
    recipe_optimizer,
)

CPU = torch.device("cpu")


def quadrant_data(n: int = 384, seed: int = 0) -> DatasetSplits:
    """The package's synthetic dataset (bright quadrant = class), cut to n training examples."""
    raw = load_synthetic()
    return make_splits("synthetic", raw.train_x[:n], raw.train_y[:n], raw.test_x, raw.test_y,
                       raw.num_classes, val_size=n // 4, seed=seed)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These models are tiny: one thread is faster, and two threads spin-wait for each other
    when another process shares the two cores (measured: 30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = TrainConfig(epochs=2, batch_size=16, lr=0.1)


# --- zoo -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [28, 8])
def test_forward_shape(name: str, size: int) -> None:
    model = create_model(name, in_chans=1, num_classes=10, input_size=(size, size))
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_mlp_takes_flat_features() -> None:
    model = create_model("mlp", in_chans=1, num_classes=3, input_size=(40,))
    assert model(torch.randn(2, 40)).shape == (2, 3)


@pytest.mark.parametrize("name", list_models())
def test_dependency_graph_builds(name: str) -> None:
    model = create_model(name, in_chans=1, num_classes=10).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 28, 28))
    assert list(graph.get_all_groups())


@pytest.mark.parametrize("name", list_models())
def test_depth_stages_contract(name: str) -> None:
    model = create_model(name, in_chans=1, num_classes=10).eval()
    stages = depth_stages(model)
    for qualified, stage in stages:
        assert isinstance(stage, nn.Sequential)
        assert model.get_submodule(qualified) is stage
    # every trailing block keeps the shape of its input
    shapes: list[tuple[torch.Size, torch.Size]] = []
    hooks = [block.register_forward_hook(lambda m, i, o: shapes.append((i[0].shape, o.shape)))
             for _, stage in stages for block in list(stage)[1:]]
    x = torch.randn(2, 1, 28, 28)
    model(x)
    for h in hooks:
        h.remove()
    assert all(i == o for i, o in shapes)
    for _, stage in stages:
        del stage[1:]
    assert model(x).shape == (2, 10)


def test_resnet_layout() -> None:
    for name, n in [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)]:
        model = create_model(name, in_chans=1, num_classes=10)
        assert [len(s) for _, s in depth_stages(model)] == [n, n, n]
    half = create_model("resnet20", in_chans=1, num_classes=10, width_mult=0.5)
    assert half.fc.in_features == 32
    tiny = create_model("resnet20", in_chans=1, num_classes=10, width_mult=0.01)
    assert tiny.fc.in_features == 1  # at least one channel per layer


def test_init_is_deterministic_under_manual_seed() -> None:
    def weights() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        return create_model("mobilenetv2_small", in_chans=1, num_classes=10).state_dict()

    a, b = weights(), weights()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- registry --------------------------------------------------------------------------------


def test_registry_refuses_duplicates_and_names_with_colon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ModelError, match="already registered"):
        register_model("resnet20")(lambda **kw: nn.Identity())
    with pytest.raises(ModelError, match="invalid"):
        register_model("a:b")


def test_unknown_model_lists_available() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet21'; available: mlp, .*resnet20"):
        create_model("resnet21", in_chans=1, num_classes=10)


def test_list_models_filter() -> None:
    assert list_models("resnet*") == ["resnet20", "resnet32", "resnet56"]
    assert list_models("nothing*") == []


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ModelError, match="positive"):
        create_model("resnet20", in_chans=1, num_classes=10, width_mult=0)


def test_cnn_on_flat_data_is_refused_with_advice() -> None:
    with pytest.raises(ModelError, match="'mlp' for flat features"):
        build_model("resnet20", (40,), num_classes=10)
    assert build_model("mlp", (40,), num_classes=10)(torch.randn(2, 40)).shape == (2, 10)


# --- user models -----------------------------------------------------------------------------

USER_MODULE = """
import torch
from torch import nn

def build(in_chans, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 64, num_classes))

def build_no_args():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

class Net(nn.Module):
    def __init__(self, num_classes, **kwargs):
        super().__init__()
        self.kwargs = kwargs
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))

def not_a_module():
    return 42

def explodes(in_chans):
    raise RuntimeError("boom")

VALUE = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"usernets_{tmp_path.name.replace('-', '_')}"  # unique: sys.modules caches imports
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / f"broken_{name}.py").write_text("import no_such_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_load_user_model_passes_accepted_kwargs(user_module: str) -> None:
    model = load_user_model(f"{user_module}:build", in_chans=1, num_classes=5, input_size=(8, 8))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert isinstance(load_user_model(f"{user_module}:build_no_args", 1, 10), nn.Module)
    net = load_user_model(f"{user_module}:Net", in_chans=1, num_classes=7, input_size=(8, 8))
    assert net.fc.out_features == 7
    assert net.kwargs == {"in_chans": 1, "width_mult": 1.0, "input_size": (8, 8)}


def test_build_model_dispatches_on_colon(user_module: str) -> None:
    assert build_model(f"{user_module}:build", (1, 8, 8), 3)(torch.randn(2, 1, 8, 8)).shape == (
        2,
        3,
    )
    with pytest.raises(ModelError, match=r"expected logits of shape \(2, 3\)"):
        build_model(f"{user_module}:build_no_args", (1, 8, 8), 3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "not of the form 'package.module:factory'"),
        ("{m}:", "not of the form"),
        ("surely_missing_module_xyz:build", "was not found; make it importable"),
        ("broken_{m}:build", "importing 'broken_.*' failed: .*no_such_package_xyz"),
        ("{m}:missing", "has no attribute 'missing'; it defines: .*build"),
        ("{m}:VALUE", "is a int, not a function or class"),
        ("{m}:not_a_module", "returned a int, not a torch.nn.Module"),
        ("{m}:explodes", "raised RuntimeError: boom"),
    ],
)
def test_load_user_model_errors(user_module: str, spec: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_user_model(spec.format(m=user_module), in_chans=1, num_classes=10)


def test_user_model_without_width_mult_refuses_width(user_module: str) -> None:
    with pytest.raises(ModelError, match="takes no width_mult"):
        load_user_model(f"{user_module}:build", in_chans=1, num_classes=10, width_mult=0.5)


# --- training --------------------------------------------------------------------------------


def test_random_translate_shifts_whole_images() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = random_translate(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # each output image is a window of the edge-padded input, the same for every channel
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(2):
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_augmented_batches_train_a_narrow_strided_1x1_conv(tmp_path) -> None:
    """A channels-last batch made oneDNN crash or hang in the backward pass of a stride-2 1x1
    conv with 4 input channels (a pruned resnet shortcut); translated batches must be plain
    NCHW. Run in a child process with a timeout: the failure is a segfault or a hang."""
    out = random_translate(torch.randn(4, 1, 8, 8), torch.Generator().manual_seed(0))
    assert out.stride() == torch.empty(4, 1, 8, 8).stride()
    script = tmp_path / "narrow.py"
    script.write_text(textwrap.dedent("""
        import torch
        from prunesearch.training import random_translate
        torch.set_num_threads(1)  # one thread crashed every time, two hung now and then
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1),
                                  torch.nn.Conv2d(4, 8, 1, stride=2, bias=False))
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            net(random_translate(torch.randn(128, 1, 28, 28), gen)).square().mean().backward()
        print("ok")
    """))
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _trained(
    data: DatasetSplits, recipe: TrainConfig, seed: int = 0
) -> tuple[nn.Module, TrainReport]:
    torch.manual_seed(0)
    model = create_model("vgg_small", in_chans=1, num_classes=4, width_mult=0.25)
    return model, train_model(model, data, recipe, seed=seed, device=CPU, progress=False)


def test_train_model_learns_and_is_deterministic() -> None:
    data = quadrant_data()
    torch.manual_seed(0)
    before = _mean_loss(create_model("vgg_small", 1, 4, width_mult=0.25),
                        data.train_x, data.train_y)
    model_a, report = _trained(data, FAST)
    assert _mean_loss(model_a, data.train_x, data.train_y) < 0.5 * before
    assert report.epochs == 2 and report.val_score > 0.6 and report.images_per_s > 0
    assert report.train_loss is not None and report.train_loss < before
    model_b, _ = _trained(data, FAST)
    a, b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model_c, _ = _trained(data, FAST, seed=1)  # another seed: another batch order
    assert not torch.equal(model_c.fc.weight, model_a.fc.weight)


def test_zero_epochs_only_evaluates() -> None:
    data = quadrant_data(64)
    model, report = _trained(data, TrainConfig(epochs=0))
    assert report.train_loss is None and report.images_per_s is None
    assert report.val_score == evaluate_accuracy(model, data.val_x, data.val_y)


def test_max_train_images_limits_training() -> None:
    data = quadrant_data()
    data.train_x[16:] = float("nan")  # any step that reads past the prefix poisons the loss
    _, report = _trained(data, TrainConfig(epochs=2, batch_size=8, max_train_images=16))
    assert report.train_loss is not None and report.train_loss == report.train_loss


# --- dense checkpoint ------------------------------------------------------------------------

SMALL = ModelConfig(name="mlp", width_mult=0.25, train=TrainConfig(epochs=1, batch_size=32))


def test_dense_model_is_cached(tmp_path: Path) -> None:
    data = quadrant_data(128)
    first, meta1 = dense_model(SMALL, data, seed=0, device=CPU, cache_dir=tmp_path, progress=False)
    assert meta1["cached"] is False and Path(meta1["checkpoint"]).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [f"{meta1['key']}.pt"]  # no temp files left
    second, meta2 = dense_model(SMALL, data, seed=0, device=CPU, cache_dir=tmp_path,
                                progress=False)
    assert meta2["cached"] is True and meta2["val_score"] == meta1["val_score"]
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_key_depends_on_what_made_the_model() -> None:
    def key(recipe: TrainConfig = SMALL.train, seed: int = 0, width: float = 1.0) -> str:
        return checkpoint_key("resnet20", width, 1, 10, "abc", recipe, seed)

    assert len(key()) == 16 and key() == key()
    assert key(TrainConfig(epochs=1, batch_size=32, lr=0.05)) != key()
    assert key(seed=1) != key() and key(width=0.5) != key()
    adamw = SMALL.train.model_copy(update={"optimizer": "adamw"})
    assert key(adamw) != key()
    # SGD recipes hash as before the optimizer could be chosen: cached models stay found
    assert "optimizer" not in SMALL.train.cache_fields() and "optimizer" in adamw.cache_fields()


def test_adamw_recipes_train_with_adamw_and_sgd_ones_with_nesterov_sgd() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    opt, _ = recipe_optimizer(params, TrainConfig(optimizer="adamw", lr=1e-3,
                                                  weight_decay=0.05), 10)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 0.05
    opt, _ = recipe_optimizer(params, TrainConfig(), 10)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]


def _lrs(recipe: TrainConfig, steps: int, span: ScheduleSpan | None) -> list[float]:
    opt, sched = recipe_optimizer([nn.Parameter(torch.zeros(1))], recipe, steps, span)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_stages_on_a_longer_schedule_continue_one_cosine_where_the_last_stopped() -> None:
    """Dense 3 epochs of a 6-epoch schedule, a supernet epoch, 2 fine-tuning epochs (each
    stage with its own steps per epoch): together the lr of one 6-epoch cosine, not three
    restarts at the peak."""
    recipe = TrainConfig(epochs=3, schedule_epochs=6, lr=0.1)
    dense = _lrs(recipe, 3 * 10, dense_span(recipe))  # 10 steps per epoch
    supernet = _lrs(recipe, 1 * 4, continued_span(recipe, 3, 1))  # 4 steps per epoch
    finetune = _lrs(recipe, 2 * 10, continued_span(recipe, 4, 2))
    assert dense[0] == pytest.approx(0.1) and dense[-1] > 0.05  # stopped half-way down
    assert supernet[0] == pytest.approx(0.05)
    assert finetune[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 6)))
    last = 0.1 * 0.5 * (1 + math.cos(math.pi * 59 / 60))  # step 19 of 20: 5.9 of 6 epochs
    assert finetune[-1] == pytest.approx(last, rel=1e-6)
    # a recipe without a longer schedule keeps torch's own cosine, and no stage continues it
    plain = TrainConfig(epochs=3, lr=0.1)
    assert dense_span(plain) is None and continued_span(plain, 3, 1) is None
    assert _lrs(plain, 30, None)[15] == pytest.approx(0.05)
    # a schedule as long as the dense epochs is no longer one: the next stage restarts
    assert continued_span(TrainConfig(epochs=3, schedule_epochs=3), 3, 1) is None


def test_a_longer_schedule_makes_another_dense_checkpoint_and_leaves_old_keys_alone() -> None:
    longer = SMALL.train.model_copy(update={"schedule_epochs": 4})
    assert "schedule_epochs" not in SMALL.train.cache_fields()
    assert checkpoint_key("resnet20", 1.0, 1, 10, "abc", longer, 0) != checkpoint_key(
        "resnet20", 1.0, 1, 10, "abc", SMALL.train, 0)


def test_corrupt_cache_entry_is_a_model_error(tmp_path: Path) -> None:
    data = quadrant_data(64)
    key = checkpoint_key("mlp", 0.25, 1, 4, data.fingerprint(), SMALL.train, 0)
    (tmp_path / f"{key}.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=f"{key}.pt' cannot be read.*Delete"):
        dense_model(SMALL, data, seed=0, device=CPU, cache_dir=tmp_path, progress=False)


def test_explicit_checkpoint(tmp_path: Path) -> None:
    data = quadrant_data(64)
    torch.manual_seed(0)
    source = create_model("mlp", 1, 4, width_mult=0.25, input_size=(8, 8))
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pt"
    torch.save(source.state_dict(), plain)
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        cfg = SMALL.model_copy(update={"checkpoint": str(path)})
        model, meta = dense_model(cfg, data, seed=5, device=CPU, cache_dir=tmp_path,
                                  progress=False)
        assert meta["checkpoint"] == str(path) and meta["cached"] is False
        assert torch.equal(model.fc.weight, source.fc.weight)
        assert meta["val_score"] == evaluate_accuracy(model, data.val_x, data.val_y)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ({"fc.weight": torch.zeros(4, 64)}, r"missing keys \(\d+\): fc.bias, features"),
        ({"state_dict": [1, 2]}, "holds a list, not a state_dict"),
        ("mismatch", r"shape mismatches .*: features.1.weight \(128, 64\) vs \(64, 64\)"),
    ],
)
def test_bad_explicit_checkpoint(tmp_path: Path, content: object, message: str) -> None:
    data = quadrant_data(64)
    path = tmp_path / "weights.pt"
    if content == "mismatch":  # same architecture at another width
        content = create_model("mlp", 1, 4, width_mult=0.5, input_size=(8, 8)).state_dict()
    if content is not None:
        torch.save(content, path)
    cfg = SMALL.model_copy(update={"checkpoint": str(path)})
    with pytest.raises(ModelError, match=message) as info:
        dense_model(cfg, data, seed=0, device=CPU, cache_dir=tmp_path, progress=False)
    assert "weights.pt" in str(info.value) and "remove it to train" in str(info.value)
