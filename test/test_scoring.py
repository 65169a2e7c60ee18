"""Scoring on known inputs (real sclite, sacrebleu, rouge-score) and conf/ generation."""

import shutil
from pathlib import Path

import pytest

from espnet_mtla.bin.make_confs import RECIPES, render
from espnet_mtla.attention.registry import attention_types
from espnet_mtla.metrics import scoring

ROOT = Path(__file__).resolve().parent.parent
REFS = {"spk-1": "the cat sat", "spk-2": "hello world"}
HYPS = {"spk-1": "the cat sat down", "spk-2": "hello word"}


@pytest.mark.skipif(not any(shutil.which(c) or Path(c).exists() for c in scoring.SCLITE_CANDIDATES),
                    reason="needs sclite (Debian sctk)")
def test_sclite_wer_and_cer(tmp_path):
    wer = scoring.error_rate(REFS, HYPS, tmp_path / "wer")
    # 5 reference words: 1 substitution (word), 1 insertion (down) -> 40 %.
    assert (wer["words"], wer["sub"], wer["ins"], wer["del"], wer["err"]) == (5, 20.0, 20.0, 0.0, 40.0)
    assert (tmp_path / "wer" / "ref.trn").read_text().splitlines()[0] == "the cat sat\t(spk-1)"
    cer = scoring.error_rate(REFS, HYPS, tmp_path / "cer", unit="char")
    # 22 reference characters (spaces count): 5 inserted (" down"), 1 deleted ("l") -> 27.3 %.
    assert (cer["words"], cer["err"]) == (22, 27.3)


@pytest.mark.skipif(not scoring.sclite_path(), reason="needs sclite (Debian sctk) to compare with")
def test_without_sclite_jiwer_gives_sclites_numbers(tmp_path, monkeypatch, capsys):
    refs = dict(REFS, **{"spk-3": "a b c d", "spk-4": "one two", "spk-5": "x"})
    hyps = dict(HYPS, **{"spk-3": "a c d e", "spk-4": "", "spk-5": "x"})
    with_sclite = {unit: scoring.error_rate(refs, hyps, tmp_path / f"sclite_{unit}", unit) for unit in ("word", "char")}
    monkeypatch.setattr(scoring, "SCLITE_CANDIDATES", ())
    monkeypatch.setitem(scoring._NOTICE, "given", False)
    for unit in ("word", "char"):
        assert scoring.error_rate(refs, hyps, tmp_path / f"jiwer_{unit}", unit) == with_sclite[unit]
        assert "Sum/Avg" in (tmp_path / f"jiwer_{unit}" / "result.txt").read_text()
    assert capsys.readouterr().err.splitlines() == [  # once per process
        "notice: sclite not found: WER/CER computed by jiwer (install Debian's sctk for sclite's alignment reports)"]


def test_missing_hypotheses_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="1 utterance\\(s\\) have no hypothesis, e.g. spk-2"):
        scoring.bleu(REFS, {"spk-1": "the cat sat"}, tmp_path)


def test_bleu_chrf(tmp_path):
    long_refs = {"a-1": "the cat sat on the mat today", "a-2": "my brother buys a new book"}
    perfect = scoring.score(["bleu", "chrf"], long_refs, long_refs, tmp_path)
    assert perfect == {"bleu": 100.0, "bleu_lc_nopunct": 100.0, "chrf": 100.0}
    assert "BLEU = 100.00" in (tmp_path / "score_bleu" / "result.txt").read_text()
    assert "chrF2 = 100.00" in (tmp_path / "score_chrf" / "result.txt").read_text()
    cased = scoring.bleu({"a-1": "Hello, World! The cat sat on the mat."}, {"a-1": "hello world the cat sat on the mat"},
                         tmp_path)
    assert cased["bleu_lc_nopunct"] == 100.0 and cased["bleu"] < 100.0


def test_every_scorer_has_one_signature(tmp_path):
    """scorer(refs, hyps, out_dir) -> flat dict of numbers, its files in out_dir; unknown names: one line."""
    import inspect

    for name, scorer in scoring.METRICS.items():
        assert list(inspect.signature(scorer).parameters) == ["refs", "hyps", "out_dir"], name
    with pytest.raises(ValueError, match="unknown metric 'blue'; choose from wer, cer, bleu, chrf, intent, rouge"):
        scoring.score(["blue"], REFS, REFS, tmp_path)


@pytest.mark.skipif(not any(shutil.which(c) or Path(c).exists() for c in scoring.SCLITE_CANDIDATES),
                    reason="needs sclite (Debian sctk)")
def test_intent_scores(tmp_path):
    refs = {"a-1": "alarm_set wake me up", "a-2": "play_music play jazz", "a-3": "iot_hue_lightoff lights off"}
    hyps = {"a-1": "alarm_set wake me up", "a-2": "play_radio play jazz", "a-3": "alarm_remove lights off"}
    scores = scoring.intent_scores(refs, hyps, tmp_path)
    assert scores == {"intent_acc": 33.33, "scenario_acc": 66.67, "action_acc": 33.33, "transcript_wer": 0.0}


def test_rouge(tmp_path):
    scores = scoring.rouge({"a-1": "the cat sat on the mat"}, {"a-1": "the cat sat"}, tmp_path)
    # unigram P = 3/3, R = 3/6 -> F1 = 2/3; bigrams 2/2 and 2/5 -> F1 = 4/7.
    assert scores == {"rouge1": 66.67, "rouge2": 57.14, "rougeL": 66.67}


@pytest.mark.parametrize("conf_dir", sorted(RECIPES))
def test_recipe_confs_match_their_templates(conf_dir):
    conf = ROOT / conf_dir
    for template, decode, prefix in RECIPES[conf_dir]:
        for attention_type in attention_types():
            rendered = render(ROOT / "conf_templates" / template, attention_type).replace(
                (ROOT / "conf_templates").as_posix(), "conf_templates")
            assert (conf / f"{prefix}{attention_type}.yaml").read_text() == rendered, (
                f"{conf}/{prefix}{attention_type}.yaml is out of date: re-run python -m espnet_mtla.bin.make_confs --all")
        if decode:
            assert (conf / "decode.yaml").read_text().endswith((ROOT / "conf_templates" / decode).read_text())


@pytest.mark.parametrize("template", sorted(p.name for p in (ROOT / "conf_templates").glob("*.yaml")
                                            if p.name.startswith(("asr_", "st_", "slu_"))))
def test_speech_templates_train_an_acoustic_loss(template):
    """Without a loss on the encoder (CTC on the transcript), the ST recipe's decoder learned the
    target language alone and answered every utterance with one sentence (BLEU 2.4)."""
    import yaml

    conf = yaml.safe_load((ROOT / "conf_templates" / template).read_text())["model_conf"]
    if template.startswith("st_"):
        assert conf["asr_weight"] > 0 and conf["mtlalpha"] > 0, conf
    else:
        assert conf["ctc_weight"] > 0, conf
