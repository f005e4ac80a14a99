"""Building blocks of the ST-LIC networks (see docs/architecture.md for the file layout)."""
from stlic.layers.omnishift import OmniShift
from stlic.layers.rwkv import BiRWKVBlock, ChannelMix, SpatialMix
from stlic.layers.wkv import bi_wkv, bi_wkv_reference

__all__ = ["BiRWKVBlock", "ChannelMix", "OmniShift", "SpatialMix", "bi_wkv", "bi_wkv_reference"]
