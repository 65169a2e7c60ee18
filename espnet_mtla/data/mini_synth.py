"""The synthetic mini corpus: spoken sentences for ASR, ST (en->de) and SLU, and text-only MT, from a seed.

    python -m espnet_mtla.data.mini_synth --task asr --out-dir data --audio-dir downloads/mini_synth \\
        [--train 2000 --dev 200 --test 200 --seed 0 --nj 2 --condition clean|hard]

For each split writes a Kaldi data dir ``<out-dir>/<split>/``: wav.scp (flac paths), text,
utt2spk, spk2utt, and for ST text.en (transcript) and text.de (translation; ``text`` is the
translation too); for MT the same two text files and no audio (``text`` is the German); for
SLU ``text`` is "<intent> transcript" as in ESPnet's SLURP recipe and
``transcript`` is the transcript alone. Speakers are espeak-ng voices (accent + variant);
each utterance also draws a speaking rate and pitch. Utterance ids are
``<speaker>-<split>-<index>``, so sorting by id also sorts by speaker (Kaldi's rule).
``--condition hard`` adds tempo changes, reverberation and noise at -5 to 10 dB SNR to every
utterance (see ``conditions.py``); each split's draws are listed in
``<audio-dir>/<task>-hard/<split>/conditions.tsv``. The texts and voices are the same in both
conditions. For ``mt`` (text only), ``--condition hard`` is a text condition instead: longer
sentences with subordinate clauses whose German verb goes last, coordinated sentences, and
misspelt source words (``grammar.hard_sentence``, ``grammar.misspell``). ``--lm-text N`` also
writes ``<out-dir>/lm_text.txt``: N more sentences of the grammar in the target language, one
per line, for a language model (sentences of the dev and test sets left out).
``--text-prior structured`` (asr, st) draws the sentences from ``grammar.structured_sentence``
instead: the same phrases, each depending on the ones before it, subjects Zipf-weighted; its
audio goes to ``<audio-dir>/<task>[-hard]-structured/``. ``--train-text-prior`` gives the
training split a prior of its own (the dev and test sets and lm_text.txt keep ``--text-prior``).
``--homophones`` (asr, st) makes 30% of the objects one of a pair espeak-ng says alike
(``a pear``/``a pair``, ``grammar.HOMOPHONES``): spelt at random under the uniform prior, by
the verb under the structured one, so only context can tell them; its audio goes to
``<audio-dir>/<task>[-hard][-structured]-homophones/``.
"""

import argparse
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import soundfile
from tqdm import tqdm

from espnet_mtla.data import conditions
from espnet_mtla.data.grammar import (HOMOPHONE_RATE, command, hard_sentence, misspell, sentence,
                                      structured_sentence)
from espnet_mtla.data.kaldi_dir import Utterance, write_data_dir
from espnet_mtla.data.speech_synth import SAMPLE_RATE, VOICES, Voice, check_espeak, speak
from espnet_mtla.storage.fileio import write_atomic, write_text_atomic

TASKS = ("asr", "st", "slu", "mt")
TEXT_PRIORS = ("uniform", "structured")  # grammar.sentence (slots drawn uniformly) or grammar.structured_sentence
PRIOR_TASKS = ("asr", "st")  # the tasks that take a prior other than uniform: spoken grammar.sentence's
SPLITS = ("train", "dev", "test")
MT_MISSPELL_RATE = 0.3  # the MT text condition's share of misspelt source words (3+ letters)


def draw_utterances(task: str, split: str, count: int, seed: int, condition: str = "clean",
                    text_prior: str = "uniform", homophones: bool = False) -> List[Dict[str, str]]:
    """Texts, voices and acoustic conditions of one split; independent of the other splits' sizes."""
    rng = random.Random(f"{seed}-{task}-{split}")
    # Its own generator, so the texts and voices do not depend on the condition.
    condition_rng = random.Random(f"{seed}-{task}-{split}-{condition}")
    utts = []
    for index in range(count):
        voice = random_voice(rng)
        utt = {"voice": voice, "utt_id": f"{voice.speaker_id}-{split}-{index:05d}",
               "condition": None if condition == "clean" or task == "mt" else conditions.draw(condition_rng)}
        utt.update(draw_texts(task, rng, condition, condition_rng, text_prior, homophones))
        utts.append(utt)
    return sorted(utts, key=lambda u: u["utt_id"])


def draw_texts(task: str, rng: random.Random, condition: str = "clean", noise_rng=None,
               text_prior: str = "uniform", homophones: bool = False) -> Dict[str, str]:
    """One utterance's texts: ``spoken`` (what espeak-ng says), ``text`` (the target) and the
    task's other text files. ``noise_rng`` misspells the source of MT's hard text condition."""
    if task == "slu":
        cmd = command(rng)
        return {"spoken": cmd.transcript, "text": f"{cmd.intent} {cmd.transcript}", "transcript": cmd.transcript}
    if task == "mt" and condition == "hard":  # a text condition: longer, reordered, misspelt source
        sent = hard_sentence(rng)
        return {"spoken": sent.english, "text": sent.german,
                "text.en": misspell(sent.english, noise_rng or rng, MT_MISSPELL_RATE), "text.de": sent.german}
    sent = (structured_sentence if text_prior == "structured" else sentence)(rng, homophones)
    texts = {"spoken": sent.english, "text": sent.english if task == "asr" else sent.german}
    if task in ("st", "mt"):
        texts.update({"text.en": sent.english, "text.de": sent.german})
    return texts


def random_voice(rng: random.Random) -> Voice:
    language, variant = rng.choice(VOICES)
    return Voice(language, variant, rate=rng.randint(140, 190), pitch=rng.randint(30, 70))


def babble_track(task: str, split: str, seed: int):
    """The split's babble: talkers reading the corpus' own grammar, from their own generator."""
    return conditions.babble_track(random.Random(f"{seed}-{task}-{split}-babble"), speak, random_voice,
                                   lambda rng: sentence(rng).english, SAMPLE_RATE)


def synthesise(utt: Dict[str, str], audio_dir: Path, babble=None) -> str:
    path = audio_dir / f"{utt['utt_id']}.flac"
    if not path.exists():  # resumable: finished files are complete (written atomically)
        samples = speak(utt["spoken"], utt["voice"])
        if utt["condition"] is not None:
            samples, _ = conditions.apply(samples, SAMPLE_RATE, utt["condition"], babble)
        write_atomic(path, lambda tmp: soundfile.write(tmp, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16"))
    return str(path.resolve())


def to_utterances(utts: List[Dict[str, str]], paths: List[str], task: str) -> List[Utterance]:
    text_files = ["text"] + {"st": ["text.en", "text.de"], "mt": ["text.en", "text.de"],
                             "slu": ["transcript"]}.get(task, [])
    return [Utterance(u["utt_id"], u["voice"].speaker_id, {name: u[name] for name in text_files}, audio=path)
            for u, path in zip(utts, paths)]


def audio_subdir(task: str, condition: str, text_prior: str = "uniform", homophones: bool = False) -> str:
    """Where a corpus' audio goes under the audio dir: its own folder per condition and prior, so
    that the cached flac files of one corpus are never taken for another's."""
    return "-".join([task] + [condition] * (condition != "clean") + [text_prior] * (text_prior != "uniform")
                    + ["homophones"] * homophones)


def generate(task: str, out_dir, audio_dir, sizes: Dict[str, int], seed: int = 0, nj: int = 2,
             condition: str = "clean", text_prior: str = "uniform", train_text_prior: Optional[str] = None,
             homophones: bool = False) -> None:
    """``train_text_prior`` (default ``text_prior``): the training split's prior, where the
    transcripts come from other text than the dev and test sets (a language model then brings
    the test domain's text)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if condition not in conditions.CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose one of {', '.join(conditions.CONDITIONS)}")
    priors = {split: (train_text_prior or text_prior) if split == "train" else text_prior for split in SPLITS}
    for prior in set(priors.values()):
        if prior not in TEXT_PRIORS:
            raise ValueError(f"unknown text prior {prior!r}; choose one of {', '.join(TEXT_PRIORS)}")
        if prior != "uniform" and task not in PRIOR_TASKS:
            raise ValueError(f"the {prior} text prior is for spoken sentences: use it with --task asr or st, not {task}")
    if homophones and task not in PRIOR_TASKS:
        raise ValueError(f"homophones are for spoken sentences: use them with --task asr or st, not {task}")
    if task != "mt":  # mt is text only: the same sentences, never spoken
        check_espeak()
    for split in SPLITS:
        utts = draw_utterances(task, split, sizes[split], seed, condition, priors[split], homophones)
        if task == "mt":
            write_data_dir(Path(out_dir) / split, to_utterances(utts, [None] * len(utts), task))
            continue
        split_audio = Path(audio_dir) / audio_subdir(task, condition, priors[split], homophones) / split
        split_audio.mkdir(parents=True, exist_ok=True)
        babble = None
        if condition != "clean":
            table = "".join(f"{u['utt_id']}\t{u['condition'].describe()}\n" for u in utts)
            write_text_atomic(split_audio / "conditions.tsv", table)
            babble = babble_track(task, split, seed)
        with ThreadPoolExecutor(max_workers=nj) as pool:  # espeak-ng runs as subprocesses
            paths = list(tqdm(pool.map(lambda u: synthesise(u, split_audio, babble), utts), total=len(utts),
                              desc=f"mini_synth {task} {split} ({condition})", unit="utt"))
        write_data_dir(Path(out_dir) / split, to_utterances(utts, paths, task))


def write_lm_text(task: str, out_dir, count: int, sizes: Dict[str, int], seed: int = 0,
                  condition: str = "clean", text_prior: str = "uniform", homophones: bool = False) -> Path:
    """``<out_dir>/lm_text.txt``: ``count`` target-language sentences (one per line) of the grammar,
    none of them a sentence of the dev or test set (an LM must not have seen the test's text)."""
    held_out = {u["text"] for split in ("dev", "test")
                for u in draw_utterances(task, split, sizes[split], seed, condition, text_prior, homophones)}
    rng = random.Random(f"{seed}-{task}-lm")
    lines = []
    while len(lines) < count:
        text = draw_texts(task, rng, condition, text_prior=text_prior, homophones=homophones)["text"]
        if text not in held_out:
            lines.append(text)
    path = Path(out_dir) / "lm_text.txt"
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--out-dir", required=True, help="Kaldi data dirs go to <out-dir>/{train,dev,test}")
    parser.add_argument("--audio-dir", required=True, help="flac files go to <audio-dir>/<task>/<split>/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--condition", choices=conditions.CONDITIONS, default="clean",
                        help="clean espeak-ng speech, or hard: tempo, reverberation and noise at -5 to 10 dB SNR")
    parser.add_argument("--text-prior", choices=TEXT_PRIORS, default="uniform",
                        help="uniform: the grammar's slots drawn uniformly; structured (asr, st): each word "
                             "depends on the ones before it, subjects Zipf-weighted: what a language model can learn")
    parser.add_argument("--train-text-prior", choices=TEXT_PRIORS, default=None,
                        help="the training split's prior (default: --text-prior): transcripts from other text "
                             "than the dev and test sets, whose domain a language model then brings")
    parser.add_argument("--homophones", action="store_true",
                        help=f"(asr, st) {round(100 * HOMOPHONE_RATE)}%% of the objects one of a pair espeak-ng says alike "
                             "(a pear/a pair): "
                             "spelt at random under the uniform prior, by the verb under the structured one")
    parser.add_argument("--nj", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    for split, default in zip(SPLITS, (2000, 200, 200)):
        parser.add_argument(f"--{split}", type=int, default=default, help=f"utterances in {split}")
    parser.add_argument("--lm-text", type=int, default=0,
                        help="also write <out-dir>/lm_text.txt: this many sentences for a language model")
    args = parser.parse_args(argv)
    for option, prior in (("--text-prior", args.text_prior), ("--train-text-prior", args.train_text_prior)):
        if prior not in (None, "uniform") and args.task not in PRIOR_TASKS:
            parser.error(f"{option} {prior} is for spoken sentences: use it with --task asr or st")
    if args.homophones and args.task not in PRIOR_TASKS:
        parser.error("--homophones is for spoken sentences: use it with --task asr or st")
    sizes = {split: getattr(args, split) for split in SPLITS}
    generate(args.task, args.out_dir, args.audio_dir, sizes, args.seed, args.nj, args.condition, args.text_prior,
             args.train_text_prior, args.homophones)
    if args.lm_text:
        write_lm_text(args.task, args.out_dir, args.lm_text, sizes, args.seed, args.condition, args.text_prior,
                      args.homophones)


if __name__ == "__main__":
    main()
