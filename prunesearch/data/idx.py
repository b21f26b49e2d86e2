"""Reading IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from prunesearch.errors import DataError

IMAGES_MAGIC = 2051  # uint8, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 2049  # uint8, 1 dimension (count)

_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_FIX = (
    "Delete it (prunesearch downloads a fresh copy into its cache when no other copy is "
    "found), re-download it from the dataset's site, or point data_dir (or $PRUNESEARCH_DATA) "
    "at a directory with good files."
)


def _bad(path: Path, problem: str) -> DataError:
    return DataError(f"{path}: {problem}. {_FIX}")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot be read ({exc.strerror or exc}). Check the file's permissions, "
            f"or point data_dir (or $PRUNESEARCH_DATA) at a readable copy."
        ) from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _bad(path, f"is not a valid gzip file, it is corrupt or truncated ({exc})") from exc


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """The array stored in an IDX file (`.gz` files are decompressed). If `magic` is given,
    the file must have that magic number. Raises DataError for any damaged file. The array is
    in native byte order and may be a read-only view of the decompressed bytes."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise _bad(path, "is not an IDX file (it does not start with an IDX magic number)")
    found_magic = int.from_bytes(data[:4], "big")
    if magic is not None and found_magic != magic:
        raise _bad(path, f"has IDX magic number {found_magic}, expected {magic}")
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _bad(path, "is truncated inside its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        state = "is truncated" if len(data) < expected else "has trailing bytes"
        raise _bad(path, f"{state}: {len(data)} bytes for shape {shape}, expected {expected}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_images_and_labels(
    images_path: str | Path, labels_path: str | Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image array (N, H, W) and its label array (N,), checked against each other.
    The arrays may be read-only views of the file's bytes: copy before writing."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            f"labels: the two files belong to different versions or splits of the dataset. "
            f"Replace both with files of one download, or delete them so they are downloaded "
            f"again."
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise _bad(
            Path(labels_path),
            f"has label {int(labels.max())}, but the dataset has {num_classes} classes "
            f"(labels 0 to {num_classes - 1})",
        )
    return images, labels
