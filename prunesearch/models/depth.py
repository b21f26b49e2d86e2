"""The depth-search contract: which blocks of a model may be dropped.

A model supports depth search by defining `depth_stages() -> [(qualified_name, stage)]`, where
each stage is an `nn.Sequential` of blocks and every block after the first maps x to a tensor of
x's shape. Keeping the first k blocks of such a stage (`del stage[k:]`) is then a valid smaller
network. A one-block stage satisfies the contract with nothing to drop. User models may define
the method too; models without it have no depth dimensions.
"""

from __future__ import annotations

from torch import nn


class StagedModel(nn.Module):
    """Base of zoo models that keep their droppable stages in `self.stages`."""

    stages: nn.ModuleList

    def depth_stages(self) -> list[tuple[str, nn.Sequential]]:
        return [(f"stages.{i}", stage) for i, stage in enumerate(self.stages)]


def depth_stages(model: nn.Module) -> list[tuple[str, nn.Sequential]]:
    """The model's droppable stages, or [] for a model without the `depth_stages` method."""
    method = getattr(model, "depth_stages", None)
    return list(method()) if callable(method) else []
