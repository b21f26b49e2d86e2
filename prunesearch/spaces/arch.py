"""The two value types of a search space: a searchable knob and one choice per knob."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

DimensionKind = Literal["width", "depth", "density"]
# dimension names: "<prefix><module name>"
WIDTH_PREFIX, DEPTH_PREFIX, DENSITY_PREFIX = "width:", "depth:", "density:"
Value = int | float  # channels or blocks kept (int), fraction of a layer's weights kept (float)


def blocks_kept(choice: dict[str, Value]) -> dict[str, int]:
    """Blocks kept per droppable stage, read from an Arch's depth dimensions: with the layer
    shapes, all a rebuilt model needs."""
    return {k[len(DEPTH_PREFIX):]: int(v) for k, v in choice.items()
            if k.startswith(DEPTH_PREFIX)}


def layer_densities(choice: dict[str, Value]) -> dict[str, float]:
    """Density below 1 per masked layer (module name), read from an Arch's density dimensions."""
    return {k[len(DENSITY_PREFIX):]: float(v) for k, v in choice.items()
            if k.startswith(DENSITY_PREFIX) and v < 1}


@dataclass(frozen=True)
class Dimension:
    """One searchable knob.

    width: channels kept in a coupled channel group; depth: blocks kept in a stage; density:
    fraction of one conv/linear layer's weights kept (the largest magnitudes). `choices` are
    ascending; a gene is an index into them, so neighbouring genes are neighbouring sizes.
    """

    name: str
    kind: DimensionKind
    choices: tuple[Value, ...]
    full: Value  # the dense model's value (channels of the group, blocks of the stage, 1.0)

    def index(self, value: Value) -> int:
        try:
            return self.choices.index(value)
        except ValueError:
            raise ValueError(
                f"{value} is not a choice of dimension '{self.name}'; choices: {self.choices}"
            ) from None

    def nearest(self, target: float) -> Value:
        """The choice closest to `target` (ties go to the larger choice)."""
        return min(self.choices, key=lambda c: (abs(c - target), -c))


@dataclass(frozen=True)
class Arch:
    """An immutable, hashable choice per dimension, in the space's dimension order.

    The same Arch always means the same subnetwork: a width value keeps that many channels of
    the group, the most important first, in an order fixed once per run.
    """

    values: tuple[tuple[str, Value], ...]

    @classmethod
    def from_dict(cls, choice: dict[str, Value]) -> Arch:
        return cls(tuple((name, float(v) if name.startswith(DENSITY_PREFIX) else int(v))
                         for name, v in choice.items()))

    def to_dict(self) -> dict[str, Value]:
        return dict(self.values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(json.loads(text))

    def __getitem__(self, name: str) -> Value:
        for key, value in self.values:
            if key == name:
                return value
        raise KeyError(name)
