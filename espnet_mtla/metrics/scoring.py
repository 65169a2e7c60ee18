"""Scoring: sclite WER/CER, sacrebleu BLEU/chrF, SLU intent accuracy, ROUGE.

WER/CER come from sclite (Debian's sctk); where it is not installed, from jiwer with the same
words and the same numbers in ``result.txt`` (no alignment report), after a one-line notice.

``METRICS`` is the registry the pipeline's ``--metrics`` picks from (a task's defaults are in
``espnet_mtla.task_specs``). Every scorer has one signature: ``scorer(refs, hyps, out_dir)``,
references and hypotheses as {utt_id: text}; it writes its detailed output files to
``out_dir`` and returns a flat dict of numbers (percentages where usual). ``score`` runs
several into ``<decode dir>/score_<metric>/``.
"""

import re
import shutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Sequence

from espnet_mtla.storage.fileio import write_text_atomic

SCLITE_CANDIDATES = ("/usr/lib/sctk/bin/sclite", "sclite")


def sclite_path() -> str:
    """sclite's path; "" where Debian's sctk is not installed."""
    for candidate in SCLITE_CANDIDATES:
        found = shutil.which(candidate) or (candidate if Path(candidate).exists() else None)
        if found:
            return found
    return ""


def _check_keys(refs: Dict[str, str], hyps: Dict[str, str]) -> None:
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) have no hypothesis, e.g. {missing[0]}; decoding is incomplete")


def _trn(texts: Dict[str, str], keys) -> str:
    # sclite's trn: words, then "(speaker-utterance)"; our ids start with the speaker.
    return "".join(f"{texts.get(k, '').strip()}\t({k})\n" for k in keys)


def error_rate(refs: Dict[str, str], hyps: Dict[str, str], out_dir, unit: str = "word") -> Dict[str, float]:
    """WER (unit "word") or CER (unit "char": characters, spaces as '<space>'): sclite's summary
    numbers (percentages of the reference words), by sclite, or by jiwer where sclite is missing."""
    _check_keys(refs, hyps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(refs)
    if unit == "char":
        def split(text):
            return " ".join("<space>" if c == " " else c for c in text.strip())
        refs = {k: split(v) for k, v in refs.items()}
        hyps = {k: split(v) for k, v in hyps.items()}
    sclite = sclite_path()
    if not sclite:
        return jiwer_error_rate(refs, hyps, keys, out_dir)
    write_text_atomic(out_dir / "ref.trn", _trn(refs, keys))
    write_text_atomic(out_dir / "hyp.trn", _trn(hyps, keys))
    cmd = [sclite, "-r", str(out_dir / "ref.trn"), "trn", "-h", str(out_dir / "hyp.trn"), "trn",
           "-i", "rm", "-o", "all", "stdout"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"sclite failed ({' '.join(cmd)}): {result.stderr.strip()[:300]}")
    write_text_atomic(out_dir / "result.txt", result.stdout)
    return parse_sclite(result.stdout)


_NOTICE = {"given": False}


def jiwer_error_rate(refs: Dict[str, str], hyps: Dict[str, str], keys, out_dir: Path) -> Dict[str, float]:
    """sclite's summary numbers computed by jiwer (the same words, every utterance aligned alone);
    ``result.txt`` holds the summary line, with a notice once per process on stderr."""
    import jiwer

    if not _NOTICE["given"]:
        print("notice: sclite not found: WER/CER computed by jiwer (install Debian's sctk for sclite's "
              "alignment reports)", file=sys.stderr)
        _NOTICE["given"] = True
    words = hits = subs = dels = ins = wrong = 0
    for key in keys:
        ref, hyp = refs[key].split(), hyps.get(key, "").split()
        words += len(ref)
        if not ref:
            ins += len(hyp)
            wrong += bool(hyp)
            continue
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        hits, subs, dels, ins = hits + out.hits, subs + out.substitutions, dels + out.deletions, ins + out.insertions
        wrong += bool(out.substitutions or out.deletions or out.insertions)

    def pct(n):
        return round(100.0 * n / words, 1) if words else 0.0

    scores = {"sentences": len(keys), "words": words, "corr": pct(hits), "sub": pct(subs), "del": pct(dels),
              "ins": pct(ins), "err": pct(subs + dels + ins),
              "sent_err": round(100.0 * wrong / len(keys), 1) if keys else 0.0}
    write_text_atomic(out_dir / "result.txt", "jiwer (sclite not found) | Sum/Avg | " +
                      " ".join(f"{k} {v}" for k, v in scores.items()) + "\n")
    return scores


def parse_sclite(report: str) -> Dict[str, float]:
    """The "Sum/Avg" row of sclite's summary: | SPKR | # Snt # Wrd | Corr Sub Del Ins Err S.Err |."""
    for line in report.splitlines():
        if "Sum/Avg" in line:
            numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", line)]
            snt, words, corr, sub, dele, ins, err, serr = numbers[:8]
            return {"sentences": int(snt), "words": int(words), "corr": corr, "sub": sub, "del": dele,
                    "ins": ins, "err": err, "sent_err": serr}
    raise RuntimeError("sclite output has no Sum/Avg line")


def _normalise_for_bleu(text: str) -> str:
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def _write_result(out_dir, text: str) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out_dir) / "result.txt", text)


def _sacrebleu_lists(refs: Dict[str, str], hyps: Dict[str, str]):
    _check_keys(refs, hyps)
    keys = sorted(refs)
    return [refs[k] for k in keys], [hyps[k] for k in keys]


def bleu(refs: Dict[str, str], hyps: Dict[str, str], out_dir) -> Dict[str, float]:
    """sacrebleu corpus BLEU (detokenised, case-sensitive), plus lower-cased, punctuation-free BLEU."""
    import sacrebleu

    ref_list, hyp_list = _sacrebleu_lists(refs, hyps)
    cased = sacrebleu.corpus_bleu(hyp_list, [ref_list])
    lower = sacrebleu.corpus_bleu([_normalise_for_bleu(h) for h in hyp_list], [[_normalise_for_bleu(r) for r in ref_list]])
    _write_result(out_dir, f"{cased}\nlower-cased, no punctuation: {lower}\n")
    return {"bleu": round(cased.score, 2), "bleu_lc_nopunct": round(lower.score, 2)}


def chrf(refs: Dict[str, str], hyps: Dict[str, str], out_dir) -> Dict[str, float]:
    """sacrebleu corpus chrF."""
    import sacrebleu

    ref_list, hyp_list = _sacrebleu_lists(refs, hyps)
    score = sacrebleu.corpus_chrf(hyp_list, [ref_list])
    _write_result(out_dir, f"{score}\n")
    return {"chrf": round(score.score, 2)}


def wer(refs: Dict[str, str], hyps: Dict[str, str], out_dir) -> Dict[str, float]:
    """Word error rate (%): sclite, or jiwer without it."""
    return {"wer": error_rate(refs, hyps, out_dir, unit="word")["err"]}


def cer(refs: Dict[str, str], hyps: Dict[str, str], out_dir) -> Dict[str, float]:
    """Character error rate (%), spaces counted as '<space>': sclite, or jiwer without it."""
    return {"cer": error_rate(refs, hyps, out_dir, unit="char")["err"]}


def intent_scores(refs: Dict[str, str], hyps: Dict[str, str], out_dir) -> Dict[str, float]:
    """SLU targets "<scenario_action> transcript": intent, scenario and action accuracy (%),
    and the sclite WER of the transcript parts."""
    _check_keys(refs, hyps)
    keys = sorted(refs)

    def split(text):
        intent, _, transcript = text.strip().partition(" ")
        scenario, _, action = intent.partition("_")
        return intent, scenario, action, transcript

    ref_parts = {k: split(refs[k]) for k in keys}
    hyp_parts = {k: split(hyps[k]) for k in keys}
    n = len(keys)
    scores = {
        name: round(100.0 * sum(ref_parts[k][i] == hyp_parts[k][i] for k in keys) / n, 2)
        for i, name in enumerate(["intent_acc", "scenario_acc", "action_acc"])
    }
    transcript = error_rate({k: ref_parts[k][3] for k in keys}, {k: hyp_parts[k][3] for k in keys},
                                   Path(out_dir) / "transcript")
    scores["transcript_wer"] = transcript["err"]
    _write_result(out_dir, "".join(f"{k}: {v}\n" for k, v in scores.items()))
    return scores


def rouge(refs: Dict[str, str], hyps: Dict[str, str], out_dir) -> Dict[str, float]:
    """Mean ROUGE-1/2/L F1 (%) with rouge-score (stemming on)."""
    from rouge_score import rouge_scorer

    _check_keys(refs, hyps)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for k in sorted(refs):
        for name, score in scorer.score(refs[k], hyps[k]).items():
            totals[name] += score.fmeasure
    scores = {name: round(100.0 * value / len(refs), 2) for name, value in totals.items()}
    _write_result(out_dir, "".join(f"{k}: {v}\n" for k, v in scores.items()))
    return scores


# --metrics name -> scorer(refs, hyps, out_dir) -> {score name: value}
METRICS: Dict[str, Callable[[Dict[str, str], Dict[str, str], Path], Dict[str, float]]] = {
    "wer": wer,
    "cer": cer,
    "bleu": bleu,
    "chrf": chrf,
    "intent": intent_scores,
    "rouge": rouge,
}


def check_metrics(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")


def score(names: Sequence[str], refs: Dict[str, str], hyps: Dict[str, str], decode_dir) -> Dict[str, float]:
    """Every metric of ``names``, each writing its files to ``<decode_dir>/score_<name>/``."""
    check_metrics(names)
    scores: Dict[str, float] = {}
    for name in names:
        scores.update(METRICS[name](refs, hyps, Path(decode_dir) / f"score_{name}"))
    return scores
