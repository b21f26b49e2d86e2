"""The user's own torch Datasets (the Python API's train/val/test) as DatasetSplits: taken as
they are (no normalisation: the user's network was made for them), validation held out of
train when none is given."""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset, TensorDataset

from prunesearch.data.splits import DatasetSplits
from prunesearch.errors import DataError

GIVEN_DATA = "(given in Python)"  # data.dataset of a run whose data came as Dataset objects


def tensors_of(dataset: Dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of a Dataset of (input, label) pairs, stacked."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = dataset.tensors
    else:
        try:
            pairs = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
            x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        except Exception as err:
            raise DataError(f"The {what} dataset cannot be read as (input, label) pairs of "
                            f"tensors ({type(err).__name__}: {err}); pass a torch Dataset whose "
                            f"items are (input tensor, integer label), e.g. a TensorDataset.") \
                from None
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"The {what} dataset has {len(x)} inputs and {len(y)} labels; it needs "
                        f"at least one example and one label per input.")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise DataError(f"The {what} dataset's labels are {y.dtype}; prunesearch scores "
                        f"classifiers and needs integer class labels.")
    return x, y.long()


def given_splits(train: Dataset, val: Dataset | None, test: Dataset, seed: int,
                 val_size: int | None = None) -> DatasetSplits:
    """DatasetSplits of the given datasets; without `val`, `val_size` training examples (10%
    by default) chosen by `seed` are held out: the search never reads `test`."""
    train_x, train_y = tensors_of(train, "train")
    if val is None:
        n = len(train_y)
        size = val_size or max(1, n // 10)
        if not 1 <= size < n:
            raise DataError(f"data.val_size = {size} does not fit the {n} training examples; "
                            f"pass val=, or a val_size between 1 and {n - 1}.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        held, kept = order[:size].sort().values, order[size:].sort().values
        val_x, val_y = train_x[held], train_y[held]
        train_x, train_y = train_x[kept], train_y[kept]
    else:
        val_x, val_y = tensors_of(val, "val")
    test_x, test_y = tensors_of(test, "test")
    shapes = {tuple(t.shape[1:]) for t in (train_x, val_x, test_x)}
    if len(shapes) > 1:
        raise DataError(f"The train, val and test inputs differ in shape ({sorted(shapes)}); "
                        f"every split must hold examples of one shape.")
    classes = int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    digest = hashlib.sha256()
    for t in (train_x, train_y, val_x, val_y, test_x, test_y):
        flat = t.detach().cpu().contiguous().reshape(-1)
        digest.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return DatasetSplits(GIVEN_DATA, train_x, train_y, val_x, val_y, test_x, test_y, classes,
                         digest.hexdigest())
