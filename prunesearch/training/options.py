"""The `[supernet]` and `[finetune]` sections of a run config: the training stages around the
search (the dense recipe itself is `model.train`, prunesearch.models.options)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from prunesearch.options import Options


class SupernetConfig(Options):
    """`[supernet]`: train the dense model further as a weight-sharing supernet over the
    run's space (sandwich rule, in-place distillation) before the search; 0 epochs: off."""

    epochs: int = Field(0, ge=0)
    random_subnets: int = Field(2, ge=0, description="random subnetworks per step, besides "
                                "the largest and the smallest")
    temperature: float = Field(1.0, gt=0, description="of the in-place distillation")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: "
                             "model.train.lr), cosine to zero over the stage")
    max_train_images: int | None = Field(None, ge=1, description="train on a prefix "
                                         "(default: model.train.max_train_images)")
    sample: Literal["uniform", "near-limit"] = Field(
        "uniform", description="how the random subnetworks are drawn: uniformly over the "
        "space, or among those the latency table predicts near search.max_latency (the ones a "
        "latency-limited search ranks)")


class FinetuneConfig(Options):
    """Which front points are trained back to strength, and how (dense recipe's schedule)."""

    enabled: bool = True
    targets: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75],
                                 description="cost ratios on search.objective's axis (MACs "
                                 "by default): the best proxy point under each")
    top_k: int | None = Field(None, ge=1, description="instead: K points spread on the front")
    ids: list[int] = Field(default_factory=list, description="instead: these candidate ids "
                           "(any candidate, on the front or not)")
    epochs: int | None = Field(None, ge=1, description="default: model.train.epochs")
    lr: float | None = Field(None, gt=0, description="peak learning rate, cosine to zero "
                             "(default: model.train.lr)")
    max_train_images: int | None = Field(None, ge=1, description="train on a prefix: cheap "
                                         "fine-tuning of many points (default: "
                                         "model.train.max_train_images)")
    init: Literal["inherit", "dense", "scratch"] = Field(
        "inherit", description="the weights a point starts from: the ones the search scored it "
        "on (inherit: the supernet's when that stage ran), the dense model's own, sliced "
        "(dense: the supernet stage then only ranks the candidates, and fine-tuning continues "
        "the dense model's schedule), or fresh ones (scratch)")
    kd: bool = Field(False, description="distil from the network the point was cut from "
                     "(labels only by default: measured better, benchmarks/kd_settings.py)")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)

    @field_validator("targets")
    @classmethod
    def _targets_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < t <= 1 for t in v):
            raise ValueError("targets must be cost ratios in (0, 1]")
        return sorted(set(v))
