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



HOMOPHONE_OBJECTS = [phrase for pair in grammar.HOMOPHONES for phrase in pair]


def parse_structured(english):
    """(subject, verb, object, adverbial or None) phrase pairs of a sentence of the grammar's
    phrases, homophone objects included."""
    out, rest = [], english
    for phrases in (grammar.SUBJECTS, grammar.VERBS, grammar.OBJECTS + HOMOPHONE_OBJECTS, grammar.ADVERBIALS):
        if phrases is grammar.ADVERBIALS and not rest:
            return (*out, None)
        match = next(p for p in sorted(phrases, key=lambda p: -len(p[0])) if rest == p[0] or rest.startswith(p[0] + " "))
        out.append(match)
        rest = rest[len(match[0]):].strip()
    assert not rest, english
    return tuple(out)


def test_structured_prior_has_structure_an_lm_can_learn():
    """Each slot takes one of the phrases its context prefers with probability PREFERRED (plus
    the chance draws that land there), and subjects are Zipf-skewed; the German follows the
    English phrase by phrase, as in the uniform grammar."""
    import collections
    import random

    rng = random.Random(0)
    sentences = [grammar.structured_sentence(rng) for _ in range(4000)]
    parsed = [parse_structured(s.english) for s in sentences]
    prefs = grammar.PREFERENCES
    rates = {"verb": grammar.PREFERRED + (1 - grammar.PREFERRED) * 3 / len(grammar.VERBS),
             "object": grammar.PREFERRED + (1 - grammar.PREFERRED) * 2 / len(grammar.OBJECTS)}
    verb_hits = sum(v in prefs.verbs[s] for s, v, _, _ in parsed) / len(parsed)
    object_hits = sum(o in prefs.objects[s, v] for s, v, o, _ in parsed) / len(parsed)
    assert abs(verb_hits - rates["verb"]) < 0.02 and abs(object_hits - rates["object"]) < 0.02
    assert all(a in prefs.adverbials[o] or a in grammar.ADVERBIALS for _, _, o, a in parsed if a)
    subjects = collections.Counter(s for s, *_ in parsed)
    assert subjects[grammar.SUBJECTS[0]] > 8 * subjects[grammar.SUBJECTS[-1]] > 0
    for sent, phrases in zip(sentences, parsed):
        assert sent.german == " ".join(de for _, de in filter(None, phrases))
    assert grammar.PREFERENCES == grammar._preferences()  # a fixed table, not drawn per corpus


def test_homophone_pairs_are_said_alike_and_only_the_verb_tells_them_apart():
    """espeak-ng gives both phrases of a pair the same phonemes (so the audio cannot tell them);
    the structured prior spells a homophone as its verb prefers (each pair split evenly over the
    verbs), the uniform one at random, and without ``homophones`` no pair is ever drawn."""
    import random
    import subprocess

    def phonemes(text):
        return subprocess.run(["espeak-ng", "-q", "-x", text], capture_output=True, text=True, check=True).stdout

    for (first, _), (second, _) in grammar.HOMOPHONES:
        assert phonemes(first) == phonemes(second), (first, second)
    spellings = grammar.PREFERENCES.spellings
    for pair in grammar.HOMOPHONES:
        assert sorted(sum(spellings[verb, pair] == phrase for verb in grammar.VERBS) for phrase in pair) == [5, 5]

    def homophone_draws(draw, homophones):
        rng = random.Random(0)
        parsed = [parse_structured(draw(rng, homophones).english) for _ in range(4000)]
        return [(verb, obj) for _, verb, obj, _ in parsed if obj in HOMOPHONE_OBJECTS]

    assert not homophone_draws(grammar.structured_sentence, False) and not homophone_draws(grammar.sentence, False)
    pair_of = {phrase: pair for pair in grammar.HOMOPHONES for phrase in pair}
    for draw, rate in ((grammar.structured_sentence, grammar.PREFERRED + (1 - grammar.PREFERRED) / 2),
                       (grammar.sentence, 0.5)):
        drawn = homophone_draws(draw, True)
        assert abs(len(drawn) / 4000 - grammar.HOMOPHONE_RATE) < 0.03
        as_verb_prefers = sum(spellings[verb, pair_of[obj]] == obj for verb, obj in drawn) / len(drawn)
        assert abs(as_verb_prefers - rate) < 0.05, draw


def test_structured_prior_corpus_and_lm_text(tmp_path):
    from espnet_mtla.data.mini_synth import draw_utterances, main

    utts = draw_utterances("asr", "test", 20, seed=0, condition="hard", text_prior="structured")
    assert utts == draw_utterances("asr", "test", 20, seed=0, condition="hard", text_prior="structured")
    by_index = lambda us: [u["condition"] for u in sorted(us, key=lambda u: u["utt_id"][-5:])]  # noqa: E731
    assert by_index(utts) == by_index(draw_utterances("asr", "test", 20, seed=0, condition="hard"))  # own draws
    assert all(u["text"] == u["spoken"] and parse_structured(u["text"]) for u in utts)
    main(["--task", "asr", "--out-dir", str(tmp_path / "data"), "--audio-dir", str(tmp_path / "audio"),
          "--train", "2", "--dev", "3", "--test", "3", "--text-prior", "structured", "--lm-text", "500"])
    wav = read_table(tmp_path / "data" / "test" / "wav.scp")
    assert all("/asr-structured/test/" in path for path in wav.values())
    lm_lines = (tmp_path / "data" / "lm_text.txt").read_text().splitlines()
    held_out = {text for split in ("dev", "test") for text in read_table(tmp_path / "data" / split / "text").values()}
    assert len(lm_lines) == 500 and not held_out & set(lm_lines)
    assert all(parse_structured(line) for line in lm_lines)


def test_structured_prior_is_for_spoken_sentences_only(tmp_path, capsys):
    from espnet_mtla.data.mini_synth import main

    with pytest.raises(ValueError, match="the structured text prior is for spoken sentences: use it with --task asr "
                                         "or st, not slu"):
        generate("slu", tmp_path / "data", tmp_path / "audio", SIZES, text_prior="structured")
    with pytest.raises(SystemExit):
        main(["--task", "mt", "--out-dir", str(tmp_path), "--audio-dir", str(tmp_path), "--text-prior", "structured"])
    assert "--text-prior structured is for spoken sentences: use it with --task asr or st" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the training split's prior is checked alike, before anything is written
        main(["--task", "slu", "--out-dir", str(tmp_path / "out"), "--audio-dir", str(tmp_path / "audio"),
              "--train-text-prior", "structured"])
    assert "--train-text-prior structured is for spoken sentences" in capsys.readouterr().err
    with pytest.raises(ValueError, match="homophones are for spoken sentences: use them with --task asr or st, not mt"):
        generate("mt", tmp_path / "out", tmp_path / "audio", SIZES, homophones=True)
    with pytest.raises(SystemExit):
        main(["--task", "slu", "--out-dir", str(tmp_path / "out"), "--audio-dir", str(tmp_path / "audio"),
              "--homophones"])
    assert "--homophones is for spoken sentences: use it with --task asr or st" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "audio").exists()


def test_asr_lm1_recipe_prepares_the_structured_corpus_and_lm_text(tmp_path):
    """The LM recipe's stage 1: asr1's hard acoustic condition and phrases plus homophones, the
    training set from the uniform grammar, dev and test sets from the structured text prior,
    and the LM's text from that prior, none of it a dev or test sentence."""
    from espnet_mtla.data.mini_synth import draw_utterances

    from test_recipes import recipe_copy, run_recipe

    recipe = recipe_copy(tmp_path, "mini_synth", "asr_lm1")
    run_recipe(recipe, "--stage", "1", "--stop_stage", "1", "--local_data_opts",
               "--train_size 3 --dev_size 2 --test_size 2 --lm_text_size 40")
    data = recipe / "data"
    wav = read_table(data / "test" / "wav.scp")
    assert all("/asr-hard-structured-homophones/test/" in path for path in wav.values())
    assert all("/asr-hard-homophones/train/" in path for path in read_table(data / "train" / "wav.scp").values())
    texts = {split: read_table(data / split / "text") for split in SIZES}
    for split, prior in (("train", "uniform"), ("test", "structured")):
        drawn = draw_utterances("asr", split, len(texts[split]), seed=0, condition="hard", text_prior=prior,
                                homophones=True)
        assert texts[split] == {u["utt_id"]: u["text"] for u in drawn}
    assert all(parse_structured(text) for split in texts.values() for text in split.values())
    lm_lines = (data / "lm_text.txt").read_text().splitlines()
    assert len(lm_lines) == 40 and all(parse_structured(line) for line in lm_lines)
    assert not set(lm_lines) & (set(texts["dev"].values()) | set(texts["test"].values()))
