"""Registration into ESPnet 202511's task registries; runs once, on import.

    import espnet_mtla.tasks.registration   # then ESPnet's asr/st/slu/mt tasks know:
    decoder: decoder_only      # espnet_mtla.decoder.DecoderOnlyDecoder (every task)
    decoder: cached_transformer  # espnet_mtla.decoder.cached_transformer (every task, ESPnet's models)
    model: decoder_only        # the task's model (espnet_mtla.task_specs: DecoderOnly{ASR,SLU,MT}Model)
    lm: decoder_only           # espnet_mtla.lm.DecoderOnlyLM, in ESPnet's lm task
    data type: zip_npy         # espnet_mtla.data.zip_features (fairseq-style zip storage)

The tasks and their classes come from the task table (``espnet_mtla.task_specs``).
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

from espnet_mtla.storage.patches import patch_for_process, patched


def _import_espnet_quietly(name: str):
    """Import an ESPnet module without its import-time side effects on the console.

    espnet prints a flash_attn notice to stdout, and g2p_en (pulled in by the text
    preprocessors) tries to download nltk data at import, which fails offline.
    """
    import nltk

    captured = io.StringIO()
    with patched(nltk, "download", lambda *args, **kwargs: False), contextlib.redirect_stdout(captured):
        module = importlib.import_module(name)
    if captured.getvalue().strip():
        logging.getLogger(__name__).debug("import %s printed: %s", name, captured.getvalue().strip())
    return module


from espnet_mtla.data.zip_features import register_data_type  # noqa: E402
from espnet_mtla.storage.errors import ConfigError  # noqa: E402
from espnet_mtla.task_specs import TASKS  # noqa: E402

NAME = "decoder_only"
ENCODER_DECODER = "cached_transformer"  # ESPnet's own models, our cached decoder
# espnet2.tasks.<task> modules and their task classes, for every task of the task table
ESPNET_TASK_MODULES = {name: _import_espnet_quietly(f"espnet2.tasks.{name}") for name in TASKS}
ESPNET_TASKS = {name: getattr(ESPNET_TASK_MODULES[name], spec.espnet_task) for name, spec in TASKS.items()}
ESPNET_LM_MODULE = _import_espnet_quietly("espnet2.tasks.lm")
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
    from espnet_mtla.decoder import DecoderOnlyDecoder
    from espnet_mtla.decoder.cached_transformer import CachedTransformerDecoder
    from espnet_mtla.lm import DecoderOnlyLM

    for name, spec in TASKS.items():
        module = ESPNET_TASK_MODULES[name]
        module.decoder_choices.classes[NAME] = DecoderOnlyDecoder
        module.decoder_choices.classes[ENCODER_DECODER] = CachedTransformerDecoder
        if hasattr(module, "model_choices"):
            module.model_choices.classes[NAME] = spec.load_model()
        else:  # st: no model choice; ESPnet's STTask builds ESPnetSTModel, our builder picks the class
            patch_for_process(module, "ESPnetSTModel", spec.load_model())
        task = ESPNET_TASKS[name]
        patch_for_process(task, "build_model", classmethod(_explain_unknown_keys(task.build_model.__func__)))
    ESPNET_LM_MODULE.lm_choices.classes[NAME] = DecoderOnlyLM
    lm_task = ESPNET_LM_MODULE.LMTask
    patch_for_process(lm_task, "build_model", classmethod(_explain_unknown_keys(lm_task.build_model.__func__)))
    register_data_type()
    register.done = True


register()
