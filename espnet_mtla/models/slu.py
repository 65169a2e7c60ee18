"""Spoken language understanding with the decoder-only stack (``model: decoder_only``, slu task).

The target is "<intent> transcript": the first ``intent_tokens`` tokens name the intent
(SLURP: one ``scenario_action`` token). Their loss is weighted by ``intent_weight`` and
training reports ``acc_intent`` (the share of utterances whose intent tokens are all right).
"""

import torch

from espnet2.slu.espnet_model import ESPnetSLUModel
from espnet.nets.pytorch_backend.nets_utils import th_accuracy
from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos

from espnet_mtla.storage.errors import ConfigError
from espnet_mtla.models.common import DecoderOnlyModelMixin
from espnet_mtla.models.losses import weighted_label_smoothing_loss


class DecoderOnlySLUModel(DecoderOnlyModelMixin, ESPnetSLUModel):
    def __init__(self, *args, intent_weight: float = 1.0, intent_tokens: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if self.ctc_weight < 1.0:
            self.check_decoder(self.decoder, "decoder_only")
        if not isinstance(intent_tokens, int) or intent_tokens < 1:
            raise ConfigError(f"model_conf: intent_tokens must be an integer >= 1, got {intent_tokens!r}")
        if not isinstance(intent_weight, (int, float)) or intent_weight < 0:
            raise ConfigError(f"model_conf: intent_weight must be a number >= 0, got {intent_weight!r}")
        self.intent_weight = float(intent_weight)
        self.intent_tokens = intent_tokens
        self.smoothing = self.criterion_att.smoothing
        self.normalize_length = self.criterion_att.normalize_length

    def forward(self, *args, **kwargs):
        """ESPnet's SLU forward; its stats also hold ``acc_intent`` of this batch."""
        intent_accuracy = []

        def att_loss(*inputs):  # ESPnet's forward takes four values from _calc_att_loss
            *result, accuracy = self.att_loss_and_intent_accuracy(*inputs)
            intent_accuracy.append(accuracy)
            return tuple(result)

        self._calc_att_loss = att_loss  # for this call only: nothing stays on the model
        try:
            loss, stats, weight = super().forward(*args, **kwargs)
        finally:
            del self._calc_att_loss
        if intent_accuracy:
            stats["acc_intent"] = intent_accuracy[0].to(loss.device)
        return loss, stats, weight

    def _calc_att_loss(self, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens):
        return self.att_loss_and_intent_accuracy(encoder_out, encoder_out_lens, ys_pad, ys_pad_lens)[:4]

    def att_loss_and_intent_accuracy(self, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens):
        """ESPnet's (loss_att, acc_att, cer_att, wer_att), and the share of utterances whose intent
        tokens are all right (0-d tensor)."""
        ys_in_pad, ys_out_pad = add_sos_eos(ys_pad, self.sos, self.eos, self.ignore_id)
        decoder_out, _ = self.decoder(encoder_out, encoder_out_lens, ys_in_pad, ys_pad_lens + 1)

        is_intent = torch.arange(ys_out_pad.shape[1], device=ys_out_pad.device) < self.intent_tokens
        weight = torch.where(is_intent, self.intent_weight, 1.0).expand_as(ys_out_pad)
        loss_att = weighted_label_smoothing_loss(
            decoder_out, ys_out_pad, weight, self.smoothing, self.ignore_id, self.normalize_length
        )
        acc_att = th_accuracy(decoder_out.view(-1, self.vocab_size), ys_out_pad, ignore_label=self.ignore_id)

        intent_hat = decoder_out[:, : self.intent_tokens].argmax(-1)
        intent_ref = ys_out_pad[:, : self.intent_tokens]
        correct = ((intent_hat == intent_ref) | (intent_ref == self.ignore_id)).all(dim=1)
        intent_accuracy = correct.float().mean().detach()

        if self.training or self.error_calculator is None:
            cer_att, wer_att = None, None
        else:
            cer_att, wer_att = self.error_calculator(decoder_out.argmax(dim=-1).cpu(), ys_pad.cpu())
        return loss_att, acc_att, cer_att, wer_att, intent_accuracy
