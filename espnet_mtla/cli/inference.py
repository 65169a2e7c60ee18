"""``python -m espnet_mtla.bin.<task>_inference``: ESPnet's ``<task>_inference`` with our classes
registered, batched decoding (``cli.batch_inference``), and ``efficiency.json`` beside the hypotheses."""

import contextlib
import importlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Union

from espnet_mtla.attention.backends import ATTN_BACKENDS
from espnet_mtla.cli.options import (check_batching, check_inference_inputs, fail, inference_parser, pop_option,
                                     unpack_model_option)
from espnet_mtla.storage.patches import patched
from espnet_mtla.storage.safe_load import TRUST_OPTION
from espnet_mtla.task_specs import TaskSpec, get_task


@contextlib.contextmanager
def recording_efficiency(module, spec: TaskSpec, recorder, attn_backend: Optional[str] = None):
    """Route the inference object's calls and the data iterator of ``module`` through ``recorder``;
    with ``attn_backend``, switch the model's attention layers to it before the first call."""
    from espnet_mtla.cli.batch_inference import use_attention_backend

    inference_class = getattr(module, spec.inference_class)
    task_class = getattr(module, spec.espnet_task)
    call = inference_class.__call__
    build_iterator = task_class.build_streaming_iterator.__func__

    def measured_call(self, *args, **kwargs):
        if attn_backend and getattr(self, "_attn_backend", None) != attn_backend:
            use_attention_backend(self, spec, attn_backend)
        return recorder.measure(call, self, *args, **kwargs)

    def keyed_iterator(cls, *args, **kwargs):
        for keys, batch in build_iterator(cls, *args, **kwargs):
            recorder.current_key = keys[0] if len(keys) == 1 else None
            yield keys, batch

    with patched(inference_class, "__call__", measured_call), patched(
        task_class, "build_streaming_iterator", classmethod(keyed_iterator)
    ):
        yield


@contextlib.contextmanager
def readable_inputs(data_path_and_name_and_type):
    """ESPnet's per-utterance loop reads its inputs in a DataLoader worker, where an unreadable
    file fails deep inside the loader: within this, it fails with ``BadAudioError`` naming the
    file and the utterance (re-raised by the DataLoader in the main process, traceback attached:
    ``one_line`` takes the message back out)."""
    from espnet2.train.iterable_dataset import IterableESPnetDataset

    from espnet_mtla.cli.batch_inference import unreadable
    from espnet_mtla.storage.errors import BadAudioError

    iterate = IterableESPnetDataset.__iter__
    path = data_path_and_name_and_type[0][0]
    with open(path, encoding="utf-8") as f:
        entries = [line.rstrip("\n").split(maxsplit=1) for line in f if line.strip()]

    def checked(self):
        items, done = iterate(self), 0
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as err:  # what a loader raises on a bad file varies
                key, value = (entries[done] + [path])[:2] if done < len(entries) else ("?", path)
                raise BadAudioError(f"{unreadable(value, key, err)}; fix or drop it, or decode the rest with "
                                    "batched decoding and --skip_bad_audio true") from None
            done += 1
            yield item

    with patched(IterableESPnetDataset, "__iter__", checked):
        yield


def one_line(err: Exception) -> str:
    """An error's own message, without the worker traceback a DataLoader wraps it in."""
    text = str(err)
    if "Original Traceback" in text:
        text = text.rstrip().rsplit(f"{type(err).__name__}: ", 1)[-1]
    return text


def run_inference(task: Union[str, TaskSpec], cmd: Optional[List[str]] = None) -> None:
    spec = get_task(task) if isinstance(task, str) else task
    task = spec.name
    import espnet_mtla.tasks.registration  # noqa: F401  (registers)
    from espnet_mtla.cli import batch_inference
    from espnet_mtla.storage.errors import BadAudioError, BatchDecodingError, ConfigError
    from espnet_mtla.metrics.efficiency import EfficiencyRecorder, decoding_setup
    from espnet_mtla.models.common import CheckpointMismatchError
    from espnet_mtla.storage.safe_load import UnsafeModelFileError, load_state_dict_file, safe_loading

    cmd = unpack_model_option(spec, list(sys.argv[1:] if cmd is None else cmd))
    cmd, batch_encoder = pop_option(cmd, "--batch_encoder", "false", ("true", "false"))
    cmd, attn_backend = pop_option(cmd, "--attn_backend", None, ATTN_BACKENDS)
    cmd, cuda_graphs = pop_option(cmd, "--cuda_graphs", "false", ("true", "false"))
    cmd, trust = pop_option(cmd, TRUST_OPTION, "false", ("true", "false"))
    cmd, skip_bad_audio = pop_option(cmd, "--skip_bad_audio", "false", ("true", "false"))
    trust = trust == "true"
    module = importlib.import_module(spec.espnet_module("inference"))
    args = inference_parser(module).parse_args(cmd)
    batched = check_batching(args, cmd)
    if skip_bad_audio == "true" and not batched:
        fail("--skip_bad_audio true needs batched decoding (--batch_frames N or --batch_size N > 1)")
    if cuda_graphs == "true" and not (batched and args.ngpu >= 1):
        fail("--cuda_graphs true replays batched decoding steps on a GPU: it needs --ngpu 1 and "
              "--batch_frames N or --batch_size N > 1")
    check_inference_inputs(spec, args)
    model_file = getattr(args, f"{task}_model_file")
    try:  # loaded here once, checked, and handed to ESPnet's loader
        state = load_state_dict_file(model_file, trust=trust)
    except UnsafeModelFileError as err:
        fail(f"--{task}_model_file: {err}")
    device = "cuda" if args.ngpu >= 1 else "cpu"
    recorder = EfficiencyRecorder(device, total=len(batch_inference.input_keys(args)))
    recorder.decoding = decoding_setup(args, batched, device)
    # Everything goes to <output_dir>.partial, renamed to <output_dir> once complete: a killed
    # run never leaves an output dir that looks finished.
    output_dir = Path(args.output_dir)
    partial = output_dir.with_name(output_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        with safe_loading(trust, preloaded={model_file: state}):
            if batched:  # many utterances per search: espnet_mtla.cli.batch_inference
                logging.basicConfig(level=args.log_level,
                                    format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
                args.output_dir = str(partial)
                batch_inference.decode(module, spec, args, recorder, batch_encoder == "true", attn_backend,
                                       cuda_graphs == "true", skip_bad_audio == "true")
            else:
                with recording_efficiency(module, spec, recorder, attn_backend), \
                        readable_inputs(args.data_path_and_name_and_type):
                    # ESPnet's main() minus its parser, which does not know our options
                    options = {k: v for k, v in vars(args).items()
                               if k not in ("config", "batch_frames", "ctc_window_margin")}
                    options["output_dir"] = str(partial)
                    module.inference(**options)
    except (ConfigError, CheckpointMismatchError, BatchDecodingError, UnsafeModelFileError, BadAudioError) as err:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left
        fail(one_line(err))
    except AttributeError as err:  # ESPnet reads options off the config's Namespace without checking
        if "'Namespace' object has no attribute" not in str(err):
            raise
        fail(f"--{task}_train_config: {getattr(args, f'{task}_train_config')}: missing key "
              f"{str(err).rsplit(' ', 1)[-1]} (decode with the config.yaml that training wrote)")
    summary = recorder.write(os.path.join(partial, "1best_recog", "efficiency.json"))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(partial, output_dir)
    logging.info(
        "efficiency: %d utterances, %.3f s, %s tokens/s, peak memory %.1f MiB (%s), peak KV cache %s bytes",
        summary["num_utterances"], summary["total_decode_time_s"], summary["tokens_per_s"],
        summary["peak_memory_bytes"] / 2**20, summary["peak_memory_kind"], summary["cache_bytes_peak"],
    )
