"""The model section of a run config: which model, and the recipe that trains it. They live here,
beside the code that uses them, so that models/ and search/ never import the CLI's config."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from prunesearch.options import Options


class TrainConfig(Options):
    """Dense-training recipe: SGD with momentum (or AdamW), cosine schedule, light
    augmentation."""

    epochs: int = Field(3, ge=0)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="sgd: Nesterov momentum; adamw: decoupled weight decay (what "
        "transformers train with; use an lr near 1e-3)")
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(5e-4, ge=0)
    augment: bool = True
    max_train_images: int | None = Field(None, ge=1, description="train on a prefix (smoke jobs)")
    schedule_epochs: int | None = Field(
        None, ge=1, description="length of the dense model's cosine schedule when longer than "
        "`epochs`: the dense model stops part-way down it, and the supernet stage and "
        "fine-tuning continue it (the dense lr, not their own) instead of restarting at a peak")
    added_later: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "schedule_epochs": None}

    @property
    def longer_schedule(self) -> int | None:
        """`schedule_epochs` when it is longer than `epochs` (else None: no stage continues
        the dense model's schedule)."""
        return None if self.schedule_epochs in (None, self.epochs) else self.schedule_epochs

    @model_validator(mode="after")
    def _schedule_covers_the_epochs(self) -> TrainConfig:
        if self.schedule_epochs is not None and self.schedule_epochs < self.epochs:
            raise ValueError(f"schedule_epochs ({self.schedule_epochs}) is shorter than epochs "
                             f"({self.epochs}); make it at least epochs, or leave it out")
        return self


class ModelConfig(Options):
    name: str = "resnet20"
    width_mult: float = Field(1.0, gt=0)
    checkpoint: str | None = None
    train: TrainConfig = TrainConfig()
