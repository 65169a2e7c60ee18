"""ESPnet adapter of the decoder-only stack as a language model (``lm: decoder_only``): AbsLM +
a scorer of ESPnet's beam searches (``espnet_mtla.decoder.scorer.CachedScorer``).

ESPnet's ``ESPnetLanguageModel`` calls ``lm(x, None)`` with x = <sos> + text, padded at the end
(the stack is causal, so padding changes no earlier position), and reads the logits.
"""

from typing import Optional, Tuple

import torch
from espnet2.lm.abs_model import AbsLM

from espnet_mtla.decoder.scorer import CachedScorer
from espnet_mtla.decoder.stack import DecoderOnlyStack
from espnet_mtla.storage.errors import ConfigError

PREFIX_OPTIONS = ("encoder_output_size", "prefix_stack", "prefix_hidden", "prefix_mode")


class DecoderOnlyLM(DecoderOnlyStack, AbsLM, CachedScorer):
    """``DecoderOnlyStack`` without a prefix (same parameter names) as an ESPnet LM and scorer.

    Args: those of ``DecoderOnlyStack`` except the prefix options (``lm_conf``).
    """

    def __init__(self, vocab_size: int, **conf):
        prefix = [key for key in PREFIX_OPTIONS if key in conf]
        if prefix:
            raise ConfigError(f"lm_conf: {prefix[0]} is a decoder option: a language model has no speech "
                              f"prefix; remove it")
        try:
            super().__init__(vocab_size, None, **conf)
        except ConfigError as err:  # the stack names its section decoder_conf; here it is lm_conf
            raise ConfigError(str(err).replace("decoder_conf", "lm_conf", 1)) from None

    def forward(self, input: torch.Tensor, hidden: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, None]:
        """input: (B, L) token ids, <sos> first -> logits (B, L, V) of each next token, None."""
        caches = self.new_caches(input.shape[0], input.shape[1], self.embed.weight)
        return self.run_tokens(caches, input), None
