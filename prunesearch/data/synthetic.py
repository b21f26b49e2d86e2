"""A tiny deterministic image dataset for tests: which quadrant of a noisy 8x8 image is
bright decides the class (4 classes). Any small network learns it in a few steps."""

from __future__ import annotations

import torch

from prunesearch.data.splits import RawDataset

SYNTHETIC_TRAIN = 512
SYNTHETIC_TEST = 128
_SIZE = 8
_SEED = 0  # the data are fixed; only the val split depends on the run's seed


def load_synthetic() -> RawDataset:
    """(N, 1, 8, 8) float images in [0, 1], labels 0..3 = bright quadrant (top-left,
    top-right, bottom-left, bottom-right)."""
    generator = torch.Generator().manual_seed(_SEED)
    n = SYNTHETIC_TRAIN + SYNTHETIC_TEST
    y = torch.randint(0, 4, (n,), generator=generator)
    x = 0.2 + 0.15 * torch.randn(n, 1, _SIZE, _SIZE, generator=generator)
    half = _SIZE // 2
    for label in range(4):
        rows = slice(0, half) if label < 2 else slice(half, _SIZE)
        cols = slice(0, half) if label % 2 == 0 else slice(half, _SIZE)
        x[y == label, :, rows, cols] += 0.6
    x = x.clamp_(0.0, 1.0)
    return RawDataset(
        x[:SYNTHETIC_TRAIN], y[:SYNTHETIC_TRAIN], x[SYNTHETIC_TRAIN:], y[SYNTHETIC_TRAIN:], 4
    )
