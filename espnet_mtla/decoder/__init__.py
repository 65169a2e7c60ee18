"""Decoder-only stack for ESPnet (``decoder: decoder_only``); see decoder_only.py."""

from espnet_mtla.decoder.decoder_only import DecoderCaches, DecoderOnlyDecoder, HypothesisState

__all__ = ["DecoderCaches", "DecoderOnlyDecoder", "HypothesisState"]
