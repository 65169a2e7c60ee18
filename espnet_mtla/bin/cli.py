"""Shared body of the thin CLIs: register our classes, then run ESPnet's own ``main``.

Every ESPnet option keeps working. Configuration mistakes that we detect (ConfigError,
checkpoint/config mismatches) end the run with one line on stderr instead of a traceback.
Inference also writes ``<output_dir>/1best_recog/efficiency.json`` (see
espnet_mtla.metrics.efficiency) and takes options of ours: ``--batch_frames N`` (also from a
decode config) or ``--batch_size N`` with ``--batch_encoder true|false``
(espnet_mtla.bin.batch_inference), ``--cuda_graphs true|false`` (batched decoding on a GPU:
decode steps replayed from CUDA graphs, espnet_mtla.search.decode_step) and ``--attn_backend
auto|eager|sdpa|triton`` (espnet_mtla.attention.backends; the model's config otherwise).
Training and inference run inside espnet_mtla.safe_load.safe_loading: no model file can run
code when loaded unless ``--trust_model_file true``.
"""

import contextlib
import importlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from espnet_mtla.attention.backends import ATTN_BACKENDS
from espnet_mtla.safe_load import TRUST_OPTION
from espnet_mtla.task_specs import get_task


def _fail(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)


def check_input_files(args, config: Optional[dict] = None) -> None:
    """Exit with one line naming the first input file that does not exist.

    ``args`` are a train or inference CLI's parsed options; ``config`` is the training config
    an inference run loads (its token list and BPE model count unless options override them).
    """
    config = config or {}
    found = {k: v for k, v in config.items() if k in ("token_list", "bpemodel", "src_token_list", "src_bpemodel",
                                                       "token_type", "src_token_type")}
    found.update({k: v for k, v in vars(args).items() if v is not None})
    hint = "make it with the recipe's stage 5 (tokenisers), or fix the path"
    for option in ("token_list", "src_token_list", "bpemodel", "src_bpemodel"):
        value = found.get(option)
        side = "src_" if option.startswith("src_") else ""
        if option.endswith("bpemodel") and found.get(f"{side}token_type") != "bpe":
            continue
        if isinstance(value, str) and not os.path.isfile(value):
            raise SystemExit(f"error: --{option}: no such file: {value} ({hint})")
    for option in ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type",
                   "data_path_and_name_and_type"):
        for path, name, _ in found.get(option) or []:
            if not os.path.exists(path):
                raise SystemExit(f"error: --{option}: no such file for {name!r}: {path}")
    for option in ("train_shape_file", "valid_shape_file", "key_file"):
        values = found.get(option) or []
        for path in [values] if isinstance(values, str) else values:
            if not os.path.isfile(path):
                raise SystemExit(f"error: --{option}: no such file: {path}")


def run_training(task: str, cmd: Optional[List[str]] = None) -> None:
    import espnet_mtla.tasks  # noqa: F401  (registers)
    from espnet_mtla.errors import ConfigError
    from espnet_mtla.init_param import checked_init_param
    from espnet_mtla.training_files import atomic_torch_save, repair_before_resume

    from espnet_mtla.safe_load import UnsafeModelFileError, safe_loading

    module = importlib.import_module(get_task(task).espnet_module("train"))
    cmd, trust = pop_option(list(sys.argv[1:] if cmd is None else cmd), TRUST_OPTION, "false", ("true", "false"))
    trust = trust == "true"
    args = module.get_parser().parse_args(cmd)
    check_input_files(args)
    try:
        # Resuming, --init_param and averaging all load files: none may run code from them.
        with safe_loading(trust), atomic_torch_save(), checked_init_param():
            if args.resume and args.output_dir and not args.collect_stats:
                repair_before_resume(Path(args.output_dir), args.best_model_criterion)
            module.main(cmd)
    except (ConfigError, UnsafeModelFileError) as err:
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
def recording_efficiency(module, task: str, recorder, attn_backend: Optional[str] = None):
    """Route the inference object's calls and the data iterator of ``module`` through ``recorder``;
    with ``attn_backend``, switch the model's attention layers to it before the first call."""
    from espnet_mtla.bin.batch_inference import use_attention_backend

    spec = get_task(task)
    inference_class = getattr(module, spec.inference_class)
    task_class = getattr(module, spec.espnet_task)
    call = inference_class.__call__
    build_iterator = task_class.build_streaming_iterator.__func__

    def measured_call(self, *args, **kwargs):
        if attn_backend and getattr(self, "_attn_backend", None) != attn_backend:
            use_attention_backend(self, task, attn_backend)
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

    The archive is unpacked next to itself (``x.zip`` -> ``x/``), once, by
    espnet_mtla.packed_model (which refuses unsafe or malformed archives); the model file is
    its safetensors copy where the archive has one.
    """
    if "--packed_model" not in cmd:
        return cmd
    from espnet_mtla.packed_model import PackedModelError, unpack, unpacked_folder

    i = cmd.index("--packed_model")
    if i + 1 >= len(cmd):
        raise SystemExit("error: --packed_model needs a zip or tar file")
    archive = Path(cmd[i + 1])
    if not archive.is_file():
        raise SystemExit(f"error: --packed_model: no such file: {archive}")
    try:
        files = unpack(archive, unpacked_folder(archive))
    except PackedModelError as err:
        raise SystemExit(f"error: --packed_model: {err}") from None
    for option in (f"{task}_train_config", f"{task}_model_file"):
        if option not in files:
            raise SystemExit(f"error: --packed_model: {archive}: meta.yaml lists no {option}: "
                             f"not a packed {task} model")
    rest = cmd[:i] + cmd[i + 2:]
    return rest + [f"--{task}_train_config", files[f"{task}_train_config"], f"--{task}_model_file",
                   files[f"{task}_model_file"]]


def pop_option(cmd: List[str], name: str, default: str, choices) -> tuple:
    """Take one of our own options (not ESPnet's) out of ``cmd``: (rest of cmd, its value)."""
    if name not in cmd:
        return cmd, default
    i = cmd.index(name)
    if i + 1 >= len(cmd) or cmd[i + 1] not in choices:
        raise SystemExit(f"error: {name} takes one of {', '.join(choices)}")
    return cmd[:i] + cmd[i + 2:], cmd[i + 1]


STREAMING_REFUSAL = ("ESPnet's streaming simulation (BatchBeamSearchOnlineSim) re-extends hypotheses as encoder blocks "
                     "arrive, but a decoder-only model reads the whole speech prefix before its first token; decode "
                     "whole utterances (--streaming false)")


def check_inference_inputs(task: str, args) -> None:
    if getattr(args, "streaming", False):
        raise SystemExit(f"error: --streaming true: {STREAMING_REFUSAL}")
    config_file, model_file = getattr(args, f"{task}_train_config"), getattr(args, f"{task}_model_file")
    for option, value in ((f"{task}_train_config", config_file), (f"{task}_model_file", model_file)):
        if value is None:
            raise SystemExit(f"error: --{option} is required (or --packed_model)")
        if not os.path.isfile(value):
            raise SystemExit(f"error: --{option}: no such file: {value}")
    import yaml

    try:
        with open(config_file, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SystemExit(f"error: --{task}_train_config: {config_file}: not valid YAML "
                         f"({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SystemExit(f"error: --{task}_train_config: {config_file}: not a YAML mapping of options "
                         f"(got {type(config).__name__})")
    required = ["token_list"] + (["src_token_list"] if get_task(task).source_text else [])
    for key in required:
        if key not in config:
            raise SystemExit(f"error: --{task}_train_config: {config_file}: missing key '{key}' "
                             "(decode with the config.yaml that training wrote)")
    check_input_files(args, config)


def inference_parser(module):
    """ESPnet's inference parser plus our options that decode configs may set."""
    parser = module.get_parser()
    parser.add_argument("--batch_frames", type=int, default=None,
                        help="decode many utterances per beam search, in length-sorted batches of at most this "
                             "many padded input frames (10 ms of speech, or source tokens)")
    return parser


def check_batching(args, cmd: List[str]) -> bool:
    """Whether to decode many utterances per search; one line for a budget or beam that cannot work.

    ``--batch_frames`` (usually from the decode config) batches unless ``--batch_size 1`` is
    given explicitly, which keeps ESPnet's own one-utterance-at-a-time search.
    """
    if args.beam_size < 1:
        raise SystemExit(f"error: --beam_size must be >= 1, got {args.beam_size}")
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch_size must be >= 1, got {args.batch_size}")
    if args.batch_frames is not None and args.batch_frames < 1:
        raise SystemExit(f"error: --batch_frames must be >= 1 (frames per batch), got {args.batch_frames}; "
                         "use --batch_size 1 to decode one utterance at a time")
    if "--batch_size" in cmd and args.batch_size == 1:
        return False
    return args.batch_size > 1 or args.batch_frames is not None


def run_inference(task: str, cmd: Optional[List[str]] = None) -> None:
    import espnet_mtla.tasks  # noqa: F401  (registers)
    from espnet_mtla.bin import batch_inference
    from espnet_mtla.errors import BatchDecodingError, ConfigError
    from espnet_mtla.metrics.efficiency import EfficiencyRecorder
    from espnet_mtla.models.common import CheckpointMismatchError
    from espnet_mtla.safe_load import UnsafeModelFileError, load_state_dict_file, safe_loading

    cmd = unpack_model_option(task, list(sys.argv[1:] if cmd is None else cmd))
    cmd, batch_encoder = pop_option(cmd, "--batch_encoder", "false", ("true", "false"))
    cmd, attn_backend = pop_option(cmd, "--attn_backend", None, ATTN_BACKENDS)
    cmd, cuda_graphs = pop_option(cmd, "--cuda_graphs", "false", ("true", "false"))
    cmd, trust = pop_option(cmd, TRUST_OPTION, "false", ("true", "false"))
    trust = trust == "true"
    module = importlib.import_module(get_task(task).espnet_module("inference"))
    args = inference_parser(module).parse_args(cmd)
    batched = check_batching(args, cmd)
    if cuda_graphs == "true" and not (batched and args.ngpu >= 1):
        _fail("--cuda_graphs true replays batched decoding steps on a GPU: it needs --ngpu 1 and "
              "--batch_frames N or --batch_size N > 1")
    check_inference_inputs(task, args)
    model_file = getattr(args, f"{task}_model_file")
    try:  # loaded here once, checked, and handed to ESPnet's loader
        state = load_state_dict_file(model_file, trust=trust)
    except UnsafeModelFileError as err:
        _fail(f"--{task}_model_file: {err}")
    device = "cuda" if args.ngpu >= 1 else "cpu"
    recorder = EfficiencyRecorder(device, total=len(batch_inference.input_keys(args)))
    # Everything goes to <output_dir>.partial, renamed to <output_dir> once complete: a killed
    # run never leaves an output dir that looks finished.
    output_dir = Path(args.output_dir)
    partial = output_dir.with_name(output_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        with safe_loading(trust, preloaded={model_file: state}):
            if batched:  # many utterances per search: espnet_mtla.bin.batch_inference
                logging.basicConfig(level=args.log_level,
                                    format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
                args.output_dir = str(partial)
                batch_inference.decode(module, task, args, recorder, batch_encoder == "true", attn_backend,
                                       cuda_graphs == "true")
            else:
                with recording_efficiency(module, task, recorder, attn_backend):
                    # ESPnet's main() minus its parser, which does not know our options
                    options = {k: v for k, v in vars(args).items() if k not in ("config", "batch_frames")}
                    options["output_dir"] = str(partial)
                    module.inference(**options)
    except (ConfigError, CheckpointMismatchError, BatchDecodingError, UnsafeModelFileError) as err:
        _fail(err)
    except AttributeError as err:  # ESPnet reads options off the config's Namespace without checking
        if "'Namespace' object has no attribute" not in str(err):
            raise
        _fail(f"--{task}_train_config: {getattr(args, f'{task}_train_config')}: missing key "
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
