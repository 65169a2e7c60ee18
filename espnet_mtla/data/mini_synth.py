"""The synthetic mini corpus: spoken sentences for ASR, ST (en->de) and SLU, and text-only MT, from a seed.

    python -m espnet_mtla.data.mini_synth --task asr --out-dir data --audio-dir downloads/mini_synth \\
        [--train 2000 --dev 200 --test 200 --seed 0 --nj 2]

For each split writes a Kaldi data dir ``<out-dir>/<split>/``: wav.scp (flac paths), text,
utt2spk, spk2utt, and for ST text.en (transcript) and text.de (translation; ``text`` is the
translation too); for MT the same two text files and no audio (``text`` is the German); for
SLU ``text`` is "<intent> transcript" as in ESPnet's SLURP recipe and
``transcript`` is the transcript alone. Speakers are espeak-ng voices (accent + variant);
each utterance also draws a speaking rate and pitch. Utterance ids are
``<speaker>-<split>-<index>``, so sorting by id also sorts by speaker (Kaldi's rule).
"""

import argparse
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import soundfile
from tqdm import tqdm

from espnet_mtla.data.grammar import command, sentence
from espnet_mtla.data.kaldi_dir import Utterance, write_data_dir
from espnet_mtla.data.speech_synth import SAMPLE_RATE, VOICES, Voice, check_espeak, speak
from espnet_mtla.fileio import write_atomic

TASKS = ("asr", "st", "slu", "mt")
SPLITS = ("train", "dev", "test")


def draw_utterances(task: str, split: str, count: int, seed: int) -> List[Dict[str, str]]:
    """Texts and voices of one split; independent of the other splits' sizes."""
    rng = random.Random(f"{seed}-{task}-{split}")
    utts = []
    for index in range(count):
        language, variant = rng.choice(VOICES)
        voice = Voice(language, variant, rate=rng.randint(140, 190), pitch=rng.randint(30, 70))
        utt = {"voice": voice, "utt_id": f"{voice.speaker_id}-{split}-{index:05d}"}
        if task == "slu":
            cmd = command(rng)
            utt.update(spoken=cmd.transcript, text=f"{cmd.intent} {cmd.transcript}", transcript=cmd.transcript)
        else:
            sent = sentence(rng)
            utt.update(spoken=sent.english, text=sent.english if task == "asr" else sent.german)
            if task in ("st", "mt"):
                utt.update(**{"text.en": sent.english, "text.de": sent.german})
        utts.append(utt)
    return sorted(utts, key=lambda u: u["utt_id"])


def synthesise(utt: Dict[str, str], audio_dir: Path) -> str:
    path = audio_dir / f"{utt['utt_id']}.flac"
    if not path.exists():  # resumable: finished files are complete (written atomically)
        samples = speak(utt["spoken"], utt["voice"])
        write_atomic(path, lambda tmp: soundfile.write(tmp, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16"))
    return str(path.resolve())


def to_utterances(utts: List[Dict[str, str]], paths: List[str], task: str) -> List[Utterance]:
    text_files = ["text"] + {"st": ["text.en", "text.de"], "mt": ["text.en", "text.de"],
                             "slu": ["transcript"]}.get(task, [])
    return [Utterance(u["utt_id"], u["voice"].speaker_id, {name: u[name] for name in text_files}, audio=path)
            for u, path in zip(utts, paths)]


def generate(task: str, out_dir, audio_dir, sizes: Dict[str, int], seed: int = 0, nj: int = 2) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task != "mt":  # mt is text only: the same sentences, never spoken
        check_espeak()
    for split in SPLITS:
        utts = draw_utterances(task, split, sizes[split], seed)
        if task == "mt":
            write_data_dir(Path(out_dir) / split, to_utterances(utts, [None] * len(utts), task))
            continue
        split_audio = Path(audio_dir) / task / split
        split_audio.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=nj) as pool:  # espeak-ng runs as subprocesses
            paths = list(tqdm(pool.map(lambda u: synthesise(u, split_audio), utts), total=len(utts),
                              desc=f"mini_synth {task} {split}", unit="utt"))
        write_data_dir(Path(out_dir) / split, to_utterances(utts, paths, task))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--out-dir", required=True, help="Kaldi data dirs go to <out-dir>/{train,dev,test}")
    parser.add_argument("--audio-dir", required=True, help="flac files go to <audio-dir>/<task>/<split>/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    for split, default in zip(SPLITS, (2000, 200, 200)):
        parser.add_argument(f"--{split}", type=int, default=default, help=f"utterances in {split}")
    args = parser.parse_args(argv)
    sizes = {split: getattr(args, split) for split in SPLITS}
    generate(args.task, args.out_dir, args.audio_dir, sizes, args.seed, args.nj)


if __name__ == "__main__":
    main()
