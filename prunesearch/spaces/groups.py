"""A coupled channel group: the module sides whose channels are pruned together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    """One module side of a group: `idxs[j]` of that side belongs to root channel `roots[j]`."""

    module: str
    side: str  # "out" (output channels, or a norm layer's features) or "in"
    idxs: tuple[int, ...]
    roots: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the root module's qualified name
    size: int
    members: tuple[Member, ...]
    unit: str = "channels"  # what a root is: channels, conv groups, heads, key/value heads
