"""ASR with the decoder-only stack (``model: decoder_only`` in the asr task)."""

from espnet2.asr.espnet_model import ESPnetASRModel

from espnet_mtla.models.common import DecoderOnlyModelMixin


class DecoderOnlyASRModel(DecoderOnlyModelMixin, ESPnetASRModel):
    """ESPnet's ASR model (label-smoothed CE + optional CTC) with a decoder-only decoder."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.ctc_weight < 1.0:
            self.check_decoder(self.decoder, "decoder_only")
