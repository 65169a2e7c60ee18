"""Voice activity: where a long recording has speech, as (start, end) sample ranges.

Two detectors, one interface (``speech_regions``):

- ``silero``: Silero VAD (pip ``silero-vad``, MIT; its TorchScript weights ship inside the
  package, so nothing is downloaded). A small LSTM over 32 ms windows at 16 kHz; robust to
  noise and music. Other sampling rates are resampled to 16 kHz for it.
- ``energy``: frame log-energy (25 ms frames, 10 ms hop) against two thresholds set from the
  recording's own quiet frames (10th percentile + ``margin_db``, and half of it for the edges of
  a region that reaches the first: hysteresis keeps quiet onsets and tails), gaps shorter than
  ``min_silence_s`` bridged and blips shorter than ``min_speech_s`` dropped. No model: the
  fallback where Silero is not installed, and for clean audio it is as good.

``auto`` is Silero where installed, else energy (with a notice). Regions longer than
``max_segment_s`` are cut at their quietest 10 ms frame in the second half of the allowed
span (never mid-word on a pause), so that no segment is longer than the model was trained on.
"""

import logging
from typing import List, Tuple

import numpy as np

log = logging.getLogger("espnet_mtla.api")

VADS = ("auto", "silero", "energy")
Region = Tuple[int, int]  # [start, end) in samples
# Padding around detected speech: little before (a model trained on cut utterances expects speech
# to start at once: 0.2 s of noise before it tripled the mini recipe's WER), more after (quiet
# word endings; measured in docs/benchmarks.md, "Long recordings")
PAD_BEFORE_S, PAD_AFTER_S = 0.1, 0.2

_silero_loaded = None  # (package, model) once loaded


def silero_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("silero_vad") is not None


def _silero():
    """The ``silero_vad`` package and its TorchScript model, loaded once (from the package's own
    files). Importing the package sets torch's threads to 1 for the whole process: they are put
    back, here, the one place it is imported."""
    global _silero_loaded
    if _silero_loaded is None:
        import torch

        threads = torch.get_num_threads()
        import silero_vad

        torch.set_num_threads(threads)
        _silero_loaded = (silero_vad, silero_vad.load_silero_vad())
    return _silero_loaded


def frame_energy_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """(F,) log-energy in dB of 25 ms frames every 10 ms (F = ceil(len / hop)), summed from 5 ms
    pieces so that memory stays at one float32 copy of the samples."""
    half = rate // 200  # 5 ms: a hop is 2 pieces, a frame 5
    count = max(1, -(-len(samples) // (2 * half)))
    pieces = np.zeros(2 * count + 5)
    squared = np.square(samples, dtype=np.float32)
    whole = len(samples) // half
    pieces[:whole] = squared[: whole * half].reshape(whole, half).sum(axis=1, dtype=np.float64)
    pieces[whole] = squared[whole * half:].sum(dtype=np.float64)
    frames = sum(pieces[k: k + 2 * count: 2] for k in range(5))
    return 10 * np.log10(frames / (5 * half) + 1e-10)


def _runs(mask: np.ndarray) -> List[Tuple[int, int]]:
    """[start, end) runs of True in a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def energy_regions(samples: np.ndarray, rate: int, min_silence_s: float = 0.3, min_speech_s: float = 0.25,
                   margin_db: float = 12.0) -> List[Region]:
    """Speech regions by frame energy (see the module docstring), unpadded."""
    energy = frame_energy_db(samples, rate)
    floor = np.percentile(energy, 10)
    high = max(floor + margin_db, energy.max() - 60.0)
    # two thresholds: a run above half the margin is speech where it reaches the full margin
    # somewhere (quiet word onsets and tails stay with their word; noise blips do not start one)
    loud = energy > high
    runs = [(s, e) for s, e in _runs(energy > high - margin_db / 2) if loud[s:e].any()]
    merged: List[List[int]] = []
    for start, end in runs:  # bridge short gaps
        if merged and start - merged[-1][1] < min_silence_s * 100:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    hop = rate // 100
    return [(s * hop, min(len(samples), e * hop)) for s, e in merged if e - s >= min_speech_s * 100]


def pad_regions(regions: List[Region], length: int, before: int, after: int) -> List[Region]:
    """Regions widened by ``before``/``after`` samples, never past the middle of the pause to a
    neighbour nor outside [0, length)."""
    out: List[Region] = []
    for i, (s, e) in enumerate(regions):
        start = max(s - before, (regions[i - 1][1] + s) // 2 if i else 0)
        end = min(e + after, (e + regions[i + 1][0]) // 2 if i + 1 < len(regions) else length)
        out.append((start, end))
    return out


def silero_regions(samples: np.ndarray, rate: int, min_silence_s: float = 0.3, min_speech_s: float = 0.25,
                   threshold: float = 0.5) -> List[Region]:
    """Speech regions by Silero VAD, in samples of ``rate``, unpadded.

    Silero is recurrent (one 32 ms window per call, about 1% of real time on a CPU core). Running
    a recording as parallel streams would be 4-5x faster, but its state has a long memory: 20 s
    streams agreed with the one pass on 92% of the windows and cost the mini recipe 1.3-2.5 WER
    points, so it runs as Silero runs it."""
    import torch

    silero_vad, model = _silero()
    vad_rate = 16000 if rate % 16000 == 0 or rate > 16000 else 8000
    audio = samples
    if rate != vad_rate:
        import soxr

        audio = soxr.resample(samples, rate, vad_rate).astype(np.float32)
    with torch.inference_mode():
        found = silero_vad.get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(audio)), model,
                                                 threshold=threshold, sampling_rate=vad_rate,
                                                 min_speech_duration_ms=int(min_speech_s * 1000),
                                                 min_silence_duration_ms=int(min_silence_s * 1000), speech_pad_ms=0)
    scale = rate / vad_rate
    return [(int(r["start"] * scale), min(len(samples), int(r["end"] * scale))) for r in found]


def split_long(regions: List[Region], samples: np.ndarray, rate: int, max_segment_s: float) -> List[Region]:
    """Regions longer than ``max_segment_s`` cut at their quietest 10 ms frame in the second half
    of each allowed span."""
    limit = int(max_segment_s * rate)
    hop = rate // 100
    out: List[Region] = []
    for start, end in regions:
        while end - start > limit:
            lo, hi = start + limit // 2, start + limit
            energy = frame_energy_db(samples[lo:hi], rate)
            cut = lo + int(np.argmin(energy[: max(1, (hi - lo) // hop - 2)])) * hop + hop // 2
            out.append((start, cut))
            start = cut
        out.append((start, end))
    return out


def speech_regions(samples: np.ndarray, rate: int, vad: str = "auto", max_segment_s: float = 20.0,
                   min_silence_s: float = 0.3, min_speech_s: float = 0.25, pad_before_s: float = PAD_BEFORE_S,
                   pad_after_s: float = PAD_AFTER_S) -> List[Region]:
    """[start, end) sample ranges of speech in ``samples`` (1-D float), padded, each at most ``max_segment_s``."""
    if vad not in VADS:
        raise ValueError(f"vad must be one of {', '.join(VADS)}, got {vad!r}")
    if vad == "silero" and not silero_available():
        raise ValueError("vad='silero' needs the silero-vad package (pip install silero-vad), or use vad='energy'")
    if vad == "auto":
        vad = "silero" if silero_available() else "energy"
        if vad == "energy":
            log.warning("silero-vad is not installed: segmenting by energy (pip install silero-vad for a trained VAD)")
    detect = silero_regions if vad == "silero" else energy_regions
    regions = detect(samples, rate, min_silence_s, min_speech_s)
    regions = pad_regions(regions, len(samples), int(pad_before_s * rate), int(pad_after_s * rate))
    return split_long(regions, samples, rate, max_segment_s)
