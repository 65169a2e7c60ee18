"""``--batch_size N`` (N > 1) for the decoder-only models: many utterances per beam search.

ESPnet's inference loops decode one utterance at a time. With ``--batch_size N`` the
``espnet_mtla.bin.<task>_inference`` CLIs come here instead: ESPnet's own inference object
(``Speech2Text``, ``Speech2Understand``, ``Text2Text``) is built from the same options and
supplies the model, token converter and tokenizer; ESPnet's streaming iterator yields padded
batches of N utterances; ``MultiUtteranceBeamSearch`` searches all of them together.

The encoder: by default each utterance of a batch is encoded on its own (``--batch_encoder
false``), because a padded batch does not give exactly the frames a lone utterance gets: the
STFT's reflection padding at the end of an utterance sees the batch's zero padding, and
Conformer convolutions reach into padded frames. With those, ``--batch_size N`` gives exactly
``--batch_size 1``'s hypotheses. ``--batch_encoder true`` runs one encoder pass over the
padded batch (faster; exact for text sources and fbank+Transformer, otherwise the last frames
of shorter utterances differ slightly). The search, where decoding spends its time, is
batched either way. Outputs are written as ESPnet writes them (``<n>best_recog/{text,
token, token_int, score}``), so scoring cannot tell the two paths apart.

Not supported with N > 1 (refused in one line): joint CTC scoring (``--ctc_weight`` > 0),
language models, and models whose decoder is not ``decoder_only``.
"""

import inspect
import logging
from typing import List

import torch

from espnet_mtla.bin.cli import INFERENCE_CLASSES
from espnet_mtla.decoder import DecoderOnlyDecoder
from espnet_mtla.decoder.batch_beam_search import MultiUtteranceBeamSearch

MODEL_ATTRIBUTE = {"asr": "asr", "st": "st", "slu": "asr", "mt": "mt"}  # <x>_model / <x>_train_args
INPUT_NAME = {"asr": "speech", "st": "speech", "slu": "speech", "mt": "src_text"}


class BatchDecodingError(ValueError):
    pass


def check_supported(args) -> None:
    """One-line refusals for what the multi-utterance search does not score."""
    if getattr(args, "ctc_weight", 0.0) > 0:
        raise BatchDecodingError(f"--batch_size {args.batch_size} does not score joint CTC: use --ctc_weight 0 "
                                 f"(or --batch_size 1 for joint CTC/attention decoding)")
    for option in ("lm_file", "ngram_file", "word_lm_file"):
        if getattr(args, option, None):
            raise BatchDecodingError(f"--batch_size {args.batch_size} does not use --{option}: drop it, or use "
                                     f"--batch_size 1")


def build_inference_object(module, task: str, args):
    """ESPnet's inference object from the parsed options (only those its constructor takes)."""
    cls = getattr(module, INFERENCE_CLASSES[task][0])
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in vars(args).items() if k in accepted}
    kwargs.update(device="cuda" if args.ngpu >= 1 else "cpu", batch_size=1)
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def hypothesis_tokens(hyp, converter, tokenizer):
    """(text, token, token_int) of a hypothesis, as ESPnet's inference objects make them."""
    token_int = [t for t in hyp.yseq[1:-1].tolist() if t != 0]  # drop <sos>, <eos> and blanks
    token = converter.ids2tokens(token_int)
    return (tokenizer.tokens2text(token) if tokenizer is not None else None), token, token_int


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


def decode(module, task: str, args, recorder, batch_encoder: bool = False, attn_backend: str = None) -> None:
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.torch_utils.device_funcs import to_device
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    check_supported(args)
    set_all_random_seed(args.seed)
    inference = build_inference_object(module, task, args)
    name = MODEL_ATTRIBUTE[task]
    model = getattr(inference, f"{name}_model")
    if not isinstance(model.decoder, DecoderOnlyDecoder):
        raise BatchDecodingError(f"--batch_size {args.batch_size} needs a decoder_only model; this one's decoder is "
                                 f"{type(model.decoder).__name__}: use --batch_size 1")
    if attn_backend:
        from espnet_mtla.bin.cli import use_attention_backend

        use_attention_backend(inference, task, attn_backend)
    train_args = getattr(inference, f"{name}_train_args")
    task_class = getattr(module, INFERENCE_CLASSES[task][1])
    loader = task_class.build_streaming_iterator(
        args.data_path_and_name_and_type, dtype=args.dtype, batch_size=args.batch_size, key_file=args.key_file,
        num_workers=args.num_workers, preprocess_fn=task_class.build_preprocess_fn(train_args, False),
        collate_fn=task_class.build_collate_fn(train_args, False),
        allow_variable_data_keys=args.allow_variable_data_keys, inference=True)
    search = MultiUtteranceBeamSearch(
        model.decoder, model.sos, model.eos, args.beam_size, penalty=args.penalty,
        decoder_weight=1.0 - getattr(args, "ctc_weight", 0.0), normalize_length=getattr(args, "normalize_length", False))
    recorder.device = torch.device(inference.device)
    key_in = INPUT_NAME[task]

    @torch.no_grad()
    def search_batch(xs, x_lens):
        enc, enc_lens = encode(model, xs, x_lens, batch_encoder)
        return search(enc, enc_lens, args.maxlenratio, args.minlenratio)

    with DatadirWriter(args.output_dir) as writer:
        for keys, batch in loader:
            batch = to_device({k: v for k, v in batch.items() if k in (key_in, f"{key_in}_lengths")}, inference.device)
            if key_in == "speech":
                batch[key_in] = batch[key_in].to(getattr(torch, inference.dtype))
            nbest, elapsed, peak_bytes = recorder.timed(lambda: search_batch(batch[key_in], batch[f"{key_in}_lengths"]))
            caches = model.decoder.active_caches
            tokens: List[int] = []
            for key, hyps in zip(keys, nbest):
                tokens.append(0)  # output tokens of the best hypothesis (none when there is none)
                for n, hyp in enumerate(hyps[: args.nbest], 1):
                    text, token, token_int = hypothesis_tokens(hyp, inference.converter, inference.tokenizer)
                    out = writer[f"{n}best_recog"]
                    out["token"][key] = " ".join(token)
                    out["token_int"][key] = " ".join(map(str, token_int))
                    out["score"][key] = str(hyp.score)
                    if text is not None:
                        out["text"][key] = text
                    if n == 1:
                        tokens[-1] = len(token_int)
            recorder.record_batch(keys, elapsed, tokens, peak_bytes, caches.peak_nbytes if caches else None)
            logging.info("decoded %d utterances in %.3f s", len(keys), elapsed)
