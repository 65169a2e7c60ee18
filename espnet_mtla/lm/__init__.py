"""Language models: ``lm: decoder_only`` in ESPnet's ``lm`` task.

    lm: decoder_only
    lm_conf: {attention_type: mtla, model_dim: 256, attention_heads: 4, num_blocks: 4,
              mtla_conf: {down_rate: 2}}

``decoder_only_lm.DecoderOnlyLM`` is the decoder-only stack (espnet_mtla.decoder.stack) without
a speech prefix: the same layers, caches and attention types. As an ESPnet scorer it keeps
real KV caches (ESPnet's ``TransformerLM`` re-projects every earlier token's keys and values at
every step); our multi-utterance search fuses it with one call per step (espnet_mtla.search).
It imports ESPnet and loads on first use.
"""

__all__ = ["DecoderOnlyLM"]


def __getattr__(name):
    if name == "DecoderOnlyLM":
        from espnet_mtla.lm.decoder_only_lm import DecoderOnlyLM

        return DecoderOnlyLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
