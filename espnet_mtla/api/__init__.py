"""The Python API: trained models loaded from an exp dir or a packed model, decoding files,
arrays, texts and long recordings.

    from espnet_mtla.api import load_model
    model = load_model("exp/asr_train_mtla")
    print(model("utt.flac").text)
    for seg in model.transcribe_long("meeting.flac").segments:
        print(seg.start, seg.end, seg.text)

``model`` (``api.model``): loading and batched decoding; ``long_form``: VAD segmentation and
stitching; ``vad``: Silero / energy voice activity; ``formats``: text, JSON, SRT, WebVTT,
Kaldi and CTM outputs. The CLI over all of it is ``python -m espnet_mtla.bin.transcribe``.
"""

from espnet_mtla.api.long_form import Segment, Transcript, Word, transcribe
from espnet_mtla.api.model import Hypothesis, ModelLoadError, Result, TrainedModel, load_model

__all__ = ["load_model", "TrainedModel", "Result", "Hypothesis", "ModelLoadError", "transcribe", "Transcript",
           "Segment", "Word"]
