"""`[task]`: a user's own loss and metric, named as 'module:fn', for networks that do more than
classify (a segmentation network scored by mean IoU, a regression by its error).

    [task]
    loss = "mypkg.seg:dice_loss"        # fn(outputs, labels) -> scalar tensor (a batch's mean)
    metric = "mypkg.seg:mean_iou"       # fn(outputs, labels) -> float, a whole split at once
    higher_is_better = true             # IoU: in [0, 1]; false: an error >= 0

Unset, the loss is cross-entropy and the metric accuracy (perplexity for a label per
position). Every stage (dense training, supernet, search, fine-tuning, export) trains with the
loss and ranks by the metric; distillation (finetune.kd) applies to class logits only.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pydantic import Field

from prunesearch.errors import ConfigError
from prunesearch.metrics import Metric
from prunesearch.options import Options
from prunesearch.plugins import import_factory
from prunesearch.scoring import Task

if TYPE_CHECKING:
    from prunesearch.data import DatasetSplits


class TaskConfig(Options):
    loss: str | None = Field(None, description="'module:fn': fn(outputs, labels) -> the mean "
                             "loss of a batch, a scalar tensor (unset: cross-entropy)")
    metric: str | None = Field(None, description="'module:fn': fn(outputs, labels) -> float, "
                               "called once per split with all its outputs (unset: accuracy, "
                               "or perplexity for a label per position)")
    higher_is_better: bool = Field(True, description="the metric's direction: higher in "
                                   "[0, 1] (IoU, F1), or lower and >= 0 (an error)")

    @property
    def custom(self) -> bool:
        return self.loss is not None or self.metric is not None


def task_of(cfg: TaskConfig, data: DatasetSplits) -> DatasetSplits:
    """`data` carrying the task `cfg` names (unchanged when it names none)."""
    if not cfg.custom:
        if data.val_y.dim() > 2:
            raise ConfigError(
                f"Dataset '{data.name}' has a label per pixel {tuple(data.val_y.shape[1:])}, "
                f"which cross-entropy over class logits and accuracy do not read; name the "
                f"loss and metric in the config's [task] section (task.loss, task.metric, "
                f"e.g. a per-pixel cross-entropy and mean IoU).")
        return data
    default = Task.default(data.val_y)
    loss = default.loss if cfg.loss is None else \
        import_factory(cfg.loss, "task.loss", ConfigError, returns="a loss tensor")
    if cfg.metric is None:
        task = dataclasses.replace(default, loss=loss)
    else:
        measure = import_factory(cfg.metric, "task.metric", ConfigError, returns="a float")
        name = cfg.metric.partition(":")[2].rpartition(".")[2]
        task = Task(Metric(name, not cfg.higher_is_better, custom=True), loss, measure)
    return dataclasses.replace(data, task=task)
