"""`dataset = "hf-disk"`: a Hugging Face dataset saved with save_to_disk, read with no code."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunesearch.data import load_dataset
from prunesearch.errors import DataError

datasets = pytest.importorskip("datasets")
TINY = Path(__file__).parent / "configs" / "tiny.toml"


def _pngs(count: int, seed: int, mode: str = "L", size: int = 10) -> tuple[list, list[int]]:
    """Images whose class (0..2) brightens its own band of rows, and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        label = i % 3
        pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
        pixels[label * 3:(label + 1) * 3] += 150
        image = Image.fromarray(pixels, "L")
        images.append(image if mode == "L" else image.convert(mode))
        labels.append(label)
    return images, labels


def _image_split(count: int, seed: int, mode: str = "L", size: int = 10):
    images, labels = _pngs(count, seed, mode, size)
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["a", "b", "c"])})
    return datasets.Dataset.from_dict({"img": images, "label": labels}, features=features)


def test_an_image_dataset_dict_keeps_its_splits_classes_and_pixels(tmp_path):
    saved = datasets.DatasetDict({"train": _image_split(30, 0), "test": _image_split(9, 1)})
    saved.save_to_disk(str(tmp_path / "ds"))
    data = load_dataset("hf-disk", tmp_path / "ds", val_size=3)
    assert data.input_shape == (1, 10, 10) and data.num_classes == 3  # grey: one channel
    assert (len(data.train_y) + len(data.val_y), len(data.test_y)) == (30, 9)
    assert data.test_y.tolist() == [0, 1, 2] * 3
    mean, std = data.normalization
    first = np.asarray(_pngs(9, 1)[0][0], dtype=np.float32) / 255
    restored = data.test_x[0, 0] * std[0] + mean[0]
    assert torch.allclose(restored, torch.from_numpy(first), atol=1e-5)


def test_colour_images_are_resized_and_validation_is_the_test_set_without_test(tmp_path):
    saved = datasets.DatasetDict({"train": _image_split(12, 0, "RGB"),
                                  "validation": _image_split(6, 1, "RGB", size=14)})
    saved.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match="differ in size|set data.image_size"):
        load_dataset("hf-disk", tmp_path / "ds", val_size=2)
    data = load_dataset("hf-disk", tmp_path / "ds", val_size=2, options={"image_size": 8})
    assert data.input_shape == (3, 8, 8) and len(data.test_y) == 6


def test_numbers_in_one_saved_dataset_hold_out_a_test_share(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 5), dtype=np.float32)
    y = rng.integers(0, 4, 40)
    saved = datasets.Dataset.from_dict({"features": x.tolist(), "target": y.tolist(),
                                        "note": ["n"] * 40})
    saved.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match=r"no label column 'label'.*set data.label_column"):
        load_dataset("hf-disk", tmp_path / "ds", val_size=4)
    with pytest.raises(DataError, match=r"set data.input_column"):  # features or note?
        load_dataset("hf-disk", tmp_path / "ds", val_size=4,
                     options={"label_column": "target"})
    data = load_dataset("hf-disk", tmp_path / "ds", val_size=4,
                        options={"label_column": "target", "input_column": "features",
                                 "test_fraction": 0.25})
    assert data.input_shape == (5,) and data.num_classes == int(y.max()) + 1
    assert (len(data.train_y) + len(data.val_y), len(data.test_y)) == (30, 10)


@pytest.mark.parametrize("case, match", [
    ("corrupt", r"Row 4 of split 'train' .* column 'img', is not an image that decodes"),
    ("unlabelled", r"a label is -1 \(an unlabelled split\?\)"),
    ("no train", r"splits \['test'\] but no 'train'"),
    ("not saved", r"is not a dataset saved with save_to_disk"),
])
def test_bad_saved_datasets_name_the_problem_and_the_fix(tmp_path, case, match):
    folder = tmp_path / "ds"
    if case == "not saved":
        folder.mkdir()
        (folder / "data.csv").write_text("x,label\n1,0\n")
    elif case == "no train":
        datasets.DatasetDict({"test": _image_split(6, 0)}).save_to_disk(str(folder))
    else:
        images, labels = _pngs(9, 0)
        cells = []
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            cells.append({"bytes": buffer.getvalue(), "path": None})
        if case == "corrupt":
            cells[4] = {"bytes": b"\x89PNG not really", "path": None}
        else:
            labels[2] = -1
        features = datasets.Features({"img": datasets.Image(decode=False),
                                      "label": datasets.Value("int64")})
        datasets.Dataset.from_dict({"img": cells, "label": labels},
                                   features=features).save_to_disk(str(folder))
    with pytest.raises(DataError, match=match):
        load_dataset("hf-disk", folder, val_size=1)


def test_the_cli_exits_2_on_a_folder_that_is_no_saved_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    res = subprocess.run([sys.executable, "-m", "prunesearch", "run", str(TINY),
                          "--set", "data.dataset=hf-disk", "--set",
                          f"data.data_dir={tmp_path / 'empty'}", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "is not a dataset saved with save_to_disk" in " ".join(res.stderr.split())
