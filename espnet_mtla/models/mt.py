"""Text-to-text (summarisation, MT) with the decoder-only stack (``model: decoder_only``, mt task)."""

from espnet2.mt.espnet_model import ESPnetMTModel

from espnet_mtla.models.common import DecoderOnlyModelMixin


class DecoderOnlyMTModel(DecoderOnlyModelMixin, ESPnetMTModel):
    """ESPnet's MT model: embedded source text -> encoder -> prefix of the decoder-only stack."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_decoder(self.decoder, "decoder_only")
