"""ESPnet adapter of the decoder-only stack (``decoder: decoder_only``): AbsDecoder + a scorer
of ESPnet's beam searches (``scorer.CachedScorer``).

The stack itself (espnet_mtla.decoder.stack) needs only torch; this class makes it an ESPnet
decoder. ``batch_init_state`` fills every layer's cache with the speech prefix once.
"""

from espnet2.asr.decoder.abs_decoder import AbsDecoder

from espnet_mtla.decoder.scorer import CachedScorer, HypothesisState
from espnet_mtla.decoder.stack import DecoderOnlyStack

__all__ = ["DecoderOnlyDecoder", "HypothesisState"]


class DecoderOnlyDecoder(DecoderOnlyStack, AbsDecoder, CachedScorer):
    """``DecoderOnlyStack`` (same arguments, same parameters) as an ESPnet decoder and scorer."""
