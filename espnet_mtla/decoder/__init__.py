"""Decoder stacks (torch only) and their ESPnet adapters.

    stack.py            decoder-only Transformer over [prefix ; text]    decoder_only.py (decoder: decoder_only)
    encoder_decoder.py  ESPnet's Transformer decoder, cached, with a     cached_transformer.py
                        source memory (source_attention.py)              (decoder: cached_transformer)

``scorer.py`` makes both adapters scorers of ESPnet's searches. ``DecoderOnlyDecoder`` and
``HypothesisState`` import ESPnet; they load on first use, so that the stacks work without it.
"""

from espnet_mtla.decoder.stack import DecoderCaches, DecoderOnlyStack

__all__ = ["DecoderCaches", "DecoderOnlyDecoder", "DecoderOnlyStack", "HypothesisState"]


def __getattr__(name):
    if name in ("DecoderOnlyDecoder", "HypothesisState"):
        from espnet_mtla.decoder import decoder_only

        return getattr(decoder_only, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
