"""Dataset names -> loaders, and a user's own loader named as 'package.module:factory'.

The loader contract, the same for registered loaders and user factories: the loader is called
with those of the keyword arguments `data_dir` (the config's data.data_dir as a Path, None when
unset), `download` (bool), `image_size` (int or None), `test_fraction` (float),
`input_column` (str or None) and `label_column` (str) that its signature names (all with
**kwargs, none if it names none). It returns a RawDataset or a tuple of its five fields
(train_x, train_y, test_x, test_y, num_classes): inputs (N, F) or (N, C, H, W), real-valued,
finite; labels 1-D integers in [0, num_classes); num_classes an int >= 2. What it returns
is checked before splitting, so a loader that returns the wrong thing fails here with a
clear message, not inside training.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from prunesearch.data.splits import (
    DatasetSplits,
    RawDataset,
    is_integer,
    make_splits,
    raw_digest,
)
from prunesearch.errors import DataError, UserError
from prunesearch.plugins import accepted_kwargs, describe_error, import_factory

Loader = Callable[..., Any]  # (data_dir=..., download=...) -> RawDataset or its 5-tuple
_L = TypeVar("_L", bound=Loader)

_CONTRACT = (
    "A dataset loader takes keyword arguments among data_dir, download, image_size, "
    "test_fraction, input_column and label_column (or none) and "
    "returns prunesearch.data.RawDataset(train_x, train_y, test_x, test_y, num_classes) or a "
    "tuple of those five."
)


@dataclass(frozen=True)
class _Entry:
    load: Loader
    default_val_size: int | None
    pinned: bool


_DATASETS: dict[str, _Entry] = {}


def register_dataset(
    name: str, default_val_size: int | None = None, *, pinned: bool = False
) -> Callable[[_L], _L]:
    """Decorator: register a loader (see the module docstring) under `name`, which must be new
    and contain no ':'. `default_val_size` is the validation split when the config sets none
    (None: 10% of the training examples, at least 1). `pinned=True` says the name alone fixes
    the data (checksummed files, a seeded generator), so `DatasetSplits.fingerprint` need not
    hash the values; leave it False for data that may change under the same name."""
    if not name or ":" in name:
        raise ValueError(f"dataset name '{name}' is invalid: use a non-empty name without ':' "
                         f"(':' marks a user dataset spec 'package.module:factory').")
    if default_val_size is not None and default_val_size < 1:
        raise ValueError(f"dataset '{name}': default_val_size must be at least 1, got "
                         f"{default_val_size}.")

    def decorate(load: _L) -> _L:
        if name in _DATASETS:
            raise ValueError(f"dataset '{name}' is already registered by "
                             f"{_qualified(_DATASETS[name].load)}; choose another name.")
        _DATASETS[name] = _Entry(load, default_val_size, pinned)
        return load

    return decorate


def list_datasets() -> list[str]:
    """Registered names, in registration order (the built-ins first)."""
    return list(_DATASETS)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    val_size: int | None = None,
    seed: int = 0,
    download: bool = True,
    options: Mapping[str, Any] | None = None,
) -> DatasetSplits:
    """Load dataset `name` (registered, or a user's 'package.module:factory') and hold out
    `val_size` training examples (chosen by `seed`) as the validation set. `val_size=None`
    takes the dataset's default: 5000 for fashion-mnist and mnist, 500 for mnist1d, 200 for
    digits, 64 for synthetic, 10% of the training examples (at least 1) for the others.
    `data_dir` and `download` only matter for loaders that read files (fashion-mnist, mnist,
    arrays, imagefolder, hf-disk); `options` (image_size, test_fraction, input_column,
    label_column) are offered to the loader
    beside them."""
    if ":" in name:
        load = import_factory(name, "dataset", DataError, returns="a RawDataset")
        entry = _Entry(load, default_val_size=None, pinned=False)
        what = f"dataset spec '{name}'"
    elif name in _DATASETS:
        entry = _DATASETS[name]
        what = f"dataset '{name}' (loader {_qualified(entry.load)})"
    else:
        raise DataError(f"unknown dataset '{name}'; available: {', '.join(list_datasets())}. "
                        f"Set data.dataset to one of them, or to your own loader as "
                        f"'package.module:factory'.")
    directory = None if data_dir is None else Path(data_dir).expanduser()
    raw = _call_loader(entry.load, what,
                       {"data_dir": directory, "download": download, **(options or {})})
    if val_size is None:
        val_size = entry.default_val_size or max(1, len(raw.train_y) // 10)
    return make_splits(name, *raw, val_size=val_size, seed=seed,
                       content_digest="" if entry.pinned else raw_digest(raw))


def _qualified(load: Loader) -> str:
    module = getattr(load, "__module__", None)
    qualname = getattr(load, "__qualname__", None) or type(load).__qualname__
    return f"{module}.{qualname}" if module else qualname


def _call_loader(load: Loader, what: str, offered: dict[str, Any]) -> RawDataset:
    kwargs = accepted_kwargs(load, offered)
    try:
        result = load(**kwargs)
    except UserError:  # already says what is wrong and how to fix it
        raise
    except Exception as err:
        raise DataError(f"{what}: calling it with {sorted(kwargs) or 'no arguments'} raised "
                        f"{describe_error(err)}. Fix the loader or install what it needs. "
                        f"{_CONTRACT}") from err
    return _check_raw(result, what)


def _bad(what: str, problem: str, fix: str) -> DataError:
    return DataError(f"{what} {problem}; {fix}. {_CONTRACT}")


def _check_raw(result: object, what: str) -> RawDataset:
    """`result`, a RawDataset or its 5-tuple, as a RawDataset with an int num_classes; a
    DataError naming `what` and the problem if it is anything else or inconsistent."""
    if not isinstance(result, tuple) or len(result) != len(RawDataset._fields):
        got = (f"a tuple of {len(result)} items" if isinstance(result, tuple)
               else f"a {type(result).__name__}")
        raise _bad(what, f"returned {got}, not a RawDataset", "return the dataset itself")
    raw = RawDataset(*result)
    for field in RawDataset._fields[:4]:
        value = getattr(raw, field)
        if not isinstance(value, torch.Tensor):
            raise _bad(what, f"returned a {type(value).__name__} as {field}, not a torch.Tensor",
                       "convert it with torch.as_tensor (or torch.from_numpy)")
    num_classes = raw.num_classes
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool):
        raise _bad(what, f"returned num_classes = {num_classes!r}, not an int",
                   "return the number of classes as an int")
    if num_classes < 2:
        raise _bad(what, f"returned num_classes = {num_classes}", "a classifier needs at least 2")
    for split in ("train", "test"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        if x.dim() < 2 or not (x.dtype.is_floating_point or is_integer(x.dtype)):
            raise _bad(what, f"returned {split}_x of shape {tuple(x.shape)} and dtype {x.dtype}",
                       "inputs are real numbers, one row per example: (N, F) or (N, C, H, W)")
        sequence = y.dim() == 2 and is_integer(x.dtype) and tuple(x.shape) == tuple(y.shape)
        per_pixel = x.dim() > 2 and tuple(y.shape[1:]) == tuple(x.shape[2:])  # segmentation
        if not (y.dim() == 1 or sequence or per_pixel) or not is_integer(y.dtype):
            raise _bad(what, f"returned {split}_y of shape {tuple(y.shape)} and dtype {y.dtype}",
                       "labels are a 1-D integer tensor, one class index per example "
                       "(e.g. y.long()), or for integer token inputs (N, T) one per position "
                       "(N, T), or for images (N, C, H, W) one per pixel (N, H, W)")
        if len(x) != len(y):
            raise _bad(what, f"returned {len(x)} {split} inputs but {len(y)} {split} labels",
                       "return one label per example")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            label = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise _bad(what, f"returned {split} label {label} with num_classes = {num_classes}",
                       f"labels must lie in 0..{num_classes - 1}: remap them or return the "
                       f"right num_classes")
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise _bad(what, f"returned {split}_x holding NaN or infinite values",
                       "drop or impute those values")
    if raw.train_x.shape[1:] != raw.test_x.shape[1:]:
        raise _bad(what, f"returned train examples of shape {tuple(raw.train_x.shape[1:])} but "
                   f"test examples of shape {tuple(raw.test_x.shape[1:])}",
                   "give both splits the same example shape")
    if len(raw.train_y) < 2 or len(raw.test_y) < 1:
        raise _bad(what, f"returned {len(raw.train_y)} training and {len(raw.test_y)} test "
                   f"examples", "a dataset needs at least 2 training examples (some are held "
                   "out for validation) and 1 test example")
    return raw._replace(num_classes=int(num_classes))
