"""What every decoder-only model class adds to its ESPnet parent: strict loading, a decoder check."""

import torch

from espnet_mtla.decoder import DecoderOnlyDecoder
from espnet_mtla.storage.errors import ConfigError


class CheckpointMismatchError(RuntimeError):
    """A state dict does not match the model built from the config."""


def _name_keys(kind: str, keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:5]) + (f", ... ({len(keys) - 5} more)" if len(keys) > 5 else "")
    return f"{len(keys)} {kind} key(s): {shown}"


class DecoderOnlyModelMixin:
    """Mixed into subclasses of ESPnet's task models (ESPnetASRModel, ...).

    ESPnet loads trained models with ``strict=False``, which silently keeps random weights
    for every key a checkpoint lacks; here loading is always strict and names the keys.
    """

    def check_decoder(self, decoder, model_name: str) -> None:
        if not isinstance(decoder, DecoderOnlyDecoder):
            raise ConfigError(
                f"model: {model_name} needs 'decoder: decoder_only', got decoder {type(decoder).__name__}"
            )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = torch.nn.Module.load_state_dict(self, state_dict, strict=False, assign=assign)
        problems = []
        if result.missing_keys:
            problems.append(_name_keys("missing", result.missing_keys))
        if result.unexpected_keys:
            problems.append(_name_keys("unexpected", result.unexpected_keys))
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint does not match the model of the config: {'; '.join(problems)}; "
                "decode with the config.yaml saved next to the checkpoint"
            )
        return result
