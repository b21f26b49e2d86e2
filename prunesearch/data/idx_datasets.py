"""Fashion-MNIST and MNIST: one loader, parametrized by an IdxDatasetSpec.

Where the four IDX files are looked for, first match wins (see `search_dirs`):
  1. an explicit `data_dir` (the directory, `<data_dir>/<name>`, torchvision's
     `<data_dir>/<Torchvision>/raw`); if it holds no complete set, that is an error;
  2. `$PRUNESEARCH_DATA`, in the same three layouts;
  3. system directories (Debian's `dataset-fashion-mnist` package: /usr/share/datasets/...);
  4. the user cache, `$XDG_CACHE_HOME/prunesearch/data/<name>` (default ~/.cache/...).
Only when none has them are they downloaded into the user cache, checksums verified.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunesearch.data.download import DOWNLOAD_TIMEOUT_S, fetch_files
from prunesearch.data.idx import read_images_and_labels
from prunesearch.data.splits import RawDataset
from prunesearch.errors import DataError

DATA_ENV = "PRUNESEARCH_DATA"

# In this order: train images, train labels, test images, test labels.
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# S3 website endpoints serve plain HTTP only; the md5 check makes HTTP safe to use.
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclass(frozen=True)
class IdxDatasetSpec:
    """An MNIST-format dataset: its name, where to look for it and how to download it.
    `checksums` maps each downloadable `<stem>.gz` file to its md5 or sha256 hex digest."""

    name: str
    torchvision_name: str
    checksums: Mapping[str, str]
    mirrors: Sequence[str]
    system_dirs: Sequence[Path] = ()
    num_classes: int = 10
    install_hint: str = ""


FASHION_MNIST = IdxDatasetSpec(
    name="fashion-mnist",
    torchvision_name="FashionMNIST",
    checksums={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    mirrors=FASHION_MNIST_MIRRORS,
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    install_hint=" On Debian/Ubuntu, `apt install dataset-fashion-mnist` also provides them.",
)

MNIST = IdxDatasetSpec(
    name="mnist",
    torchvision_name="MNIST",
    checksums={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    mirrors=MNIST_MIRRORS,
    system_dirs=(Path("/usr/share/datasets/mnist"),),
)


def user_cache_dir(name: str) -> Path:
    """Where downloads of dataset `name` go: $XDG_CACHE_HOME/prunesearch/data/<name>."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "prunesearch" / "data" / name


def _layouts(spec: IdxDatasetSpec, root: Path) -> list[Path]:
    return [root, root / spec.name, root / spec.torchvision_name / "raw"]


def search_dirs(
    spec: IdxDatasetSpec, data_dir: str | Path | None = None, cache_dir: Path | None = None
) -> list[Path]:
    """The directories looked in, in order: only `data_dir`'s layouts when it is given."""
    if data_dir is not None:
        return _layouts(spec, Path(data_dir).expanduser())
    dirs = []
    if env_dir := os.environ.get(DATA_ENV):
        dirs += _layouts(spec, Path(env_dir).expanduser())
    dirs += [Path(d) for d in spec.system_dirs]
    dirs.append(cache_dir if cache_dir is not None else user_cache_dir(spec.name))
    return dirs


def _files_in(directory: Path) -> list[Path] | None:
    """The four IDX files in `directory` (plain preferred to .gz), or None if any is missing."""
    found = []
    for stem in IDX_STEMS:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


def find_idx_files(
    spec: IdxDatasetSpec, data_dir: str | Path | None = None, cache_dir: Path | None = None
) -> list[Path] | None:
    """The four IDX files (in IDX_STEMS order) from the first directory of `search_dirs` that
    holds all of them; None when none does. An explicit `data_dir` without them is an error."""
    dirs = search_dirs(spec, data_dir, cache_dir)
    for directory in dirs:
        if files := _files_in(directory):
            return files
    if data_dir is not None:
        raise DataError(
            f"data_dir {data_dir} holds no {spec.name} dataset: looked for {_wanted()} in "
            f"{_listing(dirs)}. Put the files there, fix data_dir, or remove data_dir so "
            f"that prunesearch looks in its other locations and downloads when needed."
        )
    return None


def _wanted() -> str:
    return ", ".join(IDX_STEMS) + " (each plain or .gz)"


def _listing(dirs: Sequence[Path]) -> str:
    return ", ".join(str(d) for d in dirs)


def load_idx_dataset(
    spec: IdxDatasetSpec,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    cache_dir: Path | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> RawDataset:
    """Images as float32 (N, 1, H, W) in [0, 1] and int64 labels, found as described in the
    module docstring or downloaded into `cache_dir` (default `user_cache_dir(spec.name)`)
    from `mirrors` (default `spec.mirrors`)."""
    files = find_idx_files(spec, data_dir, cache_dir)
    if files is None:
        cache_dir = cache_dir if cache_dir is not None else user_cache_dir(spec.name)
        if not download:
            raise DataError(
                f"the {spec.name} dataset was not found: looked for {_wanted()} in "
                f"{_listing(search_dirs(spec, None, cache_dir))}, and downloading is off. "
                f"Pass the directory holding the files as data_dir, set ${DATA_ENV} to it, "
                f"or allow downloading.{spec.install_hint}"
            )
        mirrors = spec.mirrors if mirrors is None else mirrors
        fetched = fetch_files(spec.checksums, cache_dir, mirrors, timeout)
        files = [fetched[f"{stem}.gz"] for stem in IDX_STEMS]
    train_x, train_y = _read_split(files[0], files[1], spec.num_classes)
    test_x, test_y = _read_split(files[2], files[3], spec.num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{files[0]} holds images of size {tuple(train_x.shape[2:])} but {files[2]} holds "
            f"{tuple(test_x.shape[2:])}: the files come from different datasets. Replace them "
            f"with the four files of one dataset."
        )
    return RawDataset(train_x, train_y, test_x, test_y, spec.num_classes)


def load_fashion_mnist(data_dir: Path | None = None, download: bool = True) -> RawDataset:
    """Fashion-MNIST, found or downloaded as the module docstring says."""
    return load_idx_dataset(FASHION_MNIST, data_dir, download=download)


def load_mnist(data_dir: Path | None = None, download: bool = True) -> RawDataset:
    """MNIST, found or downloaded as the module docstring says."""
    return load_idx_dataset(MNIST, data_dir, download=download)


def _read_split(images: Path, labels: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, targets = read_images_and_labels(images, labels, num_classes)
    x = torch.from_numpy(pixels.copy()).unsqueeze(1).to(torch.float32).div_(255.0)
    return x, torch.from_numpy(targets.astype(np.int64))
