"""Many utterances per beam search for the decoder-only models: ``--batch_frames N`` / ``--batch_size N``.

ESPnet's inference loops decode one utterance at a time. With a frame budget (``--batch_frames
N``, which the recipes' decode configs set) or ``--batch_size N`` (N > 1) the
``espnet_mtla.bin.<task>_inference`` CLIs (``espnet_mtla.cli.inference``) come here instead: ESPnet's own inference object
(``Speech2Text``, ``Speech2Understand``, ``Text2Text``) is built from the same options and
supplies the model, its beam-search configuration (weights, pre-beam, CTC), token converter
and tokenizer; ``MultiUtteranceBeamSearch`` (espnet_mtla.search) searches all utterances of
a batch together, joint CTC/attention and a language model (``--lm_train_config``,
``--lm_file``, ``--lm_weight``: shallow fusion, ``lm: decoder_only`` or ESPnet's own LMs) included.

Batches: with ``--batch_frames N`` the utterances are sorted by length and grouped so that each
batch's padded input (utterances x longest) stays within N frames (10 ms of speech, or source
tokens of text; fairseq's ``--max-tokens``), at most ``--batch_size`` utterances each when that
is given too; an utterance longer than N is decoded alone (one logged notice). Without a budget,
batches of ``--batch_size`` in input order. Outputs are written in input order, as ESPnet writes
them (``<n>best_recog/{text, token, token_int, score}``), and equal ``--batch_size 1``'s.

The encoder: by default each utterance is encoded on its own (``--batch_encoder false``), because
a padded batch does not give exactly the frames a lone utterance gets: the STFT's reflection
padding at the end of an utterance sees the batch's zero padding, and Conformer convolutions
reach into padded frames. ``--batch_encoder true`` runs one encoder pass over the padded batch
(faster; exact for text sources and fbank+Transformer, otherwise the last frames of shorter
utterances differ slightly). The search is batched either way.

Not supported here (refused in one line): n-gram and word LMs, CTC-only decoding (``--ctc_weight
1``) and decoders other than ``decoder_only`` and ``cached_transformer``.
"""

import inspect
import logging
import time
from typing import Dict, Iterator, List, Tuple

import torch

from espnet_mtla.storage.errors import BadAudioError, BatchDecodingError, first_line
from espnet_mtla.search import MultiUtteranceBeamSearch
from espnet_mtla.search.batching import budget_batches, speech_frames
from espnet_mtla.task_specs import TaskSpec

SCORERS = ("decoder", "ctc", "length_bonus", "lm")  # what the multi-utterance search scores


def check_supported(args) -> None:
    """One-line refusals for what the multi-utterance search does not score."""
    how = f"--batch_frames {args.batch_frames}" if args.batch_frames else f"--batch_size {args.batch_size}"
    for option in ("ngram_file", "word_lm_file"):
        if getattr(args, option, None):
            raise BatchDecodingError(f"{how} does not use --{option}: drop it, or use --batch_size 1")
    if getattr(args, "ctc_weight", 0.0) >= 1.0:
        raise BatchDecodingError(f"{how} needs the decoder's scores: use --ctc_weight < 1, or --batch_size 1 "
                                 f"for CTC-only decoding")


def use_attention_backend(inference, spec: TaskSpec, attn_backend: str) -> None:
    """``--attn_backend``: how the loaded model computes attention (never what it computes)."""
    from espnet_mtla.attention import set_attention_backend

    layers = set_attention_backend(getattr(inference, f"{spec.model_attribute}_model"), attn_backend)
    logging.info("attn_backend %s for %d attention layers", attn_backend, layers)
    inference._attn_backend = attn_backend


def construct_with_accepted(cls, options: Dict[str, object]):
    """``cls(**options)`` with only the options its constructor takes (ESPnet's inference objects
    each take a different subset of the decoding options)."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})


def build_inference_object(module, spec: TaskSpec, args):
    """ESPnet's inference object from the parsed options (only those its constructor takes)."""
    options = dict(vars(args), device="cuda" if args.ngpu >= 1 else "cpu", batch_size=1)
    return construct_with_accepted(getattr(module, spec.inference_class), options)


def build_search(inference, model, nbest: int, cuda_graphs: bool = False, ctc_window_margin: int = 0):
    """Our search with the scorers, weights and pre-beam of the inference object's ESPnet search,
    and the CTC module it scores with (None without CTC)."""
    espnet_search = inference.beam_search
    scorers = {**espnet_search.full_scorers, **espnet_search.part_scorers}
    other = sorted(set(scorers) - set(SCORERS))
    if other:
        raise BatchDecodingError(f"batched decoding scores only {', '.join(SCORERS)}; this search also has "
                                 f"{', '.join(other)}: use --batch_size 1")
    if espnet_search.do_pre_beam and espnet_search.pre_beam_score_key != "full":
        raise BatchDecodingError(f"batched decoding pre-beams on the full score; this search uses "
                                 f"{espnet_search.pre_beam_score_key!r}: use --batch_size 1")
    weights = espnet_search.weights
    ctc_weight = weights["ctc"] if "ctc" in espnet_search.part_scorers else 0.0
    search = MultiUtteranceBeamSearch(
        model.decoder, model.sos, model.eos, espnet_search.beam_size, decoder_weight=weights["decoder"],
        ctc_weight=ctc_weight, pre_beam_size=espnet_search.pre_beam_size if espnet_search.do_pre_beam else None,
        penalty=weights.get("length_bonus", 0.0) if "length_bonus" in scorers else 0.0,
        normalize_length=espnet_search.normalize_length, nbest=nbest, cuda_graphs=cuda_graphs,
        lm=scorers.get("lm"), lm_weight=weights.get("lm", 0.0) if "lm" in scorers else 0.0,
        ctc_window_margin=ctc_window_margin)
    return search, (scorers["ctc"].ctc if ctc_weight > 0 else None)


def hypothesis_tokens(hyp, converter, tokenizer):
    """(text, token, token_int) of a hypothesis, as ESPnet's inference objects make them."""
    token_int = [t for t in hyp.yseq[1:-1].tolist() if t != 0]  # drop <sos>, <eos> and blanks
    token = converter.ids2tokens(token_int)
    return (tokenizer.tokens2text(token) if tokenizer is not None else None), token, token_int


class FeaturesInDtype(torch.nn.Module):
    """A model's feature extraction run in float32, its output cast to the model's dtype."""

    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner.float(), dtype

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        features, lengths = self.inner(x.float(), lengths)
        return features.to(self.dtype), lengths


def features_in_float32(model, dtype: torch.dtype) -> bool:
    """In half precision, a speech model's frontend and feature normalisation run in float32
    (an STFT's power spectrum overflows float16's 65504, and the whole utterance turns NaN);
    the encoder and everything after it run in ``dtype``. Returns whether the input should stay
    float32 (a speech model in half precision)."""
    if dtype in (torch.float32, torch.float64) or getattr(model, "frontend", None) is None:
        return False
    last = "normalize" if isinstance(getattr(model, "normalize", None), torch.nn.Module) else "frontend"
    if not isinstance(getattr(model, last), FeaturesInDtype):  # once
        model.frontend.float()
        setattr(model, last, FeaturesInDtype(getattr(model, last), dtype))
    return True


def encode(model, xs: torch.Tensor, x_lens: torch.Tensor, batch_encoder: bool):
    """(N, T, D) encoder output and (N,) lengths: one padded pass, or one pass per utterance."""
    if batch_encoder:
        enc, enc_lens = model.encode(xs, x_lens)[:2]
        return (enc[0] if isinstance(enc, tuple) else enc), enc_lens  # (output, intermediate CTC outputs)
    outputs = []
    for x, length in zip(xs, x_lens.tolist()):
        enc = model.encode(x[None, :length], x_lens.new_tensor([length]))[0]
        outputs.append((enc[0] if isinstance(enc, tuple) else enc)[0])
    enc_lens = torch.tensor([len(e) for e in outputs], device=xs.device)
    return torch.nn.utils.rnn.pad_sequence(outputs, batch_first=True), enc_lens


def sampling_rate(train_args) -> int:
    """The frontend's sampling rate (ESPnet's default 16k)."""
    fs = (getattr(train_args, "frontend_conf", None) or {}).get("fs", 16000)
    if isinstance(fs, str):
        import humanfriendly

        fs = humanfriendly.parse_size(fs)
    return int(fs)


def unreadable(where: str, key: str, err: BaseException) -> str:
    """What a failed read of utterance ``key`` from ``where`` (its file, or the list naming it) says."""
    return f"{where}: utterance {key}: cannot read it ({type(err).__name__}: {first_line(err)})"


def read_utterance(dataset, key: str, skipped: Dict[str, str] = None):
    """``dataset[key]``, or ``BadAudioError`` naming the file and the utterance when a loader
    fails on it; with ``skipped`` (a dict), the failure is recorded there (key -> reason) and
    None returned instead."""
    try:
        return dataset[key]
    except Exception as err:  # soundfile, kaldiio, numpy: what a loader raises on a bad file varies
        # the file itself where the loader knows it (sound: ESPnet's adapter around SoundScpReader)
        files = [f"{getattr(getattr(loader, 'loader', loader), 'data', {}).get(key, dataset.debug_info[name][0])}"
                 for name, loader in dataset.loader_dict.items()]
        reason = unreadable(", ".join(files), key, err)
        if skipped is None:
            raise BadAudioError(f"{reason}; fix or drop it, or decode the rest with --skip_bad_audio true") from None
        skipped[key] = reason
        logging.warning("skipped: %s", reason)
        return None


def plan_batches(dataset, keys: List[str], key_in: str, args, train_args, skipped=None) -> List[List[str]]:
    """Keys in batches: within ``--batch_frames`` (length-sorted) or ``--batch_size`` at a time."""
    if not args.batch_frames:
        return [keys[i: i + args.batch_size] for i in range(0, len(keys), args.batch_size)]
    fs = sampling_rate(train_args)
    lengths, readable = [], []
    for key in keys:  # a first pass over the inputs, for their lengths only
        item = read_utterance(dataset, key, skipped)
        if item is None:
            continue
        size = len(item[1][key_in])
        lengths.append(speech_frames(size, fs) if key_in == "speech" else size)
        readable.append(key)
    keys = readable
    cap = args.batch_size if args.batch_size > 1 else None
    batches, alone = budget_batches(lengths, args.batch_frames, cap)
    if alone:
        logging.warning("%d utterance(s) exceed --batch_frames %d on their own (longest: %s, %d frames): "
                        "decoded alone", len(alone), args.batch_frames, keys[alone[0]], lengths[alone[0]])
    logging.info("%d utterances in %d batches of <= %d frames", len(keys), len(batches), args.batch_frames)
    return [[keys[i] for i in batch] for batch in batches]


def input_keys(args) -> List[str]:
    """The utterances to decode, in order: the key file's, else the first input file's."""
    path = args.key_file or args.data_path_and_name_and_type[0][0]
    with open(path, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: CUDA's, Python's, or PyTorch's CPU allocator's."""
    return (isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError))
            or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err)))


def split_on_out_of_memory(run, keys: List[str]) -> Iterator[Tuple[List[str], object]]:
    """``(keys, run(keys))``; a batch that runs out of memory is split in halves, each retried
    the same way, down to one utterance (ESPnet's inference does likewise since 2026-09). The
    search gives each utterance what it gives it in any batch, so the outputs do not change."""
    try:
        result = run(keys)
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        if len(keys) == 1:
            raise BatchDecodingError(f"utterance {keys[0]}: out of memory even alone ({first_line(err)}): "
                                     "decode it on a larger device, or with a smaller --beam_size") from None
        del err  # its traceback holds the failed batch's tensors
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(keys) // 2
        logging.warning("out of memory on a batch of %d utterances (%s ... %s): decoding it as %d + %d",
                        len(keys), keys[0], keys[-1], half, len(keys) - half)
        yield from split_on_out_of_memory(run, keys[:half])
        yield from split_on_out_of_memory(run, keys[half:])
        return
    yield keys, result


class BatchDecoder:
    """An ESPnet inference object's model searched many utterances at a time: collated model
    inputs -> each utterance's n-best ``((text, token, token_int), score)``, best first. The
    CLI's batched decoding and the Python API (``espnet_mtla.api``) both decode through it."""

    def __init__(self, inference, spec: TaskSpec, nbest: int = 1, maxlenratio: float = 0.0,
                 minlenratio: float = 0.0, batch_encoder: bool = False, cuda_graphs: bool = False,
                 ctc_window_margin: int = 0, attn_backend: str = None):
        from espnet_mtla.decoder.encoder_decoder import EncoderDecoderStack
        from espnet_mtla.decoder.scorer import CachedScorer

        self.inference, self.spec = inference, spec
        self.model = getattr(inference, f"{spec.model_attribute}_model")
        if not isinstance(self.model.decoder, CachedScorer):
            raise BatchDecodingError(f"batched decoding needs a decoder_only or cached_transformer decoder; this "
                                     f"one's decoder is {type(self.model.decoder).__name__}: use --batch_size 1")
        if cuda_graphs and isinstance(self.model.decoder, EncoderDecoderStack):
            raise BatchDecodingError("--cuda_graphs true replays decoder_only models only (the encoder-decoder's "
                                     "source memory is read per utterance): use --cuda_graphs false")
        if attn_backend:
            use_attention_backend(inference, spec, attn_backend)
        self.train_args = getattr(inference, f"{spec.model_attribute}_train_args")
        self.search, self.ctc = build_search(inference, self.model, nbest, cuda_graphs, ctc_window_margin)
        self.float_input = features_in_float32(self.model, getattr(torch, inference.dtype))
        self.nbest, self.maxlenratio, self.minlenratio = nbest, maxlenratio, minlenratio
        self.batch_encoder = batch_encoder
        self.seconds = {"encode": 0.0, "search": 0.0}

    def inputs(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """A collated batch -> (N, T[, ...]) model input on the model's device and dtype, (N,) lengths."""
        key_in = self.spec.input_name
        xs = batch[key_in].to(self.inference.device)
        if key_in == "speech":  # speech: in the model's dtype, or float32 for a float32 frontend
            xs = xs.to(torch.float32 if self.float_input else getattr(torch, self.inference.dtype))
        return xs, batch[f"{key_in}_lengths"].to(self.inference.device)

    @torch.no_grad()
    def search_batch(self, xs: torch.Tensor, x_lens: torch.Tensor):
        """One search over a batch of inputs (see ``inputs``) -> ``SearchResult``. The seconds
        spent encoding (frontend, encoder, CTC posteriors) and searching add up in ``seconds``."""
        model, ctc = self.model, self.ctc
        started = time.perf_counter()
        enc, enc_lens = encode(model, xs, x_lens, self.batch_encoder)
        # CTC posteriors in float32 whatever the model's dtype: bfloat16 keeps 3 digits of a log-prob
        ctc_logp = ctc.ctc_lo(enc).float().log_softmax(-1) if ctc is not None else None
        if enc.is_cuda:
            torch.cuda.synchronize(enc.device)
        encoded = time.perf_counter()
        result = self.search(enc, enc_lens, self.maxlenratio, self.minlenratio, ctc_logp=ctc_logp)
        if enc.is_cuda:
            torch.cuda.synchronize(enc.device)
        self.seconds["encode"] += encoded - started
        self.seconds["search"] += time.perf_counter() - encoded
        return result

    def nbest_lists(self, result, keys=None) -> List[list]:
        """Each utterance's n-best ``((text, token, token_int), score)`` of a ``SearchResult``. An
        utterance whose best hypothesis is empty gets a warning with the best non-empty one's
        score beside it (a length bias, ``penalty``, is the usual cause), so that nothing is
        decoded to nothing without a line saying why."""
        inference = self.inference
        tokens = lambda h: hypothesis_tokens(h, inference.converter, inference.tokenizer)  # noqa: E731
        lists = []
        for i, hyps in enumerate(result.hypotheses):
            nbest = [(tokens(h), h.score) for h in hyps[: self.nbest]]
            if nbest and not nbest[0][0][2]:
                other = next((h for h in hyps[1:] if tokens(h)[2]), None)
                beside = (f"the best non-empty one {float(other.score):.3f}: {' '.join(tokens(other)[1])!r}"
                          if other is not None else "no non-empty hypothesis ended")
                logging.warning("%s: decoded to nothing: the empty hypothesis scored %.3f, %s",
                                f"utterance {keys[i]}" if keys else f"input {i}", float(nbest[0][1]), beside)
            lists.append(nbest)
        return lists


def decode(module, spec: TaskSpec, args, recorder, batch_encoder: bool = False, attn_backend: str = None,
           cuda_graphs: bool = False, skip_bad_audio: bool = False) -> None:
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed
    from espnet2.train.dataset import ESPnetDataset

    from espnet_mtla.storage.fileio import write_text_atomic

    check_supported(args)
    set_all_random_seed(args.seed)
    inference = build_inference_object(module, spec, args)
    decoder = BatchDecoder(inference, spec, args.nbest, args.maxlenratio, args.minlenratio, batch_encoder,
                           cuda_graphs, args.ctc_window_margin, attn_backend)
    train_args = decoder.train_args
    task_class = getattr(module, spec.espnet_task)
    # numpy has no bfloat16: inputs are read in float32 and cast with the model
    dataset = ESPnetDataset(args.data_path_and_name_and_type,
                            float_dtype="float32" if args.dtype == "bfloat16" else args.dtype,
                            preprocess=task_class.build_preprocess_fn(train_args, False))
    task_class.check_task_requirements(dataset, args.allow_variable_data_keys, train=False, inference=True)
    collate = task_class.build_collate_fn(train_args, False)
    recorder.device = torch.device(inference.device)
    keys = input_keys(args)
    skipped: Dict[str, str] = {} if skip_bad_audio else None
    batches = plan_batches(dataset, keys, spec.input_name, args, train_args, skipped)

    results: Dict[str, list] = {}
    for batch_keys in batches:
        # read once: a batch split for memory decodes what was read
        items = {key: read_utterance(dataset, key, skipped) for key in batch_keys}
        readable = [key for key in batch_keys if items[key] is not None]
        if not readable:
            continue

        def run(keys):
            xs, x_lens = decoder.inputs(collate([items[key] for key in keys])[1])
            return recorder.timed(lambda: decoder.search_batch(xs, x_lens))

        for uids, (result, elapsed, peak_bytes) in split_on_out_of_memory(run, readable):
            tokens: List[int] = []
            for key, nbest in zip(uids, decoder.nbest_lists(result, uids)):
                results[key] = nbest
                tokens.append(len(nbest[0][0][2]) if nbest else 0)  # tokens of the best hypothesis
            recorder.record_batch(uids, elapsed, tokens, peak_bytes, result.cache_bytes_peak,
                                  result.lm_cache_bytes_peak, result.cache_bytes_allocated_peak)
            logging.info("decoded %d utterances in %.3f s", len(uids), elapsed)
    with DatadirWriter(args.output_dir) as writer:  # in input order
        for key in keys:
            for n, ((text, token, token_int), score) in enumerate(results.get(key, []), 1):
                out = writer[f"{n}best_recog"]
                out["token"][key] = " ".join(token)
                out["token_int"][key] = " ".join(map(str, token_int))
                out["score"][key] = str(score)
                if text is not None:
                    out["text"][key] = text
    if skipped:
        write_text_atomic(f"{args.output_dir}/skipped_utterances",
                          "".join(f"{key} {reason}\n" for key, reason in skipped.items()))
        logging.warning("%d of %d utterances skipped for unreadable input (--skip_bad_audio true): listed in %s",
                        len(skipped), len(keys), f"{args.output_dir}/skipped_utterances")
