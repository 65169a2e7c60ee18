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


def hard_corpus(tmp_path, name, seed=5):
    generate("asr", tmp_path / name / "data", tmp_path / name / "audio", SIZES, seed=seed, nj=2, condition="hard")
    return tmp_path / name


def test_hard_condition_is_deterministic_and_keeps_the_texts(tmp_path):
    a, b = hard_corpus(tmp_path, "a"), hard_corpus(tmp_path, "b")
    generate("asr", tmp_path / "clean" / "data", tmp_path / "clean" / "audio", SIZES, seed=5, nj=2)
    for split in SIZES:
        assert (a / "data" / split / "text").read_text() == (tmp_path / "clean" / "data" / split / "text").read_text()
        wav_a, wav_b = read_table(a / "data" / split / "wav.scp"), read_table(b / "data" / split / "wav.scp")
        for utt in wav_a:  # the same audio bytes from the same seed
            assert open(wav_a[utt], "rb").read() == open(wav_b[utt], "rb").read()
            assert "asr-hard" in wav_a[utt]
        assert (a / "audio" / "asr-hard" / split / "conditions.tsv").read_text().count("\n") == SIZES[split]


def test_hard_condition_applies_the_drawn_snr_tempo_and_noise(tmp_path):
    """Re-synthesise one utterance's speech component and measure the SNR of the written file."""
    from espnet_mtla.data import conditions
    from espnet_mtla.data.mini_synth import babble_track, draw_utterances
    from espnet_mtla.data.speech_synth import SAMPLE_RATE, speak

    root = hard_corpus(tmp_path, "a")
    wav = read_table(root / "data" / "train" / "wav.scp")
    utts = draw_utterances("asr", "train", SIZES["train"], seed=5, condition="hard")
    babble = babble_track("asr", "train", seed=5)
    kinds = set()
    for utt in utts:
        cond = utt["condition"]
        kinds.add(cond.noise == "babble")
        clean = speak(utt["spoken"], utt["voice"])
        mixture, speech = conditions.apply(clean, SAMPLE_RATE, cond, babble)
        written, rate = soundfile.read(wav[utt["utt_id"]], dtype="float32")
        assert rate == SAMPLE_RATE and len(written) == len(mixture)
        assert abs(len(written) / len(clean) - 1 / cond.tempo) < 0.05  # the tempo change
        measured = conditions.snr_db(written, speech)  # from the file: 16-bit rounding included
        assert abs(measured - cond.snr_db) < 1.0, (utt["utt_id"], measured, cond)
        assert conditions.SNR_RANGE_DB[0] <= cond.snr_db <= conditions.SNR_RANGE_DB[1]
    assert len(conditions.NOISES) > 1


def test_unknown_condition_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown condition 'noisy'; choose one of clean, hard"):
        generate("asr", tmp_path / "data", tmp_path / "audio", SIZES, condition="noisy")


def test_mt_hard_text_condition_reorders_lengthens_and_misspells(tmp_path):
    import random

    from espnet_mtla.data.mini_synth import MT_MISSPELL_RATE, draw_utterances

    hard = draw_utterances("mt", "train", 400, seed=0, condition="hard")
    assert hard == draw_utterances("mt", "train", 400, seed=0, condition="hard")  # a seed fixes it
    clean = draw_utterances("mt", "train", 400, seed=0)
    assert all(u["condition"] is None for u in hard)  # a text condition: nothing acoustic
    words = lambda utts, key: sum(len(u[key].split()) for u in utts)  # noqa: E731
    assert words(hard, "text.de") > 1.4 * words(clean, "text.de")  # longer sentences
    # a subordinate clause puts the German verb last: "... weil der arzt ein neues buch kauft"
    clause = next(u for u in hard if " because " in u["spoken"])
    german_verbs = {de for _, de in grammar.VERBS}
    assert clause["text.de"].split()[-1] in german_verbs and clause["text.de"] == clause["text"]
    # MT_MISSPELL_RATE of the source words of 3+ letters are misspelt; the reference is not
    spoken, noisy = [u["spoken"].split() for u in hard], [u["text.en"].split() for u in hard]
    changed = sum(a != b for s, n in zip(spoken, noisy) for a, b in zip(s, n))
    eligible = sum(len(w) >= 3 for s in spoken for w in s)
    assert all(len(s) == len(n) for s, n in zip(spoken, noisy))
    assert abs(changed / eligible - MT_MISSPELL_RATE) < 0.04
    assert grammar.misspell("the cat sat", random.Random(0), rate=0.0) == "the cat sat"


def topic_of(word_slot, phrase):
    return {i for i, topic in enumerate(grammar.TOPICS) if phrase in getattr(topic, word_slot)}


def parse_topical(sentence):
    """(subject, verb, object, place or None) of a topical sentence, found by trying each
    topic's phrases in order (phrases contain spaces, so the words are not split)."""
    out, rest = [], sentence
    for slot in ("subjects", "verbs", "objects", "places"):
        if slot == "places" and not rest:
            return (*out, None)
        phrases = sorted({p for t in grammar.TOPICS for p in getattr(t, slot)}, key=len, reverse=True)
        match = next(p for p in phrases if rest == p or rest.startswith(p + " "))
        out.append(match)
        rest = rest[len(match):].strip()
    assert not rest, sentence
    return tuple(out)


def test_topical_prior_has_structure_an_lm_can_learn():
    """Words of one sentence mostly share a topic, and frequencies are skewed (Zipf): the first
    topic is far more frequent than the last, and rare words are rare in 2000 transcripts."""
    import collections
    import random

    rng = random.Random(0)
    sentences = [grammar.topical_sentence(rng) for _ in range(4000)]
    parsed = [parse_topical(s) for s in sentences]
    same = sum(bool(topic_of("subjects", s) & topic_of("objects", o)) for s, _, o, _ in parsed)
    assert 0.8 < same / len(parsed) < 0.95  # 1 - OFF_TOPIC, less or more by chance overlaps
    first = sum(bool(topic_of("subjects", s) & {0}) for s, *_ in parsed)
    last = sum(bool(topic_of("subjects", s) & {len(grammar.TOPICS) - 1}) for s, *_ in parsed)
    assert first > 8 * last > 0
    assert 0.55 < sum(p is not None for *_, p in parsed) / len(parsed) < 0.65  # PLACE_RATE
    words = collections.Counter(w for s in sentences[:2000] for w in s.split())
    assert min(words.values()) < 5 and max(words.values()) > 1000


def test_topical_prior_corpus_and_lm_text(tmp_path):
    from espnet_mtla.data.mini_synth import draw_utterances, main

    utts = draw_utterances("asr", "test", 20, seed=0, condition="hard", text_prior="topical")
    assert utts == draw_utterances("asr", "test", 20, seed=0, condition="hard", text_prior="topical")
    by_index = lambda us: [u["condition"] for u in sorted(us, key=lambda u: u["utt_id"][-5:])]  # noqa: E731
    assert by_index(utts) == by_index(draw_utterances("asr", "test", 20, seed=0, condition="hard"))  # own draws
    assert all(u["text"] == u["spoken"] and parse_topical(u["text"]) for u in utts)
    main(["--task", "asr", "--out-dir", str(tmp_path / "data"), "--audio-dir", str(tmp_path / "audio"),
          "--train", "2", "--dev", "3", "--test", "3", "--text-prior", "topical", "--lm-text", "500"])
    wav = read_table(tmp_path / "data" / "test" / "wav.scp")
    assert all("/asr-topical/test/" in path for path in wav.values())
    lm_lines = (tmp_path / "data" / "lm_text.txt").read_text().splitlines()
    held_out = {text for split in ("dev", "test") for text in read_table(tmp_path / "data" / split / "text").values()}
    assert len(lm_lines) == 500 and not held_out & set(lm_lines)
    assert all(parse_topical(line) for line in lm_lines)


def test_topical_prior_is_for_asr_only(tmp_path, capsys):
    from espnet_mtla.data.mini_synth import main

    with pytest.raises(ValueError, match="the topical text prior is English text only: use it with --task asr, not st"):
        generate("st", tmp_path / "data", tmp_path / "audio", SIZES, text_prior="topical")
    with pytest.raises(SystemExit):
        main(["--task", "slu", "--out-dir", str(tmp_path), "--audio-dir", str(tmp_path), "--text-prior", "topical"])
    assert "--text-prior topical is English text only: use it with --task asr" in capsys.readouterr().err
