"""ESPnet adapter of the encoder-decoder stack (``decoder: cached_transformer``): AbsDecoder +
a scorer of ESPnet's beam searches (``scorer.CachedScorer``), for ESPnet's own ASR, ST, SLU and
MT models (attention + CTC loss).

    decoder: cached_transformer      # instead of ESPnet's ``transformer``: same options
    decoder_conf:
        attention_type: mtla         # mha (ESPnet's layer: a trained model's weights load) | mqa | gqa | mla | mtla
        source_attention: latent     # mha (default, ESPnet's) | latent (one latent per frame)
        source_conf: {kv_lora_rank: 128, down_rate: 2}
"""

from espnet2.asr.decoder.abs_decoder import AbsDecoder

from espnet_mtla.decoder.encoder_decoder import EncoderDecoderStack
from espnet_mtla.decoder.scorer import CachedScorer


class CachedTransformerDecoder(EncoderDecoderStack, AbsDecoder, CachedScorer):
    """``EncoderDecoderStack`` (same arguments, same parameters) as an ESPnet decoder and scorer."""
