"""Datasets as in-memory tensors with train/val/test splits.

`load_dataset("fashion-mnist", val_size=5000, seed=0)` gives 55000 train, 5000 val and 10000
test images as normalized float32 tensors of shape (N, 1, 28, 28). Datasets are an open
registry: `register_dataset` adds one (data/registry.py states the loader contract), and a name
'package.module:factory' loads a user's own dataset without registering it.
"""

from __future__ import annotations

from prunesearch.data.arrays import load_arrays
from prunesearch.data.hf_disk import load_hf_disk
from prunesearch.data.idx_datasets import load_fashion_mnist, load_mnist
from prunesearch.data.imagefolder import load_imagefolder
from prunesearch.data.packaged import load_digits, load_mnist1d
from prunesearch.data.registry import list_datasets, load_dataset, register_dataset
from prunesearch.data.splits import DatasetSplits, RawDataset, make_splits
from prunesearch.data.synthetic import load_synthetic
from prunesearch.data.text import load_stdlib_bytes

__all__ = [
    "DatasetSplits",
    "RawDataset",
    "list_datasets",
    "load_dataset",
    "make_splits",
    "register_dataset",
]

# The built-ins are fixed by their name (checksummed files, seeded generators): pinned.
register_dataset("fashion-mnist", default_val_size=5000, pinned=True)(load_fashion_mnist)
register_dataset("mnist", default_val_size=5000, pinned=True)(load_mnist)
register_dataset("mnist1d", default_val_size=500, pinned=True)(load_mnist1d)
register_dataset("digits", default_val_size=200, pinned=True)(load_digits)
# the Python version's own sources: their content is hashed (not pinned)
register_dataset("stdlib-bytes", default_val_size=1000)(load_stdlib_bytes)
register_dataset("synthetic", default_val_size=64, pinned=True)(load_synthetic)
# a user's files, read without code: their content is hashed (not pinned)
register_dataset("arrays")(load_arrays)
register_dataset("imagefolder")(load_imagefolder)
register_dataset("hf-disk")(load_hf_disk)
