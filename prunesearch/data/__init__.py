"""Datasets as in-memory tensors with train/val/test splits.

`load_dataset("fashion-mnist", val_size=5000, seed=0)` gives 55000 train, 5000 val and 10000
test images as normalized float32 tensors of shape (N, 1, 28, 28).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prunesearch.data.idx_datasets import (
    FASHION_MNIST,
    MNIST,
    IdxDatasetSpec,
    load_idx_dataset,
)
from prunesearch.data.packaged import load_digits, load_mnist1d
from prunesearch.data.splits import DatasetSplits, RawDataset, make_splits
from prunesearch.data.synthetic import load_synthetic
from prunesearch.errors import DataError

__all__ = ["DatasetSplits", "RawDataset", "list_datasets", "load_dataset", "make_splits"]


_Loader = Callable[[str | Path | None, bool], RawDataset]  # (data_dir, download) -> raw data


def _from_files(spec: IdxDatasetSpec) -> _Loader:
    return lambda data_dir, download: load_idx_dataset(spec, data_dir, download=download)


def _without_files(load: Callable[[], RawDataset]) -> _Loader:
    return lambda data_dir, download: load()


@dataclass(frozen=True)
class _Entry:
    load: _Loader
    default_val_size: int


_DATASETS: dict[str, _Entry] = {
    "fashion-mnist": _Entry(_from_files(FASHION_MNIST), 5000),
    "mnist": _Entry(_from_files(MNIST), 5000),
    "mnist1d": _Entry(_without_files(load_mnist1d), 500),
    "digits": _Entry(_without_files(load_digits), 200),
    "synthetic": _Entry(_without_files(load_synthetic), 64),
}


def list_datasets() -> list[str]:
    return list(_DATASETS)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    val_size: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> DatasetSplits:
    """Load dataset `name` and hold out `val_size` training examples (chosen by `seed`) as the
    validation set. `val_size=None` takes the dataset's default: 5000 for fashion-mnist and
    mnist, 500 for mnist1d, 200 for digits, 64 for synthetic. `data_dir` and `download` only
    matter for datasets read from files (fashion-mnist, mnist)."""
    entry = _DATASETS.get(name)
    if entry is None:
        raise DataError(
            f"unknown dataset '{name}'; available: {', '.join(list_datasets())}. "
            f"Set data.dataset to one of them."
        )
    raw = entry.load(data_dir, download)
    return make_splits(
        name, *raw, val_size=entry.default_val_size if val_size is None else val_size, seed=seed
    )
