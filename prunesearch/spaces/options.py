"""The `[space]` section of a run config: which widths, depths and densities are searched, and
which channels a width keeps."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from prunesearch.options import Options


class SpaceConfig(Options):
    width_ratios: list[float] = [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    depth: bool = True
    ignore: list[str] = Field(default_factory=list, description="module names never pruned")
    densities: list[float] = Field(default_factory=list, description="weight-density choices "
                                   "per conv/linear layer (e.g. 1.0 down to 0.02); empty: none")
    round_to: int = Field(1, ge=1, description="channel counts in multiples of this (e.g. 8: "
                          "widths hardware runs fast); a group narrower than it stays whole")
    importance: Literal["magnitude", "taylor"] = Field(
        "magnitude", description="which channels a width keeps: largest weights (L1), or "
        "largest first-order Taylor |weight x gradient| on training batches (LLM-Pruner)")
    layer_uniform: bool = Field(False, description="one width choice per kind of group for "
                                "all layers (every layer's heads, every layer's MLP): the "
                                "shape a Hugging Face config holds (export --format hf)")
    added_later: ClassVar[dict[str, Any]] = {"importance": "magnitude", "layer_uniform": False}

    @field_validator("width_ratios")
    @classmethod
    def _ratios_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < r <= 1 for r in v):
            raise ValueError("width_ratios must be a non-empty list of numbers in (0, 1]")
        return sorted(set(v))

    @field_validator("densities")
    @classmethod
    def _densities_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0 < d <= 1 for d in v):
            raise ValueError("densities must be fractions of a layer's weights in (0, 1]")
        return sorted(set(v))
