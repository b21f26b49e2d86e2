"""Dataset factories of a user, named in tests as 'user_dataset:<factory>' (pytest puts tests/ on
sys.path). Good ones first, then one for each way of getting the contract wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prunesearch.data import RawDataset

N_TRAIN, N_TEST, FEATURES, CLASSES = 40, 10, 6, 3
NOT_CALLABLE = 3


def blobs(shift: float = 0.0) -> RawDataset:
    """Flat (N, 6) data, 3 classes, the class mean at x = 2 * label + shift."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N_TRAIN + N_TEST) % CLASSES
    x = torch.randn(N_TRAIN + N_TEST, FEATURES, generator=g) + 2.0 * y[:, None] + shift
    return RawDataset(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], CLASSES)


def no_args() -> RawDataset:
    return blobs()


def as_tuple(download: bool) -> tuple[object, ...]:
    assert download is False  # the tests pass download=False
    return tuple(blobs())


def from_dir(data_dir: Path) -> RawDataset:
    """The data saved in `<data_dir>/blobs.pt` by save_blobs."""
    return RawDataset(*torch.load(data_dir / "blobs.pt"))


def save_blobs(data_dir: Path, shift: float = 0.0) -> None:
    torch.save(tuple(blobs(shift)), data_dir / "blobs.pt")


def garbage() -> int:
    return 42


def four_items() -> tuple[torch.Tensor, ...]:
    return tuple(blobs())[:4]


def numpy_inputs() -> RawDataset:
    return blobs()._replace(train_x=np.zeros((N_TRAIN, FEATURES)))


def label_out_of_range() -> RawDataset:
    return blobs()._replace(num_classes=2)


def float_labels() -> RawDataset:
    raw = blobs()
    return raw._replace(train_y=raw.train_y.float())


def missing_labels() -> RawDataset:
    raw = blobs()
    return raw._replace(test_y=raw.test_y[:-1])


def mismatched_shapes() -> RawDataset:
    raw = blobs()
    return raw._replace(test_x=raw.test_x[:, :-1])


def nan_inputs() -> RawDataset:
    raw = blobs()
    raw.train_x[3, 1] = float("nan")
    return raw


def string_num_classes() -> RawDataset:
    return blobs()._replace(num_classes="3")


def explodes() -> RawDataset:
    raise RuntimeError("disk on fire\nsecond line of the message")
