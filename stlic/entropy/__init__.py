"""Entropy models of ST-LIC: the RWKV space-channel context model and QVRF gains."""
from stlic.entropy.channel_context import SCCTXEntropyModel
from stlic.entropy.qvrf import QuantGain

__all__ = ["SCCTXEntropyModel", "QuantGain"]
