"""Long recordings: split by voice activity, decode every segment of every recording in one
batched search, put the results back in time order.

    transcripts = transcribe(model, ["meeting1.flac", "meeting2.flac"])   # or model.transcribe_long(...)
    for seg in transcripts[0].segments:
        print(f"{seg.start:7.2f} {seg.end:7.2f} {seg.text}")

Segments are at most ``max_segment_s`` long (default: the longest utterance the model was
trained on, read from its training shape file where the model came with one, else 20 s). All
segments of all recordings are decoded together, sorted by length into batches of at most the
model's ``batch_frames`` (a long recording is one large batch, not a loop of searches). The
joint CTC scorer gets a window (``ctc_window_margin`` encoder frames around each hypothesis'
alignment, 2 s unless the model's decoding sets one): longer than any pause a segment keeps,
since the VAD cuts at pauses longer than ``min_silence_s``.

``word_times=True`` aligns each segment's best hypothesis to its CTC posteriors with
``ctc-segmentation`` (the aligner of ESPnet's ``asr_align``; models with CTC only) and gives
each word its start, end and alignment confidence; otherwise words are not timed.
"""

import importlib.util
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from espnet_mtla.api.vad import PAD_AFTER_S, PAD_BEFORE_S, speech_regions

log = logging.getLogger("espnet_mtla.api")
logging.getLogger("ctc_segmentation").setLevel(logging.WARNING)  # a line per segment otherwise

DEFAULT_MAX_SEGMENT_S = 20.0
CTC_WINDOW_S = 2.0
BLOCK_S = 600.0  # audio read, segmented and decoded at a time


@dataclass
class Word:
    text: str
    start: float  # seconds from the start of the recording
    end: float
    confidence: float  # ctc-segmentation's: the mean log-posterior of its tokens' frames (<= 0)


@dataclass
class Segment:
    start: float  # seconds from the start of the recording
    end: float
    text: str
    score: float  # the search's score of the hypothesis
    words: List[Word] = field(default_factory=list)
    intent: Optional[str] = None  # SLU models


@dataclass
class Transcript:
    """One recording's segments, in time order (segments that decoded to nothing are left out)."""

    recording: str  # its name: the file's stem, or "recording<i>"
    duration: float  # seconds
    segments: List[Segment]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    def to_dict(self) -> dict:
        return {"recording": self.recording, "duration": round(self.duration, 3), "text": self.text,
                "segments": [asdict(s) for s in self.segments]}


def trained_max_seconds(model) -> Optional[float]:
    """The longest training utterance in seconds, from the model's speech shape file (if present)."""
    files = getattr(model.decoder.train_args, "train_shape_file", None) or []
    for path in files:
        if Path(path).name == "speech_shape" and Path(path).is_file():
            longest = 0
            with open(path, encoding="utf-8") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        longest = max(longest, int(parts[1].split(",")[0]))
            return longest / model.sampling_rate if longest else None
    return None


@contextmanager
def ctc_window(model, margin: int):
    """The search's CTC window margin set to ``margin`` within the block (kept if already set)."""
    search = model.decoder.search
    before = search.ctc_window_margin
    search.ctc_window_margin = before or margin
    try:
        yield
    finally:
        search.ctc_window_margin = before


def encoder_frames_per_second(model) -> float:
    """Encoder output frames per second of input (the encoder's subsampling), measured on 10 s of silence."""
    seconds = 10
    silence = model.model_input(np.zeros(seconds * model.sampling_rate, dtype=np.float32), "silence")
    return model.encode(silence).shape[1] / seconds


def _name(recording, i: int) -> str:
    return Path(recording).stem if isinstance(recording, (str, Path)) else f"recording{i + 1}"


def recording_blocks(model, recording, name: str, block_s: float):
    """(offset, samples, last) of a recording in blocks of ``block_s`` seconds at the model's
    rate, each read when the previous is done with: a file is never held whole in memory."""
    rate = model.sampling_rate
    if not isinstance(recording, (str, Path)):
        samples = model.audio(recording, name)
        step = int(block_s * rate)
        for offset in range(0, len(samples), step):
            yield offset, samples[offset: offset + step], offset + step >= len(samples)
        return
    import soundfile

    try:
        f = soundfile.SoundFile(str(recording))
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise ValueError(f"{recording}: cannot read it as audio ({err})") from None
    with f:
        offset, frames, read = 0, int(block_s * f.samplerate), 0
        while read < f.frames:
            block = f.read(frames, dtype="float32", always_2d=True)
            if not len(block):
                return
            read += len(block)
            samples = model.audio((block, f.samplerate), name)
            yield offset, samples, read >= f.frames
            offset += len(samples)


def speech_segments(model, recording, name: str, vad: str, max_segment_s: float, min_silence_s: float,
                    pad_before_s: float, pad_after_s: float, block_s: float, clock: dict):
    """(start sample, samples) of each speech segment of a recording, in time order, found block by
    block; speech running into a block's end is carried over to the next block whole."""
    rate = model.sampling_rate
    carry, carry_offset, total = np.zeros(0, np.float32), 0, 0
    for offset, samples, last in recording_blocks(model, recording, name, block_s):
        audio = np.concatenate([carry, samples]) if len(carry) else samples
        start_of_audio = carry_offset if len(carry) else offset
        total = offset + len(samples)
        started = time.perf_counter()
        regions = speech_regions(audio, rate, vad, max_segment_s, min_silence_s, pad_before_s=pad_before_s,
                                 pad_after_s=pad_after_s)
        clock["vad_s"] += time.perf_counter() - started
        if not last:  # what may go on into the next block waits for it
            edge = max(0, len(audio) - int((min_silence_s + pad_after_s) * rate))
            keep = regions[-1][0] if regions and regions[-1][1] > edge else max(edge, regions[-1][1] if regions else 0)
            regions = [r for r in regions if r[1] <= keep]
            carry, carry_offset = audio[keep:], start_of_audio + keep
        for s, e in regions:  # copies: a block is freed once its segments are decoded or waiting
            yield start_of_audio + s, audio[s:e].copy()
    clock["samples"] += total


def transcribe(model, recordings, vad: str = "auto", max_segment_s: Optional[float] = None,
               min_silence_s: float = 0.3, pad_before_s: float = PAD_BEFORE_S, pad_after_s: float = PAD_AFTER_S,
               word_times: bool = False, names: Optional[Sequence[str]] = None,
               segments: Optional[Dict[str, List[Tuple[float, float]]]] = None, recorder=None,
               timing: Optional[dict] = None, block_s: float = BLOCK_S) -> Union["Transcript", List["Transcript"]]:
    """Long recordings (as ``TrainedModel`` inputs: paths, arrays, (array, rate)) -> a Transcript
    each (one recording -> one Transcript, a list -> a list).

    Recordings are read and segmented ``block_s`` seconds at a time, and segments are decoded
    once ``block_s`` seconds of them are waiting (from one recording or several), so memory does
    not grow with a recording's length. ``segments``: recording name -> (start, end) seconds to
    decode instead of the VAD's (a given segmentation, e.g. Kaldi's ``segments``). ``recorder``:
    an ``EfficiencyRecorder`` that times each search. ``timing``: a dict that gets the seconds
    of audio and those spent segmenting (``vad_s``, reading included), decoding (``decode_s``)
    and aligning words (``align_s``)."""
    if not model.task.speech:
        raise ValueError(f"long-form decoding needs a speech model; this one is {model.task.name}")
    if word_times and not model.has_ctc:
        raise ValueError("word_times=True aligns with the model's CTC; this model has none")
    if word_times and importlib.util.find_spec("ctc_segmentation") is None:
        raise ValueError("word_times=True needs the ctc-segmentation package (pip install ctc-segmentation==1.7.5; "
                         "it builds with a C compiler)")
    single = not isinstance(recordings, list)
    recordings = [recordings] if single else recordings
    names = list(names) if names else [_name(r, i) for i, r in enumerate(recordings)]
    max_segment_s = max_segment_s or trained_max_seconds(model) or DEFAULT_MAX_SEGMENT_S
    rate = model.sampling_rate
    clock = dict(vad_s=0.0, decode_s=0.0, align_s=0.0, samples=0, segments=0, waiting=0)
    spent = dict(model.decoder.seconds)  # the decoder's encode/search seconds so far
    found: List[List[Segment]] = [[] for _ in recordings]
    lengths = [0] * len(recordings)
    waiting: List[tuple] = []  # (recording index, start sample, samples)
    window = math.ceil(CTC_WINDOW_S * encoder_frames_per_second(model))

    def decode_waiting():
        started = time.perf_counter()
        keys = [f"{names[i]}-{s * 100 // rate:07d}-{(s + len(x)) * 100 // rate:07d}" for i, s, x in waiting]
        inputs = [model.model_input(x, key) for (_, _, x), key in zip(waiting, keys)]
        with ctc_window(model, window):
            results = model.decode_inputs(inputs, "segments", recorder, keys)
        aligned = time.perf_counter()
        for (i, start, samples), result in zip(waiting, results):
            if not result.text.strip() and not result.intent:  # nothing decoded (an SLU intent alone counts)
                continue
            segment = Segment(round(start / rate, 3), round((start + len(samples)) / rate, 3), result.text,
                              result.score, intent=result.intent)
            if word_times:
                segment.words = align_words(model, samples, result, segment.start)
            found[i].append(segment)
        clock["decode_s"] += aligned - started
        clock["align_s"] += time.perf_counter() - aligned
        clock["segments"] += len(waiting)
        clock["waiting"] = 0
        waiting.clear()

    for i, (name, recording) in enumerate(zip(names, recordings)):
        before = (clock["samples"], clock["segments"] + len(waiting))
        if segments is not None:  # a given segmentation: the recording is read whole
            started = time.perf_counter()
            samples = model.audio(recording, name)
            cuts = [(int(round(s * rate)), min(len(samples), int(round(e * rate)))) for s, e in segments.get(name, [])]
            pieces = [(s, samples[s:e]) for s, e in cuts if e > s]
            clock["samples"] += len(samples)
            clock["vad_s"] += time.perf_counter() - started
        else:
            pieces = speech_segments(model, recording, name, vad, max_segment_s, min_silence_s, pad_before_s,
                                     pad_after_s, block_s, clock)
        for start, samples in pieces:
            waiting.append((i, start, samples))
            clock["waiting"] += len(samples)
            if clock["waiting"] >= block_s * rate:
                decode_waiting()
        lengths[i] = clock["samples"] - before[0]
        log.info("%s: %.1f s, %d %s segments", name, lengths[i] / rate,
                 clock["segments"] + len(waiting) - before[1], "given" if segments is not None else "speech")
    if waiting:
        decode_waiting()
    transcripts = [Transcript(name, length / rate, sorted(segs, key=lambda s: s.start))
                   for name, length, segs in zip(names, lengths, found)]
    if timing is not None:
        timing.update(audio_s=round(clock["samples"] / rate, 3), vad_s=round(clock["vad_s"], 3),
                      decode_s=round(clock["decode_s"], 3), align_s=round(clock["align_s"], 3),
                      segments=clock["segments"],
                      **{f"{k}_s": round(model.decoder.seconds[k] - spent[k], 3) for k in spent})
    return transcripts[0] if single else transcripts


def words_of(tokens: List[str], token_ids: List[int]):
    """Token ids grouped into words: a SentencePiece "▁" or a "<space>" token starts a new word."""
    words: List[List[int]] = []
    pieces: List[List[str]] = []
    new = True
    for token, token_id in zip(tokens, token_ids):
        if token == "<space>":
            new = True
            continue
        if new or token.startswith("\u2581"):
            words.append([])
            pieces.append([])
            new = False
        words[-1].append(token_id)
        pieces[-1].append(token)
    return words, pieces


def align_words(model, samples: np.ndarray, result, offset: float) -> List[Word]:
    """The best hypothesis' words timed by CTC segmentation on this segment's CTC posteriors."""
    import torch
    from ctc_segmentation import (CtcSegmentationParameters, ctc_segmentation, determine_utterance_segments,
                                  prepare_token_list)

    best = result.nbest[0]
    token_ids, tokens = best.token_ids, best.tokens
    if model.task.name == "slu" and result.intent is not None:  # the intent token is not spoken
        token_ids, tokens = token_ids[1:], tokens[1:]
    words, pieces = words_of(tokens, token_ids)
    if not words:
        return []
    ctc = model.decoder.model.ctc
    with torch.no_grad():
        lpz = ctc.ctc_lo(model.encode(model.model_input(samples))).float().log_softmax(-1)[0].cpu().numpy()
    config = CtcSegmentationParameters()
    config.char_list = list(model.inference.converter.token_list)
    config.blank = 0
    config.index_duration = len(samples) / model.sampling_rate / len(lpz)
    config.min_window_size = max(config.min_window_size, len(lpz))  # a segment is short: search all of it
    tokenizer = model.inference.tokenizer
    texts = [tokenizer.tokens2text(p) if tokenizer is not None else "".join(p) for p in pieces]
    ground_truth, begins = prepare_token_list(config, [np.array(w) for w in words])
    if len(ground_truth) > len(lpz):  # fewer CTC frames than tokens (and the blanks between words)
        log.warning("%.2f s: %d CTC frames for %d tokens: words not timed", offset, len(lpz), len(ground_truth))
        return []
    timings, char_probs, _ = ctc_segmentation(config, lpz, ground_truth)
    spans = determine_utterance_segments(config, begins, char_probs, timings, texts)
    return [Word(text, round(offset + max(float(start), 0.0), 3), round(offset + float(end), 3),
                 round(float(conf), 4) if math.isfinite(conf) else -math.inf)
            for text, (start, end, conf) in zip(texts, spans)]
