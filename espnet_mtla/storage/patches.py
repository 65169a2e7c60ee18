"""Every runtime patch of torch and ESPnet goes through ``patched`` (for a block) or
``patch_for_process`` (registration), so that what we change in other people's code is in
one list, ``PATCHES``, and ``active_patches()`` tells what is patched right now.

ESPnet 202511 has no hook at these points; each patch names why it exists:

    what is patched                           where                                    why
    torch.load                                storage.safe_load.safe_loading           no model file runs code when loaded
    torch.save                                storage.training_files.atomic_torch_save no half-written checkpoint after a kill
    espnet2.tasks.abs_task.load_pretrained_model  storage.init_param.checked_init_param  --init_param mismatch: one line
    <inference class>.__call__                cli.inference.recording_efficiency       time and memory of each utterance
    <task class>.build_streaming_iterator     cli.inference.recording_efficiency       the key of the utterance being decoded
    <task class>.build_model                  tasks.registration (process)             misspelled *_conf key: one line
    espnet2.tasks.st.ESPnetSTModel            tasks.registration (process)             st builds our model class
    nltk.download                             tasks.registration                       ESPnet's import never downloads
"""

import contextlib
from typing import Any, Iterator, List

PATCHES = ("torch.load", "torch.save", "espnet2.tasks.abs_task.load_pretrained_model",
           "<inference class>.__call__", "<task class>.build_streaming_iterator", "<task class>.build_model",
           "espnet2.tasks.st.ESPnetSTModel", "nltk.download")
_active: List[str] = []


def _name(obj: Any, attribute: str) -> str:
    return f"{getattr(obj, '__name__', type(obj).__name__)}.{attribute}"


@contextlib.contextmanager
def patched(obj: Any, attribute: str, value: Any) -> Iterator[None]:
    """``obj.attribute = value`` inside the block; afterwards the original again (an attribute
    that ``obj`` only inherited is removed, so the class sees its parent's again)."""
    had_own = attribute in vars(obj)
    original = vars(obj).get(attribute)
    setattr(obj, attribute, value)
    _active.append(_name(obj, attribute))
    try:
        yield
    finally:
        _active.remove(_name(obj, attribute))
        if had_own:
            setattr(obj, attribute, original)
        else:
            delattr(obj, attribute)


def patch_for_process(obj: Any, attribute: str, value: Any) -> None:
    """``obj.attribute = value`` for the rest of the process (registration into ESPnet)."""
    setattr(obj, attribute, value)
    _active.append(_name(obj, attribute))


def active_patches() -> List[str]:
    """What is patched now, innermost last, e.g. ``['torch.load', 'ASRTask.build_model']``."""
    return list(_active)
