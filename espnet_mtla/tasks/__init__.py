"""Registration into ESPnet 202511's task registries; runs once, on import.

    import espnet_mtla.tasks   # then ESPnet's asr/st/slu/mt tasks know:
    decoder: decoder_only      # espnet_mtla.decoder.DecoderOnlyDecoder (asr, st, slu, mt)
    model: decoder_only        # DecoderOnly{ASR,SLU,MT}Model (asr, slu, mt)
    data type: zip_npy         # espnet_mtla.data.zip_features (fairseq-style zip storage)

The st task has no ``model`` choice; its ``build_model`` builds ``DecoderOnlySTModel``
whenever the decoder is ``decoder_only``. Each task's ``build_model`` also turns a
misspelled ``*_conf`` key into a one-line ConfigError naming the section and the key.

Import this before any ESPnet parser is built (the CLIs in espnet_mtla.bin do).
"""

import contextlib
import functools
import importlib
import io
import logging
import re


def _import_espnet_quietly(name: str):
    """Import an ESPnet module without its import-time side effects on the console.

    espnet prints a flash_attn notice to stdout, and g2p_en (pulled in by the text
    preprocessors) tries to download nltk data at import, which fails offline.
    """
    import nltk

    download, nltk.download = nltk.download, lambda *args, **kwargs: False
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            module = importlib.import_module(name)
    finally:
        nltk.download = download
    if captured.getvalue().strip():
        logging.getLogger(__name__).debug("import %s printed: %s", name, captured.getvalue().strip())
    return module


asr_task = _import_espnet_quietly("espnet2.tasks.asr")
st_task = _import_espnet_quietly("espnet2.tasks.st")
slu_task = _import_espnet_quietly("espnet2.tasks.slu")
mt_task = _import_espnet_quietly("espnet2.tasks.mt")

from espnet_mtla.data.zip_features import register_data_type
from espnet_mtla.decoder import DecoderOnlyDecoder
from espnet_mtla.errors import ConfigError
from espnet_mtla.models.asr import DecoderOnlyASRModel
from espnet_mtla.models.mt import DecoderOnlyMTModel
from espnet_mtla.models.slu import DecoderOnlySLUModel
from espnet_mtla.models.st import build_st_model

NAME = "decoder_only"
TASKS = {"asr": asr_task.ASRTask, "st": st_task.STTask, "slu": slu_task.SLUTask, "mt": mt_task.MTTask}
_UNEXPECTED = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


def _explain_unknown_keys(build_model):
    """Wrap a Task.build_model: a TypeError for an unknown keyword becomes a ConfigError."""

    @functools.wraps(build_model)
    def wrapper(cls, args):
        try:
            return build_model(cls, args)
        except TypeError as err:
            match = _UNEXPECTED.search(str(err))
            if not match:
                raise
            cls_name, key = match.groups()
            sections = [
                name for name, value in vars(args).items()
                if name.endswith("_conf") and isinstance(value, dict) and key in value
            ]
            where = sections[0] if sections else "config"
            raise ConfigError(f"{where}: unknown key {key!r} for {cls_name}; check its spelling") from None

    return wrapper


def register() -> None:
    if getattr(register, "done", False):
        return
    for module in (asr_task, st_task, slu_task, mt_task):
        module.decoder_choices.classes[NAME] = DecoderOnlyDecoder
    asr_task.model_choices.classes[NAME] = DecoderOnlyASRModel
    slu_task.model_choices.classes[NAME] = DecoderOnlySLUModel
    mt_task.model_choices.classes[NAME] = DecoderOnlyMTModel
    st_task.ESPnetSTModel = build_st_model
    for task in TASKS.values():
        task.build_model = classmethod(_explain_unknown_keys(task.build_model.__func__))
    register_data_type()
    register.done = True


register()
