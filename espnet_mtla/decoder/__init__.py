"""Decoder-only stack: ``stack.py`` (torch only) and its ESPnet adapter ``decoder_only.py``.

``DecoderOnlyDecoder`` and ``HypothesisState`` import ESPnet; they load on first use, so that
``espnet_mtla.decoder.stack`` works without it.
"""

from espnet_mtla.decoder.stack import DecoderCaches, DecoderOnlyStack

__all__ = ["DecoderCaches", "DecoderOnlyDecoder", "DecoderOnlyStack", "HypothesisState"]


def __getattr__(name):
    if name in ("DecoderOnlyDecoder", "HypothesisState"):
        from espnet_mtla.decoder import decoder_only

        return getattr(decoder_only, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
