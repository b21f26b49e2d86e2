"""prunesearch: search-based network pruning; see README.md and docs/architecture.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch import nn


def load(path: Any, trust_code: bool = False) -> nn.Module:
    """An exported subnetwork (folder written by `prunesearch export`) as an nn.Module. A zoo
    model needs no trust; one built by the user's `module:factory` code loads only with
    `trust_code=True` (loading imports and calls that code)."""
    from prunesearch.runs.export import load as load_export

    return load_export(path, trust_code)
