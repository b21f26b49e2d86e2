"""Search spaces: dimensions, Arch, encode/decode, analytic MACs/params, slicing."""

from prunesearch.spaces.arch import Arch, Dimension
from prunesearch.spaces.slicing import Slicer, register_slicer
from prunesearch.spaces.space import DEFAULT_WIDTH_RATIOS, Space, width_choices

__all__ = ["Arch", "DEFAULT_WIDTH_RATIOS", "Dimension", "Slicer", "Space", "register_slicer",
           "width_choices"]
