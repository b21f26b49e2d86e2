"""A byte-level language-modeling corpus that ships on every machine: the Python standard
library's own source files. Nothing is downloaded.

The `.py` files directly in the standard library's folder and its packages (tests, site-packages
and idle excluded), sorted by path, are read as bytes and joined; the first `CORPUS_BYTES` are cut
into windows of `CONTEXT` + 1 bytes that do not overlap. An example is a window's first
`CONTEXT` bytes, its labels the `CONTEXT` bytes after each position (next-byte prediction, 256
classes). The last tenth of the windows (other files than the first nine tenths) is the test
split. The text differs between Python versions, so the dataset is not pinned: its content is
hashed into every cache key.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch

from prunesearch.data.splits import RawDataset
from prunesearch.errors import DataError

CONTEXT = 64
CORPUS_BYTES = 1_500_000
VOCAB = 256
_SKIPPED = {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"}


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py")
                  if not _SKIPPED.intersection(p.relative_to(root).parts[:-1]))


def load_stdlib_bytes() -> RawDataset:
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in corpus_files(root):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= CORPUS_BYTES:
            break
    text = b"\n".join(chunks)[:CORPUS_BYTES]
    windows = len(text) // (CONTEXT + 1)
    if windows < 20:
        raise DataError(f"The Python standard library at {root} holds {len(text)} bytes of "
                        f"source, too few for the stdlib-bytes dataset; use another Python "
                        f"installation or another dataset.")
    tokens = torch.frombuffer(bytearray(text[:windows * (CONTEXT + 1)]), dtype=torch.uint8)
    seqs = tokens.long().view(windows, CONTEXT + 1)
    n_test = windows // 10
    train, test = seqs[:-n_test], seqs[-n_test:]
    return RawDataset(train[:, :-1].contiguous(), train[:, 1:].contiguous(),
                      test[:, :-1].contiguous(), test[:, 1:].contiguous(), VOCAB)
