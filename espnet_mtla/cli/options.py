"""Our options and input checks around ESPnet's CLIs: one line on stderr for each mistake."""

import os
import sys
from pathlib import Path
from typing import List, Optional

from espnet_mtla.task_specs import TaskSpec


def fail(err: Exception) -> None:
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


def pop_option(cmd: List[str], name: str, default: str, choices) -> tuple:
    """Take one of our own options (not ESPnet's) out of ``cmd``: (rest of cmd, its value)."""
    if name not in cmd:
        return cmd, default
    i = cmd.index(name)
    if i + 1 >= len(cmd) or cmd[i + 1] not in choices:
        raise SystemExit(f"error: {name} takes one of {', '.join(choices)}")
    return cmd[:i] + cmd[i + 2:], cmd[i + 1]


def unpack_model_option(spec: TaskSpec, cmd: List[str]) -> List[str]:
    """``--packed_model x.zip`` (stage 11's archive) -> ``--<task>_train_config``/``--<task>_model_file``.

    The archive is unpacked next to itself (``x.zip`` -> ``x/``), once, by
    espnet_mtla.storage.packed_model (which refuses unsafe or malformed archives); the model file is
    its safetensors copy where the archive has one.
    """
    task = spec.name
    if "--packed_model" not in cmd:
        return cmd
    from espnet_mtla.storage.packed_model import PackedModelError, unpack, unpacked_folder

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
    for option in (f"{spec.name}_train_config", f"{spec.name}_model_file"):
        if option not in files:
            raise SystemExit(f"error: --packed_model: {archive}: meta.yaml lists no {option}: "
                             f"not a packed {spec.name} model")
    rest = cmd[:i] + cmd[i + 2:]
    return rest + [f"--{spec.name}_train_config", files[f"{spec.name}_train_config"], f"--{spec.name}_model_file",
                   files[f"{spec.name}_model_file"]]


STREAMING_REFUSAL = ("ESPnet's streaming simulation (BatchBeamSearchOnlineSim) re-extends hypotheses as encoder blocks "
                     "arrive, but a decoder-only model reads the whole speech prefix before its first token; decode "
                     "whole utterances (--streaming false)")


def check_inference_inputs(spec: TaskSpec, args) -> None:
    if getattr(args, "streaming", False):
        raise SystemExit(f"error: --streaming true: {STREAMING_REFUSAL}")
    config_file, model_file = getattr(args, f"{spec.name}_train_config"), getattr(args, f"{spec.name}_model_file")
    for option, value in ((f"{spec.name}_train_config", config_file), (f"{spec.name}_model_file", model_file)):
        if value is None:
            raise SystemExit(f"error: --{option} is required (or --packed_model)")
        if not os.path.isfile(value):
            raise SystemExit(f"error: --{option}: no such file: {value}")
    config = read_train_config(f"{spec.name}_train_config", config_file)
    required = ["token_list"] + (["src_token_list"] if spec.source_text else [])
    for key in required:
        if key not in config:
            raise SystemExit(f"error: --{spec.name}_train_config: {config_file}: missing key '{key}' "
                             "(decode with the config.yaml that training wrote)")
    check_input_files(args, config)
    check_language_model(args, config)


def read_train_config(option: str, path: str) -> dict:
    """A training's config.yaml as a dict; one line when it is not one."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SystemExit(f"error: --{option}: {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SystemExit(f"error: --{option}: {path}: not a YAML mapping of options (got {type(config).__name__})")
    return config


def token_list_of(value) -> Optional[List[str]]:
    """A config's token list: a list, or the path of a tokens.txt (None when unreadable)."""
    if isinstance(value, list):
        return [str(t) for t in value]
    if isinstance(value, str) and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    return None


def check_language_model(args, config: dict) -> None:
    """``--lm_train_config``/``--lm_file``: both given, both files, and the LM's token list the
    model's (ESPnet would fuse scores of different tokens, or fail deep inside the search)."""
    lm_config, lm_file = getattr(args, "lm_train_config", None), getattr(args, "lm_file", None)
    if not lm_config and not lm_file:
        return
    for option, value in (("lm_train_config", lm_config), ("lm_file", lm_file)):
        if not value:
            raise SystemExit(f"error: --{option} is required with --lm_train_config/--lm_file (the LM's "
                             "config.yaml and model file)")
        if not os.path.isfile(value):
            raise SystemExit(f"error: --{option}: no such file: {value}")
    lm_tokens = token_list_of(read_train_config("lm_train_config", lm_config).get("token_list"))
    tokens = token_list_of(getattr(args, "token_list", None) or config.get("token_list"))
    if lm_tokens is not None and tokens is not None and lm_tokens != tokens:
        first = next((i for i, (a, b) in enumerate(zip(lm_tokens, tokens)) if a != b), min(len(lm_tokens), len(tokens)))
        raise SystemExit(f"error: --lm_train_config: {lm_config}: the LM's token list differs from the model's "
                         f"({len(lm_tokens)} vs {len(tokens)} tokens, first difference at id {first}): train the "
                         "LM with the model's token list")


DTYPES = ("float16", "bfloat16", "float32", "float64")


def inference_parser(module):
    """ESPnet's inference parser plus our options that decode configs may set, and ``--dtype
    bfloat16`` (the precision Hopper GPUs decode in; the search state stays float32)."""
    parser = module.get_parser()
    parser.add_argument("--batch_frames", type=int, default=None,
                        help="decode many utterances per beam search, in length-sorted batches of at most this "
                             "many padded input frames (10 ms of speech, or source tokens)")
    parser.add_argument("--ctc_window_margin", type=int, default=0,
                        help="joint CTC decoding: score only the frames within this many encoder frames of each "
                             "hypothesis' CTC alignment (0: all frames); above the longest pause between tokens")
    for action in parser._actions:
        if action.dest == "dtype":
            action.choices = DTYPES
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
    if args.ctc_window_margin < 0:
        raise SystemExit(f"error: --ctc_window_margin must be >= 0 frames (0: no window), got {args.ctc_window_margin}")
    batched = args.batch_size > 1 or args.batch_frames is not None
    if "--batch_size" in cmd and args.batch_size == 1:
        batched = False
    for option, used in (("--dtype bfloat16", args.dtype == "bfloat16"),
                         (f"--ctc_window_margin {args.ctc_window_margin}", args.ctc_window_margin > 0)):
        if used and not batched:
            raise SystemExit(f"error: {option} needs batched decoding (--batch_frames N or --batch_size N > 1; "
                             "ESPnet's per-utterance search has neither)")
    return batched
