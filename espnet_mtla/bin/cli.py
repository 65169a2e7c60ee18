"""Shared body of the thin CLIs: register our classes, then run ESPnet's own ``main``.

Every ESPnet option keeps working. Configuration mistakes that we detect (ConfigError,
checkpoint/config mismatches) end the run with one line on stderr instead of a traceback.
Inference also writes ``<output_dir>/1best_recog/efficiency.json`` (see
espnet_mtla.metrics.efficiency).
"""

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

# ESPnet's inference entry points, per task: (inference object class, task class).
INFERENCE_CLASSES = {
    "asr": ("Speech2Text", "ASRTask"),
    "st": ("Speech2Text", "STTask"),
    "slu": ("Speech2Understand", "SLUTask"),
    "mt": ("Text2Text", "MTTask"),
}


def _fail(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)


def run_training(task: str, cmd: Optional[List[str]] = None) -> None:
    import espnet_mtla.tasks  # noqa: F401  (registers)
    from espnet_mtla.errors import ConfigError

    module = importlib.import_module(f"espnet2.bin.{task}_train")
    try:
        module.main(cmd)
    except ConfigError as err:
        _fail(err)


@contextlib.contextmanager
def _patched(obj, name: str, value):
    had_own = name in vars(obj)
    original = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had_own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)


@contextlib.contextmanager
def recording_efficiency(module, task: str, recorder):
    """Route the inference object's calls and the data iterator of ``module`` through ``recorder``."""
    class_name, task_name = INFERENCE_CLASSES[task]
    inference_class = getattr(module, class_name)
    task_class = getattr(module, task_name)
    call = inference_class.__call__
    build_iterator = task_class.build_streaming_iterator.__func__

    def measured_call(self, *args, **kwargs):
        return recorder.measure(call, self, *args, **kwargs)

    def keyed_iterator(cls, *args, **kwargs):
        for keys, batch in build_iterator(cls, *args, **kwargs):
            recorder.current_key = keys[0] if len(keys) == 1 else None
            yield keys, batch

    with _patched(inference_class, "__call__", measured_call), _patched(
        task_class, "build_streaming_iterator", classmethod(keyed_iterator)
    ):
        yield


def unpack_model_option(task: str, cmd: List[str]) -> List[str]:
    """``--packed_model x.zip`` (stage 11's archive) -> ``--<task>_train_config``/``--<task>_model_file``.

    The archive is unpacked next to itself (``x.zip`` -> ``x/``), once.
    """
    if "--packed_model" not in cmd:
        return cmd
    from espnet2.main_funcs.pack_funcs import unpack

    i = cmd.index("--packed_model")
    if i + 1 >= len(cmd):
        raise SystemExit("error: --packed_model needs a zip file")
    archive = Path(cmd[i + 1])
    if not archive.is_file():
        raise SystemExit(f"error: --packed_model: no such file: {archive}")
    files = unpack(archive, archive.with_suffix(""))
    rest = cmd[:i] + cmd[i + 2:]
    return rest + [f"--{task}_train_config", files[f"{task}_train_config"], f"--{task}_model_file",
                   files[f"{task}_model_file"]]


def run_inference(task: str, cmd: Optional[List[str]] = None) -> None:
    import espnet_mtla.tasks  # noqa: F401  (registers)
    from espnet_mtla.errors import ConfigError
    from espnet_mtla.metrics.efficiency import EfficiencyRecorder
    from espnet_mtla.models.common import CheckpointMismatchError

    cmd = unpack_model_option(task, list(sys.argv[1:] if cmd is None else cmd))
    module = importlib.import_module(f"espnet2.bin.{task}_inference")
    args = module.get_parser().parse_args(cmd)
    device = "cuda" if args.ngpu >= 1 else "cpu"
    recorder = EfficiencyRecorder(device)
    try:
        with recording_efficiency(module, task, recorder):
            module.main(cmd)
    except (ConfigError, CheckpointMismatchError) as err:
        _fail(err)
    summary = recorder.write(os.path.join(args.output_dir, "1best_recog", "efficiency.json"))
    logging.info(
        "efficiency: %d utterances, %.3f s, %s tokens/s, peak memory %.1f MiB (%s), peak KV cache %s bytes",
        summary["num_utterances"], summary["total_decode_time_s"], summary["tokens_per_s"],
        summary["peak_memory_bytes"] / 2**20, summary["peak_memory_kind"], summary["cache_bytes_peak"],
    )
