"""A trained model from Python: load it from an ``exp/`` directory or a packed model, decode
files, arrays, texts or lists of them in one batched search.

    from espnet_mtla.api import load_model
    model = load_model("exp/asr_train_mtla")              # or stage 11's exp/asr_train_mtla/asr_train_mtla.zip
    model("utt.flac").text                                 # one input -> one Result
    [r.text for r in model(["a.flac", (samples, 8000)])]   # a list -> one Result each, one batched search

Inputs: speech tasks (asr, st, slu) take an audio file path, a 1-D numpy array or tensor at the
model's sampling rate, or ``(array, sampling_rate)`` (resampled with soxr, with a notice); a
multi-channel file is averaged to one channel (a notice). Text tasks (mt) take the source text.

Loading: the model file goes through ``espnet_mtla.storage.safe_load`` (tensors only: a file
that needs pickled code is refused in one line unless ``trust=True``); a packed model is
unpacked next to itself by ``storage.packed_model.unpack`` (checked, safetensors preferred).
An ``exp/`` directory's ``config.yaml`` names files relative to the recipe directory
(``data/token_list/bpe100/bpe.model``): they are resolved against it, wherever Python runs.

Decoding options default to the recipe's: the decode config packed with the model, or the
recipe's ``conf/decode.yaml`` beside ``exp/``; then beam 10, CTC weight 0.3 where the model
has CTC and the task is asr or slu. Any of them can be given as an argument.
"""

import importlib
import logging
import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from espnet_mtla.task_specs import TASKS, TaskSpec, get_task

log = logging.getLogger("espnet_mtla.api")

MODEL_FILES = ("valid.acc.ave.pth", "valid.acc.best.pth", "valid.loss.ave.pth", "valid.loss.best.pth",
               "latest.pth")  # what a trained exp dir holds, in the order a user would pick it
DECODE_OPTIONS = ("beam_size", "ctc_weight", "lm_weight", "penalty", "maxlenratio", "minlenratio", "nbest",
                  "batch_frames", "ctc_window_margin", "normalize_length")
GENERIC_DECODING = dict(beam_size=10, penalty=0.0, maxlenratio=0.0, minlenratio=0.0, nbest=1, batch_frames=4000)

AudioInput = Union[str, Path, np.ndarray, Tuple[np.ndarray, int]]


class ModelLoadError(Exception):
    """A model path that cannot be loaded; the message names it and what to do."""


@dataclass
class Hypothesis:
    """One hypothesis: its text, tokens and token ids (no <sos>/<eos>) and its search score."""

    text: str
    tokens: List[str]
    token_ids: List[int]
    score: float


@dataclass
class Result:
    """What one input decodes to: the best hypothesis' text and score, the n-best list (best
    first) and, for SLU, the intent (the text is then the transcript after it)."""

    text: str
    score: float
    nbest: List[Hypothesis] = field(default_factory=list)
    intent: Optional[str] = None


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are: the task, the training config (paths resolved) and weights,
    and the decode config found with it (None without)."""

    task: TaskSpec
    train_config: Path
    model_file: Path
    decode_config: Optional[Path]
    root: Path  # the folder its config's relative paths are relative to


def _relative_paths_resolved(value, root: Path):
    """Strings of a config that name an existing file or folder under ``root`` -> absolute paths."""
    if isinstance(value, dict):
        return {k: _relative_paths_resolved(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths_resolved(v, root) for v in value]
    if isinstance(value, str) and value and not Path(value).is_absolute() and "\n" not in value:
        try:
            if (root / value).exists():
                return str((root / value).resolve())
        except OSError:  # a token that is not a valid path
            return value
    return value


def _task_of(name: str, given: Optional[str]) -> TaskSpec:
    if given:
        return get_task(given)
    prefix = name.split("_", 1)[0]
    if prefix in TASKS:
        return TASKS[prefix]
    raise ModelLoadError(f"{name}: cannot tell its task from the name (ESPnet names exp dirs <task>_...): "
                         f"pass task= one of {', '.join(TASKS)}")


def find_model_files(path: Union[str, Path], task: Optional[str] = None, model_file: Optional[str] = None,
                     decode_config: Optional[str] = None) -> ModelFiles:
    """The files of a trained model at ``path``: an exp dir (``config.yaml`` and a model file) or
    a packed model (.zip / .tar[.gz]), unpacked next to itself."""
    from espnet_mtla.storage.packed_model import PackedModelError, TAR_SUFFIXES, unpack, unpacked_folder

    path = Path(path)
    if decode_config is not None and not Path(decode_config).is_file():
        raise ModelLoadError(f"{decode_config}: no such decode config")
    if path.is_file() and path.name.lower().endswith((".zip",) + TAR_SUFFIXES):
        try:
            files = unpack(path, unpacked_folder(path))
        except PackedModelError as err:
            raise ModelLoadError(str(err)) from None
        options = [o for o in files if o.endswith("_model_file")]
        if not options:
            raise ModelLoadError(f"{path}: its meta.yaml lists no *_model_file: not a packed model of a task")
        spec = get_task(task or options[0].rsplit("_model_file", 1)[0])
        root = unpacked_folder(path).resolve()
        decode = sorted(root.rglob("decode*.yaml"))
        return ModelFiles(spec, Path(files[f"{spec.name}_train_config"]),
                          Path(model_file) if model_file else Path(files[f"{spec.name}_model_file"]),
                          Path(decode_config) if decode_config else (decode[0] if decode else None), root)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model: give an exp dir (with config.yaml) or a packed model (.zip)")
    config = path / "config.yaml"
    if not config.is_file():
        raise ModelLoadError(f"{path}: no config.yaml: not a trained exp dir (train it, or give its packed .zip)")
    spec = _task_of(path.name, task)
    if model_file:
        weights = Path(model_file) if Path(model_file).is_absolute() else path / model_file
    else:
        found = [path / name for name in MODEL_FILES if (path / name).exists()]
        if not found:
            raise ModelLoadError(f"{path}: none of {', '.join(MODEL_FILES)}: train it first, or pass model_file=")
        weights = found[0]
    if not weights.exists():
        raise ModelLoadError(f"{weights}: no such model file")
    # config.yaml's output_dir is the exp dir relative to the recipe dir (exp/asr_train_mtla)
    output_dir = Path(str((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("output_dir") or ""))
    here = path.resolve()
    tail = output_dir.parts if not output_dir.is_absolute() and here.parts[-len(output_dir.parts):] == \
        output_dir.parts else ("exp", here.name)  # ESPnet's recipes train into exp/<name>
    root = here.parents[len(tail) - 1] if len(tail) <= len(here.parents) else here.parent
    decode = Path(decode_config) if decode_config else root / "conf" / "decode.yaml"
    return ModelFiles(spec, config, weights, decode if decode.is_file() else None, root)


def decoding_defaults(files: ModelFiles, has_ctc: bool) -> Dict[str, object]:
    """The recipe's decoding options for this model: its decode config over generic ones."""
    options = dict(GENERIC_DECODING, ctc_weight=0.3 if has_ctc and files.task.name in ("asr", "slu") else 0.0)
    if files.decode_config is not None:
        found = yaml.safe_load(files.decode_config.read_text(encoding="utf-8")) or {}
        options.update({k: v for k, v in found.items() if k in DECODE_OPTIONS})
    return options


def _has_ctc(train_config: dict) -> bool:
    return float((train_config.get("model_conf") or {}).get("ctc_weight", 0.0) or 0.0) > 0


@contextmanager
def _quiet_espnet():
    """ESPnet's inference objects log their whole beam search (dozens of lines) at INFO on the
    root logger while they are built: kept to warnings here (our own line says what loaded)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


class TrainedModel:
    """A trained model ready to decode (see the module docstring). Build it with :func:`load_model`."""

    def __init__(self, files: ModelFiles, inference, decoding: Dict[str, object], progress: bool):
        from espnet_mtla.cli.batch_inference import BatchDecoder, sampling_rate

        self.files, self.task, self.inference = files, files.task, inference
        self.decoding = decoding
        self.progress = progress
        self.decoder = BatchDecoder(inference, self.task, int(decoding["nbest"]), float(decoding["maxlenratio"]),
                                    float(decoding["minlenratio"]),
                                    ctc_window_margin=int(decoding.get("ctc_window_margin") or 0))
        module = importlib.import_module(self.task.espnet_module("inference"))
        task_class = getattr(module, self.task.espnet_task)
        self._preprocess = task_class.build_preprocess_fn(self.decoder.train_args, False)
        self.collate = task_class.build_collate_fn(self.decoder.train_args, False)
        self.sampling_rate = sampling_rate(self.decoder.train_args) if self.task.speech else None
        self._notices = set()

    @property
    def has_ctc(self) -> bool:
        return getattr(self.decoder.model, "ctc", None) is not None

    def __repr__(self) -> str:
        return (f"TrainedModel({self.task.name}, {self.files.model_file}, device={self.inference.device}, "
                f"dtype={self.inference.dtype}, beam_size={self.decoding['beam_size']})")

    def _notice(self, text: str) -> None:
        if text not in self._notices:
            self._notices.add(text)
            log.warning(text)

    # inputs

    def audio(self, item: AudioInput, what: str = "input") -> np.ndarray:
        """One speech input as a 1-D float32 array at the model's sampling rate."""
        import soundfile

        rate = self.sampling_rate
        if isinstance(item, (str, Path)):
            try:
                samples, rate = soundfile.read(str(item), dtype="float32", always_2d=True)
            except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
                raise ValueError(f"{item}: cannot read it as audio ({err})") from None
            what = str(item)
        elif isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(f"{what}: a tuple input must be (samples, sampling_rate)")
            samples, rate = item
        else:
            samples = item
        if hasattr(samples, "detach"):  # a torch tensor
            samples = samples.detach().cpu().numpy()
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 2:
            if samples.shape[1] > 1:
                self._notice(f"{what}: {samples.shape[1]} channels averaged to one")
            samples = samples.mean(axis=1)
        if samples.ndim != 1 or not len(samples):
            raise ValueError(f"{what}: expected a non-empty 1-D waveform, got shape {tuple(samples.shape)}")
        if int(rate) != self.sampling_rate:
            import soxr

            self._notice(f"{what}: resampled from {int(rate)} Hz to the model's {self.sampling_rate} Hz")
            samples = soxr.resample(samples, int(rate), self.sampling_rate).astype(np.float32)
        return samples

    def model_input(self, item, what: str = "input") -> Dict[str, np.ndarray]:
        """One input as the model sees it (ESPnet's preprocessing: the source text tokenised)."""
        if self.task.speech:
            return self._preprocess(what, {"speech": self.audio(item, what)})
        if not isinstance(item, str):
            raise ValueError(f"{what}: a {self.task.name} model takes source text (a str), got {type(item).__name__}")
        return self._preprocess(what, {"src_text": item})

    def input_length(self, data: Dict[str, np.ndarray]) -> int:
        """An input's cost in a batch budget: 10 ms frames of speech, or source tokens."""
        from espnet_mtla.search.batching import speech_frames

        size = len(data[self.task.input_name])
        return speech_frames(size, self.sampling_rate) if self.task.speech else size

    def encode(self, data: Dict[str, np.ndarray]):
        """(1, T', D) encoder output of one model input."""
        import torch

        from espnet_mtla.cli.batch_inference import encode

        with torch.no_grad():
            xs, x_lens = self.decoder.inputs(self.collate([("input", data)])[1])
            return encode(self.decoder.model, xs, x_lens, False)[0]

    # decoding

    def decode_inputs(self, inputs: Sequence[Dict[str, np.ndarray]], desc: str = "decoding",
                      recorder=None, keys: Optional[Sequence[str]] = None) -> List[Result]:
        """Model inputs (see ``model_input``) -> one Result each, in order, searched in batches of
        at most ``batch_frames`` padded frames (split in halves if one runs out of memory). With
        an ``EfficiencyRecorder``, each search is timed and recorded under ``keys``."""
        from tqdm import tqdm

        from espnet_mtla.cli.batch_inference import split_on_out_of_memory
        from espnet_mtla.search.batching import budget_batches

        lengths = [self.input_length(data) for data in inputs]
        batches, _ = budget_batches(lengths, max(int(self.decoding["batch_frames"]), 1))
        results: List[Optional[Result]] = [None] * len(inputs)

        def run(indices):
            _, batch = self.collate([(str(i), inputs[i]) for i in indices])
            xs, x_lens = self.decoder.inputs(batch)
            if recorder is None:
                return self.decoder.search_batch(xs, x_lens)
            return recorder.timed(lambda: self.decoder.search_batch(xs, x_lens))

        with tqdm(total=len(inputs), desc=desc, unit="seg" if desc != "decoding" else "utt",
                  disable=not self.progress, leave=False) as bar:
            for batch in batches:
                for indices, result in split_on_out_of_memory(run, batch):
                    if recorder is not None:
                        result, elapsed, peak_bytes = result
                    names = [keys[i] if keys else str(i) for i in indices]
                    for i, nbest in zip(indices, self.decoder.nbest_lists(result, names)):
                        results[i] = self._result(nbest)
                    if recorder is not None:
                        recorder.record_batch(names, elapsed,
                                              [len(results[i].nbest[0].token_ids) if results[i].nbest else 0
                                               for i in indices], peak_bytes, result.cache_bytes_peak,
                                              result.lm_cache_bytes_peak, result.cache_bytes_allocated_peak)
                    bar.update(len(indices))
        return results

    def _result(self, nbest) -> Result:
        hyps = [Hypothesis((text if text is not None else " ".join(token)).strip(), list(token), list(token_int),
                           float(score))
                for (text, token, token_int), score in nbest]
        if not hyps:
            return Result("", -math.inf, [])
        best = hyps[0]
        if self.task.name == "slu":  # "<scenario_action> transcript"
            intent, _, text = best.text.strip().partition(" ")
            return Result(text, best.score, hyps, intent)
        return Result(best.text, best.score, hyps)

    def __call__(self, inputs):
        """Decode one input (-> Result) or a list of them (-> list of Results, one batched search)."""
        single = not isinstance(inputs, list)
        items = [inputs] if single else inputs
        data = [self.model_input(item, f"input {i}" if not single else "input") for i, item in enumerate(items)]
        results = self.decode_inputs(data)
        return results[0] if single else results

    def transcribe_long(self, recordings, **options):
        """Long recordings -> ``Transcript``s (see ``espnet_mtla.api.long_form.transcribe``)."""
        from espnet_mtla.api.long_form import transcribe

        return transcribe(self, recordings, **options)


def load_model(path: Union[str, Path], task: Optional[str] = None, model_file: Optional[str] = None,
               decode_config: Optional[str] = None, device: str = "cpu", dtype: str = "float32", trust: bool = False,
               progress: bool = False,
               lm_train_config: Optional[str] = None, lm_file: Optional[str] = None, **decoding) -> TrainedModel:
    """A trained model from an exp dir or a packed model (.zip), safely loaded.

    Args:
        path: ``exp/<task>_train_<tag>`` (its ``config.yaml`` and ``valid.acc.ave.pth``, or
            ``model_file``) or stage 11's packed model.
        task: asr, st, slu or mt; by default from the exp dir's name or the packed model.
        decode_config: a decode YAML (``conf/decode.yaml``) whose options are the defaults; by
            default the one packed with the model, or the recipe's ``conf/decode.yaml``.
        device, dtype: where and in what precision to decode ("cuda", "bfloat16", ...).
        trust: load a model file that needs pickled code (it can run code: only for files you trust).
        progress: a progress bar over the utterances or segments being decoded.
        lm_train_config, lm_file: a language model for shallow fusion (weight: ``lm_weight``).
        **decoding: beam_size, ctc_weight, lm_weight, penalty, maxlenratio, minlenratio, nbest,
            batch_frames (the batch budget in 10 ms frames), ctc_window_margin, normalize_length.
    """
    import espnet_mtla.tasks.registration  # noqa: F401  (registers our classes with ESPnet)
    from espnet_mtla.cli.batch_inference import construct_with_accepted
    from espnet_mtla.storage.safe_load import load_state_dict_file, safe_loading

    unknown = sorted(set(decoding) - set(DECODE_OPTIONS))
    if unknown:
        raise TypeError(f"load_model() got unknown decoding options {', '.join(unknown)}; "
                        f"known: {', '.join(DECODE_OPTIONS)}")
    files = find_model_files(path, task, model_file, decode_config)
    spec = files.task
    config = _relative_paths_resolved(yaml.safe_load(files.train_config.read_text(encoding="utf-8")), files.root)
    options = dict(decoding_defaults(files, _has_ctc(config)), **decoding)
    if not lm_file:
        options["lm_weight"] = 0.0  # a decode config's weight for an LM that is not given
    state = load_state_dict_file(files.model_file, trust=trust)  # refuses pickled code in one line
    module = importlib.import_module(spec.espnet_module("inference"))
    cls = getattr(module, spec.inference_class)
    with tempfile.TemporaryDirectory(prefix="espnet_mtla_config_") as tmp:
        resolved = Path(tmp) / "config.yaml"
        resolved.write_text(yaml.safe_dump(config), encoding="utf-8")
        kwargs = {f"{spec.name}_train_config": str(resolved), f"{spec.name}_model_file": str(files.model_file),
                  "device": device, "dtype": dtype, "batch_size": 1, "lm_train_config": lm_train_config,
                  "lm_file": lm_file, **{k: v for k, v in options.items() if k in DECODE_OPTIONS}}
        with safe_loading(trust, preloaded={str(files.model_file): state}), _quiet_espnet():
            inference = construct_with_accepted(cls, kwargs)
    log.info("loaded %s (%s) from %s", spec.name, files.model_file.name, path)
    return TrainedModel(files, inference, options, progress)
