"""Speech translation with the decoder-only stack.

ESPnet's st task has no ``model`` choice: ``STTask.build_model`` always constructs
``ESPnetSTModel``. Registration (espnet_mtla.tasks.registration) makes it construct this subclass when
the decoder is ``decoder_only``.
"""

from espnet2.st.espnet_model import ESPnetSTModel

from espnet_mtla.decoder import DecoderOnlyDecoder
from espnet_mtla.models.common import DecoderOnlyModelMixin


class DecoderOnlySTModel(DecoderOnlyModelMixin, ESPnetSTModel):
    """ESPnet's ST model with a decoder-only translation decoder."""


def build_st_model(**kwargs) -> ESPnetSTModel:
    """Stands in for ``ESPnetSTModel(...)`` inside ``STTask.build_model``."""
    cls = DecoderOnlySTModel if isinstance(kwargs.get("decoder"), DecoderOnlyDecoder) else ESPnetSTModel
    return cls(**kwargs)
