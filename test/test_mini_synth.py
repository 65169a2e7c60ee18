"""The synthetic mini corpus: Kaldi data dirs in the right format, deterministic from a seed."""

import shutil

import numpy as np
import pytest
import soundfile

from espnet_mtla.data import grammar
from espnet_mtla.data.mini_synth import generate

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make install)")
SIZES = {"train": 4, "dev": 2, "test": 2}


def read_table(path):
    return dict(line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("task", ["asr", "st", "slu"])
def test_data_dirs(tmp_path, task):
    generate(task, tmp_path / "data", tmp_path / "audio", SIZES, seed=3, nj=2)
    for split, count in SIZES.items():
        d = tmp_path / "data" / split
        wav = read_table(d / "wav.scp")
        text = read_table(d / "text")
        utt2spk = read_table(d / "utt2spk")
        ids = [line.split(" ", 1)[0] for line in (d / "wav.scp").read_text().splitlines()]
        assert len(ids) == count and ids == sorted(ids)
        assert set(text) == set(wav) == set(utt2spk)
        spk2utt = {spk: utts.split() for spk, utts in read_table(d / "spk2utt").items()}
        assert sorted(u for utts in spk2utt.values() for u in utts) == ids
        assert all(utt2spk[u] == spk for spk, utts in spk2utt.items() for u in utts)
        for utt, path in wav.items():
            assert utt.startswith(utt2spk[utt] + "-")
            info = soundfile.info(path)
            assert info.samplerate == 16000 and info.format == "FLAC" and info.duration > 0.5
        if task == "st":
            english, german = read_table(d / "text.en"), read_table(d / "text.de")
            assert text == german
            for utt in ids:
                subject_en = next(en for en, de in grammar.SUBJECTS if english[utt].startswith(en + " "))
                assert german[utt].startswith(dict(grammar.SUBJECTS)[subject_en] + " ")
        if task == "slu":
            transcript = read_table(d / "transcript")
            for utt in ids:
                intent, rest = text[utt].split(" ", 1)
                assert intent in grammar.intent_names() and rest == transcript[utt]


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path):
    generate("asr", tmp_path / "a" / "data", tmp_path / "a" / "audio", SIZES, seed=1, nj=1)
    generate("asr", tmp_path / "b" / "data", tmp_path / "b" / "audio", SIZES, seed=1, nj=2)
    generate("asr", tmp_path / "c" / "data", tmp_path / "c" / "audio", SIZES, seed=2, nj=2)
    text = {k: (tmp_path / k / "data" / "train" / "text").read_text() for k in "abc"}
    assert text["a"] == text["b"] != text["c"]
    wav_a = read_table(tmp_path / "a" / "data" / "train" / "wav.scp")
    wav_b = read_table(tmp_path / "b" / "data" / "train" / "wav.scp")
    for utt in wav_a:
        np.testing.assert_array_equal(soundfile.read(wav_a[utt])[0], soundfile.read(wav_b[utt])[0])
