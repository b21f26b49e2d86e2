"""Fine-tuning stage and export: real training on the synthetic data, real files, onnxruntime."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import prunesearch
from prunesearch.app.config import load_config
from prunesearch.app.export import export_run
from prunesearch.app.finetune import finetune_recipe, finetune_run, variant_name
from prunesearch.app.prepare import prepare
from prunesearch.app.run import run_job
from prunesearch.front import FrontPoint
from prunesearch.spaces import Arch
from prunesearch.training import Distillation
from prunesearch.training.finetune import choose_points

TINY = Path(__file__).parent / "configs" / "tiny.toml"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny search without fine-tuning."""
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(TINY, ["finetune.enabled=false"])
    return run_job(cfg, out, device="cpu", progress=False).run_dir


def _finetune_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "finetune.csv").open() as f:
        return list(csv.DictReader(f))


def test_distillation_loss_reduces_to_its_parts():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    teacher = torch.nn.Identity()  # its "logits" are the input
    same = Distillation(teacher, temperature=3.0, alpha=1.0).loss(logits, logits, labels)
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # KL of identical distributions
    hard = Distillation(teacher, alpha=0.0).loss(logits, torch.randn(6, 4), labels)
    assert hard.item() == pytest.approx(F.cross_entropy(logits, labels).item())


def test_choose_points_takes_the_best_proxy_point_under_each_target():
    arch = Arch({})
    front = [FrontPoint(i, "tpe", arch, m, m, m / 100, None, m / 100, a)
             for i, (m, a) in enumerate([(10, 0.3), (20, 0.5), (45, 0.7), (70, 0.8), (90, 0.9)])]
    cfg = load_config(TINY)
    picked = choose_points(front, cfg.finetune.model_copy(update={"targets": [0.25, 0.5, 0.75]}))
    assert [p.id for p in picked] == [1, 2, 3]
    spread = choose_points(front, cfg.finetune.model_copy(update={"top_k": 3}))
    assert [p.id for p in spread] == [0, 2, 4]
    # a run searched on latency: targets are latency ratios, whatever the MACs say
    latency = [0.3, 0.4, 0.6, 0.45, 0.9]  # #3 is faster than #2 although it has more MACs
    by_latency = [replace(p, cost_ratio=c) for p, c in zip(front, latency, strict=True)]
    picked = choose_points(by_latency, cfg.finetune.model_copy(update={"targets": [0.5]}))
    assert [p.id for p in picked] == [3]


def test_finetune_recipe_overrides_only_what_is_set_and_names_the_variant_by_it():
    cfg = load_config(TINY, ["model.train.lr=0.2", "model.train.max_train_images=500"])
    recipe = finetune_recipe(cfg)
    assert (recipe.lr, recipe.max_train_images) == (0.2, 500)
    assert recipe.batch_size == cfg.model.train.batch_size
    plain = variant_name(cfg)
    cheap = load_config(TINY, ["finetune.lr=0.02", "finetune.max_train_images=64",
                               "finetune.epochs=1"])
    recipe = finetune_recipe(cheap)
    assert (recipe.lr, recipe.max_train_images, recipe.epochs) == (0.02, 64, 1)
    assert variant_name(cheap) == "inherit-ce-e1-lr0.02-n64" != plain


def test_exported_model_equals_the_in_search_subnetwork(searched, tmp_path):
    folder = export_run(searched, None, ("macs", 0.6), ["pt", "ts", "onnx"], tmp_path / "exp",
                        progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert "not fine-tuned" in meta["source"]
    cfg = load_config(searched / "config.toml")
    prep = prepare(cfg, torch.device("cpu"), progress=False)
    in_search = prep.evaluator.build(Arch.from_dict(meta["arch"]))
    loaded = prunesearch.load(folder)
    x = prep.data.val_x[:32]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), in_search(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.jit.load(str(folder / "model.ts"))(x), in_search(x),
                                   rtol=0, atol=1e-5)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(onnx_out - in_search(x).detach().numpy()).max() <= 1e-4
    assert meta["checks"]["onnx"]["opset"] == 17
    assert meta["macs"] == prep.space.macs(Arch.from_dict(meta["arch"]))
    assert meta["macs_ratio"] <= 0.6
    assert {"batch_1_ms", "batch_64_ms"} <= set(meta["latency"]["model"])
    ort_latency = meta["latency"]["onnxruntime"]  # measured in every runtime it exports to
    assert set(ort_latency["model"]) == set(meta["latency"]["model"])
    assert all(v > 0 for v in ort_latency["ratio_to_dense"].values())
    assert meta["latency"]["runtimes"]["onnxruntime"].startswith("onnxruntime")
    assert sum(p.numel() for p in loaded.parameters()) == meta["params"]


def test_export_errors_exit_2(searched, cli_env):
    for args, message in ((["--id", "9999"], "no successful candidate"),
                          (["--max-flops", "0.001"], "No front point"),
                          (["--id", "1", "--format", "pt,tflite"], "--format")):
        res = subprocess.run([sys.executable, "-m", "prunesearch", "export", str(searched),
                              *args], env=cli_env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert message in " ".join(res.stderr.split()) and "Traceback" not in res.stderr


def test_finetune_is_resumable_per_model_and_variants_add_up(searched):
    finetune_run(searched, [], device="cpu", progress=False)
    rows = _finetune_rows(searched)
    assert rows and {r["variant"] for r in rows} == {"inherit-ce-e2"}
    for r in rows:
        assert (searched / r["weights"]).exists()
    finetune_run(searched, [], device="cpu", progress=False)  # everything done: nothing new
    assert _finetune_rows(searched) == rows
    finetune_run(searched, ["finetune.kd=true", "finetune.init=scratch"], device="cpu",
                 progress=False)
    variants = {r["variant"] for r in _finetune_rows(searched)}
    assert variants == {"inherit-ce-e2", "scratch-kd-e2"}
    summary = json.loads((searched / "summary.json").read_text())
    for name in variants:
        v = summary["finetune"]["variants"][name]
        assert v["final_front"] and 0 < v["hypervolume"]["value"] <= 1
    front = json.loads((searched / "pareto.json").read_text())["front"]
    assert any(r["test_score"] is not None for r in front)


def test_a_run_on_a_longer_schedule_continues_it_through_supernet_and_fine_tuning(
        tmp_path, caplog):
    """model.train.schedule_epochs: the dense model trains its epochs of the longer schedule
    (another checkpoint than the plain recipe's), the supernet stage and fine-tuning continue
    it, fine-tuning takes the epochs left by default, and the variant says so; the stages' own
    lr settings are reported unused."""
    import logging

    overrides = ["model.train.schedule_epochs=5", "supernet.epochs=1", "supernet.lr=0.01",
                 "finetune.targets=[0.5]", "finetune.lr=0.03", "search.budget=6"]
    cfg = load_config(TINY, overrides)
    assert finetune_recipe(cfg).epochs == 2 and finetune_recipe(cfg).lr == cfg.model.train.lr
    with caplog.at_level(logging.WARNING, logger="prunesearch"):
        run_dir = run_job(cfg, tmp_path, device="cpu", progress=False).run_dir
    unused = [r.getMessage() for r in caplog.records if "is not used" in r.getMessage()]
    assert any("supernet.lr" in m for m in unused) and any("finetune.lr" in m for m in unused)
    rows = _finetune_rows(run_dir)
    assert rows and {(r["variant"], r["epochs"]) for r in rows} == {("inherit-ce-e2-cont5",
                                                                     "2")}
    summary = json.loads((run_dir / "summary.json").read_text())
    plain = load_config(TINY, ["finetune.enabled=false"])
    assert summary["dense"]["checkpoint"] != prepare(plain, torch.device("cpu"),
                                                     progress=False).dense_meta["checkpoint"]


def test_dense_init_cuts_points_from_the_dense_weights_and_continues_their_schedule(tmp_path):
    """finetune.init = "dense": the supernet stage only ranks candidates; points are cut from
    the dense model's own weights (not the supernet's) and take every epoch of the longer
    schedule left after the dense ones, where inherit leaves the supernet's out."""
    overrides = ["model.train.schedule_epochs=5", "supernet.epochs=1", "finetune.targets=[0.5]",
                 "search.budget=6"]
    inherit = load_config(TINY, overrides)
    cfg = load_config(TINY, [*overrides, "finetune.init=dense"])
    assert finetune_recipe(inherit).epochs == 2 and finetune_recipe(cfg).epochs == 3
    run_dir = run_job(cfg, tmp_path, device="cpu", progress=False).run_dir
    assert {(r["variant"], r["epochs"]) for r in _finetune_rows(run_dir)} == {
        ("dense-ce-e3-cont5", "3")}
    prep = prepare(cfg, torch.device("cpu"), progress=False)
    source = prep.finetune_source(cfg)
    assert source is prep.dense_model and source is not prep.model
    dense_state = torch.load(prep.dense_meta["checkpoint"], weights_only=True)
    dense_state = dense_state["state_dict"]
    key = next(k for k in dense_state if k.endswith("conv1.weight"))
    assert torch.equal(source.state_dict()[key], dense_state[key])
    assert not torch.equal(prep.model.state_dict()[key], dense_state[key])  # the supernet's
    assert prep.finetune_source(inherit) is prep.model


def test_finetune_refuses_keys_outside_finetune(searched):
    from prunesearch.errors import UserError

    with pytest.raises(UserError, match="finetune"):
        finetune_run(searched, ["search.budget=5"], device="cpu", progress=False)


def test_export_of_a_finetuned_point_uses_its_trained_weights(searched, tmp_path):
    finetune_run(searched, [], device="cpu", progress=False)
    row = _finetune_rows(searched)[0]
    folder = export_run(searched, int(row["id"]), None, ["pt"], tmp_path / "ft", progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source"].startswith("fine-tuned")
    assert meta["test_score"] == pytest.approx(float(row["test_score"]))


def test_a_run_with_an_empty_front_exports_nothing_and_says_why(searched, tmp_path):
    """A search whose every candidate failed (e.g. all over a latency limit) leaves an empty
    front: export by a limit names that, instead of failing inside."""
    import shutil

    from prunesearch.errors import UserError

    empty = tmp_path / "empty"
    shutil.copytree(searched, empty, ignore=shutil.ignore_patterns("export", ".lock"))
    pareto = json.loads((empty / "pareto.json").read_text())
    (empty / "pareto.json").write_text(json.dumps({**pareto, "front": []}))
    with pytest.raises(UserError, match="no front point"):
        export_run(empty, None, ("macs", 0.5), ["pt"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
