"""Search spaces: dimensions, Arch, encode/decode, analytic MACs/params, slicing."""

from prunesearch.spaces.arch import Arch, Dimension, blocks_kept, layer_densities
from prunesearch.spaces.layers import register_layer
from prunesearch.spaces.slicing import Slicer, shrink_to_state, truncate_depth
from prunesearch.spaces.space import DEFAULT_DENSITIES, DEFAULT_WIDTH_RATIOS, Space, width_choices

__all__ = ["DEFAULT_DENSITIES", "DEFAULT_WIDTH_RATIOS", "Arch", "Dimension", "Slicer", "Space",
           "blocks_kept", "layer_densities", "register_layer", "shrink_to_state",
           "truncate_depth", "width_choices"]
