"""Data without code: `arrays` (.npz / .npy) and `imagefolder` (class folders of images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunesearch.data import load_dataset
from prunesearch.errors import DataError

TINY = Path(__file__).parent / "configs" / "tiny.toml"


def _images(folder: Path, classes: int, per_class: int, size: int = 12, mode: str = "L",
            seed: int = 0) -> None:
    """`per_class` PNGs per class folder; class c is brighter in its own band of rows, so a
    network can learn it."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
            band = size // classes
            pixels[c * band:(c + 1) * band] += 150
            image = Image.fromarray(pixels, "L")
            (image if mode == "L" else image.convert(mode)).save(
                folder / f"class_{c}" / f"{i}.png")


def test_arrays_read_npz_and_npy_pairs_and_hold_out_a_test_share(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 3, 4, 4), dtype=np.float32), rng.integers(0, 3, 50)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.save(tmp_path / "test_x.npy", x[:10])
    np.save(tmp_path / "test_y.npy", y[:10])
    data = load_dataset("arrays", tmp_path, val_size=5)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (45, 5, 10)
    assert data.input_shape == (3, 4, 4) and data.num_classes == int(y.max()) + 1
    assert torch.equal(data.test_y, torch.from_numpy(y[:10]))
    norm = data.input_normalization()  # fitted on train: what deployed inputs need too
    assert norm["per"] == "channel" and len(norm["mean"]) == 3
    shape = (1, 3, 1, 1)
    raw_val = data.val_x * torch.tensor(norm["std"]).view(shape) + torch.tensor(
        norm["mean"]).view(shape)  # undone, the validation rows are rows of the file
    distance = torch.cdist(raw_val.flatten(1), torch.from_numpy(x).flatten(1))
    assert float(distance.min(dim=1).values.max()) < 1e-2  # others are > 2 away

    pooled = tmp_path / "pooled"
    pooled.mkdir()
    images = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)  # (N, H, W): one channel
    np.save(pooled / "train_x.npy", images)
    np.save(pooled / "train_y.npy", np.arange(40) % 4)
    data = load_dataset("arrays", pooled, val_size=4, options={"test_fraction": 0.25})
    assert len(data.test_y) == 10 and len(data.train_y) + len(data.val_y) == 30
    assert data.input_shape == (1, 6, 6) and data.num_classes == 4


@pytest.mark.parametrize("case, match", [
    ("lengths", r"train\.npz: 10 inputs but 9 labels"),
    ("pickled", r"Cannot read the array file .*train_x\.npy.*pickled arrays are refused"),
    ("partner", r"train_x\.npy' has no partner 'train_y\.npy'"),
    ("keys", r"train\.npz' holds the arrays \['a', 'y'\] but no x"),
    ("labels", r"labels are float64"),
    ("no folder", r"data\.data_dir .* is not a folder"),
])
def test_bad_arrays_name_the_file_and_the_fix(tmp_path, case, match):
    x = np.zeros((10, 4), dtype=np.float32)
    folder = tmp_path
    if case == "lengths":
        np.savez(tmp_path / "train.npz", x=x, y=np.zeros(9, dtype=np.int64))
    elif case == "pickled":
        np.save(tmp_path / "train_x.npy", np.array([{"a": 1}] * 10, dtype=object),
                allow_pickle=True)
        np.save(tmp_path / "train_y.npy", np.zeros(10, dtype=np.int64))
    elif case == "partner":
        np.save(tmp_path / "train_x.npy", x)
    elif case == "keys":
        np.savez(tmp_path / "train.npz", a=x, y=np.zeros(10, dtype=np.int64))
    elif case == "labels":
        np.savez(tmp_path / "train.npz", x=x, y=np.zeros(10))
    else:
        folder = tmp_path / "absent"
    with pytest.raises(DataError, match=match):
        load_dataset("arrays", folder)


def test_an_image_folder_decodes_once_and_keeps_train_and_test(tmp_path, monkeypatch):
    import prunesearch.data.imagefolder as imagefolder

    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path / "cache"))
    _images(tmp_path / "data" / "train", classes=3, per_class=6)
    _images(tmp_path / "data" / "test", classes=3, per_class=2, seed=1)
    (tmp_path / "data" / "train" / "class_0" / "notes.txt").write_text("not an image")
    data = load_dataset("imagefolder", tmp_path / "data", val_size=3)
    assert data.input_shape == (1, 12, 12) and data.num_classes == 3
    assert (len(data.train_y) + len(data.val_y), len(data.test_y)) == (18, 6)
    assert data.test_y.tolist() == [0, 0, 1, 1, 2, 2]  # sorted class folders, sorted files

    decoded = []
    monkeypatch.setattr(imagefolder, "_decode",
                        lambda *a: decoded.append(a) or pytest.fail("decoded again"))
    again = load_dataset("imagefolder", tmp_path / "data", val_size=3)  # from the cache
    assert not decoded and torch.equal(again.test_x, data.test_x)


def test_an_image_folder_in_colour_resized_with_a_test_share(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path / "cache"))
    _images(tmp_path / "data", classes=2, per_class=10, mode="RGB")
    (tmp_path / "data" / "class_1" / "3.png").unlink()
    Image.new("RGB", (20, 16)).save(tmp_path / "data" / "class_1" / "3.png")  # another size
    with pytest.raises(DataError, match=r"3\.png' is 20x16 pixels but .* is 12x12; set "
                                        r"data\.image_size"):
        load_dataset("imagefolder", tmp_path / "data", val_size=2)
    data = load_dataset("imagefolder", tmp_path / "data", val_size=2,
                        options={"image_size": 8, "test_fraction": 0.25})
    assert data.input_shape == (3, 8, 8) and len(data.test_y) == 5


@pytest.mark.parametrize("case, match", [
    ("corrupt", r"Cannot (read|decode) the image '.*class_1.*1\.png'"),
    ("missing class", r"test' has no folder for class \['class_2'\]"),
    ("empty class", r"Class folder '.*class_0' holds no image"),
    ("val folder", r"has a val folder"),
    ("no test", r"has a train folder but no test folder"),
])
def test_bad_image_folders_name_the_file_and_the_fix(tmp_path, monkeypatch, case, match):
    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    _images(root / "train", classes=3, per_class=3)
    _images(root / "test", classes=2 if case == "missing class" else 3, per_class=2)
    if case == "corrupt":
        (root / "train" / "class_1" / "1.png").write_bytes(b"\x89PNG not really")
    elif case == "empty class":
        for image in (root / "test" / "class_0").iterdir():
            image.unlink()
    elif case == "val folder":
        (root / "val").mkdir()
    elif case == "no test":
        for image in (root / "test").rglob("*.png"):
            image.unlink()
        for folder in sorted((root / "test").iterdir()):
            folder.rmdir()
        (root / "test").rmdir()
    with pytest.raises(DataError, match=match):
        load_dataset("imagefolder", root)


def test_a_png_folder_runs_search_finetuning_and_export_with_no_code(tmp_path):
    _images(tmp_path / "data" / "train", classes=3, per_class=40, size=16)
    _images(tmp_path / "data" / "test", classes=3, per_class=10, size=16, seed=1)
    env = {**os.environ, "PRUNESEARCH_CACHE": str(tmp_path / "cache")}
    overrides = ["data.dataset=imagefolder", f"data.data_dir={tmp_path / 'data'}",
                 "data.val_size=30", "evaluator.val_images=30", "finetune.targets=[0.5]",
                 "finetune.epochs=1"]
    args = [arg for o in overrides for arg in ("--set", o)]
    res = subprocess.run([sys.executable, "-m", "prunesearch", "run", str(TINY), "--out",
                          str(tmp_path / "runs"), "--quiet", *args], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "imagefolder" and summary["n_evals"] == 12
    assert summary["dense"]["test_score"] > 1 / 3  # learnt something beyond chance
    res = subprocess.run([sys.executable, "-m", "prunesearch", "export", str(run),
                          "--max-flops", "0.6", "--format", "pt", "--output",
                          str(tmp_path / "exported"), "--quiet"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "exported" / "meta.json").exists()
    spec = json.loads((tmp_path / "exported" / "arch.json").read_text())
    assert spec["input_normalization"] == summary["input_normalization"]
    assert len(spec["input_normalization"]["mean"]) == 1  # grey images: one channel
