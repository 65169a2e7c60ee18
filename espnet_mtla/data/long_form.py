"""Long recordings made from a test set's utterances, with their reference transcripts and the
true segment times: the long-form condition of ``mini_synth`` (and of ``bench.long_form``).

    python -m espnet_mtla.data.long_form --src dump/flac/test --out data/test_long --minutes 5 [10 ...]

Each recording strings utterances of ``--src`` (a Kaldi data dir: ``wav.scp`` + ``text``) end
to end, in a random order (repeating the set where a recording is longer than it), with:

- pauses drawn from 0.4 to 3.0 s between utterances (and 1 s of lead-in and tail);
- each utterance's level drawn from -3 to +3 dB around the set's own;
- babble under everything: three other utterances of the set at once, looped, at 25 dB below
  the speech (a room with people talking further away).

Written (a recording-level data dir, Kaldi style; files written whole, then renamed):
``wav.scp`` (``<rec> <flac>``), ``text`` (``<rec> <every utterance's text in order>``),
``utt2spk``/``spk2utt`` (each recording its own speaker), and the oracle segmentation:
``oracle_segments`` (``<utt> <rec> <start> <end>``, Kaldi's ``segments``) with ``oracle_text``
(``<utt> <text>``), where ``<utt>`` is ``<rec>-<n>-<source utterance>``.
"""

import argparse
import logging
import random
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from espnet_mtla.storage.fileio import write_atomic, write_text_atomic

log = logging.getLogger(__name__)

PAUSE_S = (0.4, 3.0)
GAIN_DB = (-3.0, 3.0)
BABBLE_DB = -25.0
BABBLE_TALKERS = 3
EDGE_S = 1.0


def read_table(path: Path) -> Dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return dict((line.rstrip("\n").split(" ", 1) + [""])[:2] for line in f if line.strip())


def make_recording(utts: Sequence[str], audio: Dict[str, np.ndarray], rate: int, seconds: float,
                   rng: random.Random):
    """(samples, [(utt, start s, end s)]) of one recording of about ``seconds``."""
    pieces, placed, t = [np.zeros(int(EDGE_S * rate), np.float32)], [], EDGE_S
    order: List[str] = []
    while t < seconds - EDGE_S:
        if not order:
            order = list(utts)
            rng.shuffle(order)
        utt = order.pop()
        speech = audio[utt] * np.float32(10 ** (rng.uniform(*GAIN_DB) / 20))
        placed.append((utt, round(t, 3), round(t + len(speech) / rate, 3)))
        pause = np.zeros(int(rng.uniform(*PAUSE_S) * rate), np.float32)
        pieces += [speech, pause]
        t += (len(speech) + len(pause)) / rate
    pieces.append(np.zeros(int(EDGE_S * rate), np.float32))
    samples = np.concatenate(pieces)
    babble = np.zeros(len(samples), np.float64)
    for utt in rng.sample(list(utts), min(BABBLE_TALKERS, len(utts))):
        talker = audio[utt].astype(np.float64)
        babble += np.resize(np.roll(talker, rng.randrange(len(talker))), len(samples))
    speech_power = np.mean(np.concatenate([audio[u] for u, _, _ in placed[:50]]).astype(np.float64) ** 2)
    babble *= np.sqrt(speech_power * 10 ** (BABBLE_DB / 10) / (np.mean(babble ** 2) + 1e-20))
    mixture = samples + babble
    mixture *= min(1.0, 0.95 / max(float(np.abs(mixture).max()), 1e-9))
    return mixture.astype(np.float32), placed


def make_long_form(src: Path, out: Path, minutes: Sequence[float], seed: int = 0) -> List[str]:
    """Recordings of ``minutes`` each from the data dir ``src`` into the data dir ``out``; their names."""
    import soundfile

    wavs, texts = read_table(src / "wav.scp"), read_table(src / "text")
    utts = [u for u in wavs if u in texts]
    if not utts:
        raise ValueError(f"{src}: no utterance has both wav.scp and text: nothing to build recordings from")
    audio, rate = {}, None
    for utt in utts:
        samples, rate_u = soundfile.read(wavs[utt], dtype="float32")
        if rate is not None and rate_u != rate:
            raise ValueError(f"{wavs[utt]}: {rate_u} Hz, but the set's other files are {rate} Hz")
        rate, audio[utt] = rate_u, samples if samples.ndim == 1 else samples.mean(axis=1)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = {name: [] for name in ("wav.scp", "text", "utt2spk", "spk2utt", "oracle_segments", "oracle_text")}
    names = []
    for i, length in enumerate(minutes):
        rec = f"long{i + 1:02d}_{int(round(length * 60)):05d}s"
        samples, placed = make_recording(utts, audio, rate, length * 60, rng)
        path = (out / "audio" / f"{rec}.flac").resolve()
        write_atomic(path, lambda tmp: soundfile.write(str(tmp), samples, rate, format="FLAC"))
        rows["wav.scp"].append(f"{rec} {path}")
        rows["text"].append(f"{rec} {' '.join(texts[u] for u, _, _ in placed)}")
        rows["utt2spk"].append(f"{rec} {rec}")
        rows["spk2utt"].append(f"{rec} {rec}")
        for n, (utt, start, end) in enumerate(placed):
            seg = f"{rec}-{n:04d}-{utt}"
            rows["oracle_segments"].append(f"{seg} {rec} {start:.3f} {end:.3f}")
            rows["oracle_text"].append(f"{seg} {texts[utt]}")
        names.append(rec)
        log.info("%s: %.1f min, %d utterances", rec, len(samples) / rate / 60, len(placed))
    for name, lines in rows.items():
        write_text_atomic(out / name, "".join(f"{line}\n" for line in sorted(lines)))
    return names


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m espnet_mtla.data.long_form", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, required=True, help="a data dir of utterances (wav.scp, text)")
    p.add_argument("--out", type=Path, required=True, help="the recording-level data dir to write")
    p.add_argument("--minutes", type=float, nargs="+", default=[5.0], help="one recording of each length")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_long_form(args.src, args.out, args.minutes, args.seed)


if __name__ == "__main__":
    main()
