"""In-memory train/val/test splits: the one type every other part of prunesearch reads data from."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import torch

from prunesearch.errors import DataError
from prunesearch.scoring import Task


class RawDataset(NamedTuple):
    """What a dataset loader returns before splitting: inputs scaled to about [0, 1] (images)
    or as generated (flat data), not yet normalized; labels int64 in [0, num_classes)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A dataset held as tensors. Inputs are float32 and normalized with statistics of
    `train`, or integer token ids (N, T), kept as they are, whose labels are the next token at
    every position (N, T) (a language model's data); `val` is a held-out slice of the original
    training set, fixed by the seed, so that search never reads `test`."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    content_digest: str = ""  # raw_digest of data whose name does not pin them, else ""
    # (mean, std) make_splits normalised the inputs with, per channel (images) or one value
    # (flat data), fitted on `train`: what a deployed model's inputs need too. None: as given
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # the loss and metric networks are trained and scored by (None: the labels' default,
    # cross-entropy with accuracy or perplexity); a run's [task] sets a user's own
    task: Task = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.task is None:
            object.__setattr__(self, "task", Task.default(self.val_y))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) for images, (F,) for flat data, (T,) for tokens."""
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str) -> DatasetSplits:
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def input_normalization(self) -> dict[str, object] | None:
        """How a deployed model's inputs must be prepared, as training prepared them (None:
        the inputs were used as given, e.g. token ids or the Python API's tensors)."""
        if self.normalization is None:
            return None
        mean, std = self.normalization
        per = "channel" if len(mean) > 1 or len(self.input_shape) == 3 else "tensor"
        return {"mean": list(mean), "std": list(std), "per": per,
                "formula": "(x - mean) / std on inputs as the dataset gives them (images "
                           "scaled to [0, 1])"}

    def fingerprint(self) -> str:
        """A short hash of the name, the shapes and the labels of every split, the
        `content_digest` and a user's task if any. Labels in split order identify the
        val/train split, so checkpoints trained on one split are never reused for another; the
        content digest keeps a user dataset whose values change under the same name from
        reusing stale ones, the task weights trained by another loss."""
        digest = hashlib.sha256()
        digest.update(f"{self.name}|{self.num_classes}".encode())
        for x, y in (
            (self.train_x, self.train_y),
            (self.val_x, self.val_y),
            (self.test_x, self.test_y),
        ):
            digest.update(f"|{tuple(x.shape)}|{x.dtype}|".encode())
            digest.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        if self.content_digest:  # absent for the built-in datasets: their keys stay as they were
            digest.update(f"|{self.content_digest}".encode())
        if self.task.identity:  # a user's loss and metric: weights trained by them differ
            digest.update(f"|task {self.task.identity}".encode())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"DatasetSplits(name={self.name!r}, train={len(self.train_y)}, "
            f"val={len(self.val_y)}, test={len(self.test_y)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def is_integer(dtype: torch.dtype) -> bool:
    """Integer tensors hold labels, or inputs that are token ids (never normalized)."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def make_splits(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    val_size: int,
    seed: int,
    content_digest: str = "",
) -> DatasetSplits:
    """Hold out `val_size` training examples (a permutation seeded by `seed`, not the global
    RNG) and normalize every split with the mean/std of what is left for training: per channel
    for images (N, C, H, W), one global value for flat data (N, F); token ids stay as they are."""
    n_train = len(train_y)
    if not 1 <= val_size < n_train:
        raise DataError(
            f"data.val_size = {val_size} does not fit dataset '{name}', which has {n_train} "
            f"training examples: the validation set is held out of them. Set data.val_size "
            f"to a number between 1 and {n_train - 1}."
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_train, generator=generator)
    val_idx = order[:val_size].sort().values
    train_idx = order[val_size:].sort().values

    if is_integer(train_x.dtype):  # token ids
        return DatasetSplits(name, train_x[train_idx].long(), train_y[train_idx].long(),
                             train_x[val_idx].long(), train_y[val_idx].long(), test_x.long(),
                             test_y.long(), num_classes, content_digest)
    train_x = train_x.to(torch.float32)
    fit_x = train_x[train_idx]
    dims = [0, *range(2, fit_x.dim())] if fit_x.dim() > 2 else list(range(fit_x.dim()))
    mean = fit_x.mean(dim=dims, keepdim=True)
    std = fit_x.std(dim=dims, keepdim=True).clamp_min(1e-8)

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float32) - mean).div_(std)

    return DatasetSplits(
        name=name,
        train_x=normalize(fit_x),
        train_y=train_y[train_idx].to(torch.int64),
        val_x=normalize(train_x[val_idx]),
        val_y=train_y[val_idx].to(torch.int64),
        test_x=normalize(test_x),
        test_y=test_y.to(torch.int64),
        num_classes=num_classes,
        content_digest=content_digest,
        normalization=(tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())),
    )


def raw_digest(raw: RawDataset) -> str:
    """sha256 of the dtypes, shapes and values of a dataset's tensors, and its class count."""
    digest = hashlib.sha256(f"{raw.num_classes}".encode())
    for tensor in raw[:4]:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())  # the bytes, whatever the dtype
    return digest.hexdigest()


def hold_out_test(x: torch.Tensor, y: torch.Tensor, fraction: float,
                  seed: int = 0) -> RawDataset:
    """A dataset that comes as one pool: a `fraction` of it (a permutation seeded by `seed`,
    fixed whatever the run's seed, so test scores stay comparable) is the test set; the
    class count is left 0 for the loader to fill."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(len(y) * fraction))
    test, train = order[:n_test].sort().values, order[n_test:].sort().values
    return RawDataset(x[train], y[train], x[test], y[test], 0)
