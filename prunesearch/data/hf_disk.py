"""`dataset = "hf-disk"`: a Hugging Face `datasets` dataset saved with `save_to_disk`, no code.

`data.data_dir` is the folder `DatasetDict.save_to_disk` (or `Dataset.save_to_disk`) wrote.
Its `train` split is trained on (validation is held out of it, `data.val_size`, like every
dataset's); the test set is its `test` split, else its `validation` split, else a seeded
`data.test_fraction` of train (a saved `Dataset` has no splits: all of it is train).
`data.label_column` (default "label") holds integer classes from 0 (a `ClassLabel` gives the
class count); `data.input_column` the inputs (default: the one other column): images (an
`Image` feature, decoded with Pillow as imagefolder decodes files: grey or RGB, resized to
`data.image_size`) or fixed-shape numbers (N, F), (N, H, W) or (N, C, H, W), as arrays reads
them. Reading the folder runs no code (Arrow files and JSON); the `datasets` package is the
`hf` extra.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunesearch.data.arrays import as_tensors
from prunesearch.data.folders import required_folder
from prunesearch.data.imagefolder import GREY_MODES, pixels_of
from prunesearch.data.splits import RawDataset, hold_out_test
from prunesearch.errors import DataError

log = logging.getLogger("prunesearch")
LAYOUT = "the folder Dataset.save_to_disk or DatasetDict.save_to_disk wrote"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("dataset = \"hf-disk\" reads folders with the Hugging Face `datasets` "
                        "package, which is not installed; pip install 'prunesearch[hf]' (or "
                        "datasets).") from None
    return datasets


def _load(folder: Path) -> dict[str, Any]:
    """The saved splits by name (a saved Dataset: {"train": it})."""
    datasets = _datasets()
    try:
        saved = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"'{folder}' is not a dataset saved with save_to_disk "
                        f"({' '.join(str(err).split())[:200]}); point data.data_dir at "
                        f"{LAYOUT}.") from None
    if isinstance(saved, datasets.DatasetDict):
        return dict(saved)
    return {"train": saved}


def _input_column(split: Any, label_column: str, input_column: str | None,
                  where: str) -> str:
    columns = list(split.column_names)
    if label_column not in columns:
        raise DataError(f"{where} has no label column '{label_column}' (its columns: "
                        f"{columns}); set data.label_column to the one holding the classes.")
    if input_column is not None:
        if input_column not in columns:
            raise DataError(f"{where} has no input column '{input_column}' (its columns: "
                            f"{columns}); set data.input_column to one of them.")
        return input_column
    others = [c for c in columns if c != label_column]
    if len(others) != 1:
        raise DataError(f"{where} has the columns {columns}: set data.input_column to the one "
                        f"that holds the inputs.")
    return others[0]


def _images(split: Any, column: str, where: str) -> list[Any]:
    """Every image of the column as an opened PIL image; a row that does not decode is named."""
    from PIL import Image, UnidentifiedImageError

    datasets = _datasets()
    images = []
    for row, cell in enumerate(split.cast_column(column, datasets.Image(decode=False))[column]):
        try:
            if cell.get("bytes") is None:
                raise OSError(f"the row keeps only a path, {cell.get('path')}")
            image = Image.open(io.BytesIO(cell["bytes"]))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"Row {row} of {where}, column '{column}', is not an image that "
                            f"decodes ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}); fix or drop that row and "
                            f"save the dataset again.") from None
        images.append(image)
    return images


def _pixels(images: list[Any], grey: bool, size: int | None, labels: np.ndarray,
            where: str) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = [pixels_of(image, grey, size) for image in images]
    shapes = sorted({p.shape for p in pixels})
    if len(shapes) > 1:
        raise DataError(f"The images of {where} differ in size ({shapes[:3]}); set "
                        f"data.image_size to resize them to one.")
    return as_tensors(np.stack(pixels), labels, where)


def load_hf_disk(data_dir: Path | None, image_size: int | None = None,
                 test_fraction: float = 0.2, input_column: str | None = None,
                 label_column: str = "label") -> RawDataset:
    """The dataset saved under `data_dir` (see the module docstring)."""
    folder = required_folder(data_dir, "hf-disk", LAYOUT)
    saved = _load(folder)
    if "train" not in saved:
        raise DataError(f"'{folder}' has the splits {sorted(saved)} but no 'train'; save the "
                        f"training examples as the 'train' split.")
    test_name = next((n for n in ("test", "validation") if n in saved), None)
    if test_name == "validation":
        log.info("hf-disk: no 'test' split in %s; its 'validation' split is the test set",
                 folder)
    names = ["train"] + ([test_name] if test_name else [])
    wheres = {n: f"split '{n}' of '{folder}'" for n in names}
    column = _input_column(saved["train"], label_column, input_column, wheres["train"])
    images, grey = None, False
    if isinstance(saved["train"].features[column], _datasets().Image):
        images = {n: _images(saved[n], column, wheres[n]) for n in names}
        grey = all(i.mode in GREY_MODES for found in images.values() for i in found)
    tensors = {}
    for name in names:
        split, where = saved[name], wheres[name]
        _input_column(split, label_column, column, where)
        labels = np.asarray(split.with_format("numpy")[label_column])
        if images is None:
            values = np.asarray(split.with_format("numpy")[column])
            tensors[name] = as_tensors(values, labels, f"{where}, column '{column}'")
        else:
            tensors[name] = _pixels(images[name], grey, image_size, labels,
                                    f"{where}, column '{column}'")
    shapes = sorted({tuple(x.shape[1:]) for x, _ in tensors.values()})
    if images is not None and len(shapes) > 1:
        raise DataError(f"The train and {test_name} images of '{folder}' differ in size "
                        f"({shapes}); set data.image_size to resize them to one.")
    train_x, train_y = tensors["train"]
    if test_name is None:
        raw = hold_out_test(train_x, train_y, test_fraction)
    else:
        raw = RawDataset(train_x, train_y, *tensors[test_name], 0)
    labels_all = torch.cat([raw.train_y, raw.test_y])
    if len(labels_all) and int(labels_all.min()) < 0:
        raise DataError(f"'{folder}': a label is {int(labels_all.min())} (an unlabelled "
                        f"split?); classes are numbered from 0 and every example needs one.")
    label_feature = saved["train"].features[label_column]
    classes = getattr(label_feature, "num_classes", None) or int(labels_all.max()) + 1
    if len(labels_all) and int(labels_all.max()) >= classes:
        raise DataError(f"'{folder}': a label is {int(labels_all.max())} but the label column "
                        f"names {classes} classes; fix the labels or the ClassLabel feature.")
    return raw._replace(num_classes=classes)
