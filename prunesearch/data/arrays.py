"""`dataset = "arrays"`: NumPy files of inputs and labels, no code.

`data.data_dir` holds the training examples as `train.npz` (arrays `x` and `y`) or as
`train_x.npy` and `train_y.npy`, and the test examples likewise (`test.npz`, or `test_x.npy`
and `test_y.npy`); without test files a seeded `data.test_fraction` of the training examples
is the test set. Inputs are (N, F), (N, C, H, W) or (N, H, W) (one channel), any real or
8-bit dtype (uint8 is scaled to [0, 1]); labels are integers from 0. Files are read with
`allow_pickle=False`: an array file never runs code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from prunesearch.data.folders import required_folder
from prunesearch.data.splits import RawDataset, hold_out_test
from prunesearch.errors import DataError

LAYOUTS = "train.npz (arrays x and y) or train_x.npy and train_y.npy, and the same for test"


def _read(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"Cannot read the array file '{path}' ({' '.join(str(err).split())}); "
                        f"write it with numpy.save / numpy.savez (no Python objects: "
                        f"pickled arrays are refused).") from None


def _split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(inputs, labels, where they came from) of one split, or None when it has no files."""
    archive = folder / f"{split}.npz"
    if archive.exists():
        arrays = _read(archive)
        assert isinstance(arrays, dict)
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise DataError(f"'{archive}' holds the arrays {sorted(arrays)} but no "
                            f"{' or '.join(missing)}; save the inputs as x and the labels as y "
                            f"(numpy.savez(path, x=inputs, y=labels)).")
        return arrays["x"], arrays["y"], str(archive)
    x_path, y_path = folder / f"{split}_x.npy", folder / f"{split}_y.npy"
    if x_path.exists() != y_path.exists():
        present, absent = (x_path, y_path) if x_path.exists() else (y_path, x_path)
        raise DataError(f"'{present}' has no partner '{absent.name}' in '{folder}'; give both "
                        f"the inputs and the labels.")
    if not x_path.exists():
        return None
    x, y = _read(x_path), _read(y_path)
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    return x, y, f"{x_path} and {y_path.name}"


def as_tensors(x: np.ndarray, y: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked inputs (float, uint8 scaled to [0, 1], (N, H, W) given one channel) and int64
    labels; `source` names where they came from in the error."""
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} inputs but {len(y)} labels; give one label per "
                        f"example.")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: the labels are {y.dtype} of shape {y.shape}; they must be "
                        f"one integer class per example (shape (N,)).")
    if x.ndim not in (2, 3, 4) or not (np.issubdtype(x.dtype, np.number)
                                       and not np.iscomplexobj(x)):
        raise DataError(f"{source}: the inputs are {x.dtype} of shape {x.shape}; give real "
                        f"numbers shaped (N, F), (N, C, H, W) or (N, H, W).")
    inputs = torch.from_numpy(np.ascontiguousarray(x))
    inputs = inputs.float() / 255 if x.dtype == np.uint8 else inputs.float()
    if x.ndim == 3:
        inputs = inputs.unsqueeze(1)
    return inputs, torch.from_numpy(y.astype(np.int64))


def load_arrays(data_dir: Path | None, test_fraction: float = 0.2) -> RawDataset:
    """The arrays in `data_dir` (see the module docstring); classes 0..max label."""
    folder = required_folder(data_dir, "arrays", LAYOUTS)
    train = _split(folder, "train")
    if train is None:
        raise DataError(f"'{folder}' holds no training arrays; write {LAYOUTS}.")
    train_x, train_y = as_tensors(*train)
    test = _split(folder, "test")
    if test is None:
        raw = hold_out_test(train_x, train_y, test_fraction)
    else:
        test_x, test_y = as_tensors(*test)
        raw = RawDataset(train_x, train_y, test_x, test_y, 0)
    labels = torch.cat([raw.train_y, raw.test_y])
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"'{folder}': a label is {int(labels.min())}; classes are numbered "
                        f"from 0.")
    return raw._replace(num_classes=int(labels.max()) + 1 if len(labels) else 0)
