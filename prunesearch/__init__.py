"""prunesearch: search-based network pruning. Give it a network and data; it finds the best
smaller networks, shows the accuracy-against-cost front and exports the chosen ones.

    run = prunesearch.search(model, train=train_ds, val=val_ds, test=test_ds,
                             config={"search": {"strategy": "tpe", "budget": 100}},
                             out="runs/mine")
    net = run.build(run.front[0])

See README.md and docs/architecture.md. Imports are lazy: `import prunesearch` is cheap."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load", "open_run", "search"]

if TYPE_CHECKING:
    from torch import nn

    from prunesearch.app.api import Run


def search(model: Any, train: Any = None, val: Any = None, test: Any = None,
           **options: Any) -> Run:
    """Search `model` on the data, fine-tune the chosen front points, return the Run (see
    prunesearch.app.api.search for every option: config, out, trained, resume, device,
    progress)."""
    from prunesearch.app.api import search as run_search

    return run_search(model, train, val, test, **options)


def open_run(path: str | Path, **inputs: Any) -> Run:
    """A finished run folder as a Run; a run over a network or datasets handed over in
    Python needs them again (model=, train=, val=, test=)."""
    from prunesearch.app.api import open_run as open_existing

    return open_existing(path, **inputs)


def load(path: Any, trust_code: bool = False, model: nn.Module | None = None) -> nn.Module:
    """An exported subnetwork (folder written by `prunesearch export`) as an nn.Module. A zoo
    model needs no trust; one built by the user's `module:factory` code loads only with
    `trust_code=True` (loading imports and calls that code); one exported from a network
    handed to prunesearch.search() needs that full network as `model`."""
    from prunesearch.runs.export import load as load_export

    return load_export(path, trust_code, model)
