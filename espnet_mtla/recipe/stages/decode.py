"""Stages 8-9: decoding each test set in ``--inference_nj`` jobs (resumable: finished jobs are
kept) with one efficiency report per set, then scoring with the recipe's metrics. With
``--use_lm true`` stage 8 fuses the LM of stages 12-14, into a decode dir named after it."""

import json
import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from espnet_mtla.data import datadir
from espnet_mtla.recipe.errors import StageError
from espnet_mtla.recipe.experiment import Experiment, describe_model
from espnet_mtla.recipe.jobs import merge_job_files, split_keys
from espnet_mtla.recipe.progress import DecodingProgress
from espnet_mtla.recipe.stage import Cover, Stage, StageRun, tables
from espnet_mtla.storage.fileio import write_text_atomic

log = logging.getLogger("pipeline")


def check_model(x: Experiment) -> None:
    model = x.exp / x.args.inference_model
    if not model.exists():
        raise StageError(f"{model} not found: train first (stage 7), or set --inference_model")


class Decode(Stage):
    number, name = 8, "decode"
    per_model = True
    records_under = "decode"
    resumes = True
    jobs = "decode_cmd"

    def ready(self, x: Experiment) -> None:
        check_model(x)
        if x.use_lm:
            x.check_lm_model()
        if x.long_form_sets():
            check_long_form(x)

    def covers(self, x: Experiment) -> Cover:
        a = x.args
        options = {k: getattr(a, k) for k in ("inference_config", "inference_model", "inference_args",
                                              "inference_nj", "ngpu")}
        if a.tune_penalty.split():  # older records: no key
            options["tune_penalty"] = a.tune_penalty.split()
        lm = {"lm": [str(x.lm_exp), a.lm_inference_model]} if x.use_lm else {}  # older records: no key
        long_form = ({"long_form_minutes": a.long_form_minutes.split(), "long_form_args": a.long_form_args}
                     if x.long_form_sets() else {})
        return Cover({**options, **lm, **long_form, "test_sets": x.test_sets},
                     [Path(a.inference_config or "-"), x.exp / "config.yaml", x.exp / a.inference_model] +
                     ([x.lm_exp / "config.yaml", x.lm_model()] if x.use_lm else []) +
                     x.token_files() + tables([x.dump / name for name in x.test_sets]) +
                     (tables([x.dump / a.valid_set]) if a.tune_penalty.split() else []) +
                     ([Path("data") / x.test_sets[0] / "wav.scp"] if long_form else []),
                     [d / "efficiency.json" for d in x.decode_dirs()])

    def run(self, x: Experiment, run: StageRun) -> None:
        extra = []
        if x.args.tune_penalty.split():
            extra = ["--penalty", str(tune_penalty(x, run))]
        for name in x.test_sets:
            decode_set(x, run, name, x.dump / name, x.decode_dir(name), extra)
        if x.long_form_sets():
            decode_long_form(x, run)


def decode_set(x: Experiment, run: StageRun, name: str, data: Path, out: Path, extra: List[str]) -> None:
    """Decode data dir ``data`` into ``out`` (text, token, score, efficiency.json) in
    --inference_nj jobs; ``extra``: options after the recipe's --inference_args."""
    a, t = x.args, x.task.name
    model, config = x.exp / a.inference_model, x.exp / "config.yaml"
    logdir = out / "logdir"
    if logdir.exists() and not run.resuming:  # outputs of other options: never merge them
        shutil.rmtree(logdir)
    jobs = split_keys(data, a.inference_nj, logdir / "keys.JOB.scp", "{key} {key}")
    # A job's output dir appears (renamed from <dir>.partial) only when the job finished.
    finished = [j for j in range(1, jobs + 1)
                if (logdir / f"output.{j}" / "1best_recog" / "efficiency.json").exists()]
    pending = [j for j in range(1, jobs + 1) if j not in finished]
    if finished:
        log.info("%s: job(s) %s finished before the interruption; decoding job(s) %s", name,
                 ",".join(map(str, finished)), ",".join(map(str, pending)) or "none")
    cmd = [sys.executable, "-m", f"espnet_mtla.bin.{t}_inference", "--ngpu", a.ngpu,
           f"--{t}_train_config", config, f"--{t}_model_file", model, "--key_file", logdir / "keys.JOB.scp",
           "--output_dir", logdir / "output.JOB"]
    if a.inference_config:
        cmd += ["--config", a.inference_config]
    if x.use_lm:  # fused with the decode config's lm_weight
        cmd += ["--lm_train_config", x.lm_exp / "config.yaml", "--lm_file", x.lm_model()]
    cmd += x.data_args("--data_path_and_name_and_type", data, only=x.task.input_name)
    cmd += shlex.split(a.inference_args) + extra
    if pending:
        sizes = [len((logdir / f"keys.{j}.scp").read_text(encoding="utf-8").splitlines())
                 for j in range(1, jobs + 1)]
        with DecodingProgress([logdir / f"decode.{j}.log" for j in pending], sum(sizes),
                              sum(sizes[j - 1] for j in finished), name):
            run.jobs.launch(cmd, logdir / "decode.JOB.log", pending)
    for file in ("text", "token", "token_int", "score"):
        merge_job_files(logdir / "output.JOB" / "1best_recog" / file, jobs, out / file, sort=True)
    reports = [json.loads((logdir / f"output.{j + 1}" / "1best_recog" / "efficiency.json").read_text())
               for j in range(jobs)]
    summary = {"model": describe_model(model), **merge_efficiency(reports)}
    write_text_atomic(out / "efficiency.json", json.dumps(summary, indent=2) + "\n")


def hypotheses(refs: Dict[str, str], decode_dir: Path) -> Tuple[Dict[str, str], int]:
    """``decode_dir/text`` for each reference key ('' where missing or empty), and how many are empty."""
    found = dict(datadir.read_table(decode_dir / "text", datadir.Problems(), allow_empty_value=True))
    hyps = {k: found.get(k, "") for k in refs}
    return hyps, sum(1 for text in hyps.values() if not text.strip())


def tuning_dir(x: Experiment) -> Path:
    """Where --tune_penalty decodes the valid set: beside the test sets' decode dirs."""
    return x.decode_dir(x.args.valid_set).parent / f"tune_penalty_{x.args.valid_set}"


def tune_penalty(x: Experiment, run: StageRun) -> float:
    """Decode the valid set with each --tune_penalty length bonus (ESPnet's ``penalty``, added
    per output token) and return the one with the best first metric (the smallest of equals).
    The sweep is logged and kept in ``tuning_dir(x)/tuning.json``, with each value's decode dir."""
    from espnet_mtla.metrics.scoring import score
    from espnet_mtla.recipe.results import LOWER_IS_BETTER

    values = sorted({float(v) for v in x.args.tune_penalty.split()})  # numbers, as options.number_list checked
    data, root = x.dump / x.args.valid_set, tuning_dir(x)
    refs = dict(datadir.read_table(data / x.text_names()["text"], datadir.Problems()))
    metric = x.metrics[0]
    sweep = []
    for value in values:
        out = root / f"penalty_{value:g}"
        decode_set(x, run, f"{x.args.valid_set} (penalty {value:g})", data, out, ["--penalty", str(value)])
        hyps, empty = hypotheses(refs, out)
        scores = score(x.metrics, refs, hyps, out)
        sweep.append({"penalty": value, "scores": scores, "empty": empty})
        log.info("tune_penalty: %s with penalty %g: %s, %d of %d empty", x.args.valid_set, value, scores, empty,
                 len(hyps))
    sign = -1 if metric in LOWER_IS_BETTER else 1
    best = max(sweep, key=lambda r: (sign * r["scores"][metric], -r["penalty"]))
    write_text_atomic(root / "tuning.json", json.dumps({"metric": metric, "best": best["penalty"], "sweep": sweep},
                                                      indent=2) + "\n")
    log.info("tune_penalty: decoding %s with penalty %g (%s %s on %s)", ", ".join(x.test_sets), best["penalty"],
             metric, best["scores"][metric], x.args.valid_set)
    return best["penalty"]


def check_long_form(x: Experiment) -> None:
    """One line when --long_form_minutes cannot be used by this recipe."""
    source = Path("data") / x.test_sets[0] / "wav.scp"
    if not x.task.speech:
        raise StageError(f"--long_form_minutes needs a speech task; {x.task.name} decodes text")
    if not source.exists():
        raise StageError(f"--long_form_minutes builds its recordings from {source}: run stage 1 first")


def decode_long_form(x: Experiment, run: StageRun) -> None:
    """The long-form sets: recordings built from the first test set's utterances (once per
    ``--long_form_minutes``), decoded by ``espnet_mtla.bin.transcribe`` into each set's decode dir
    (``text`` per recording, Kaldi ``segments``/``text`` per segment, JSON, SRT, efficiency.json)."""
    from espnet_mtla.data.long_form import make_long_form

    a = x.args
    long_set, oracle_set = x.long_form_sets()
    data = x.dump / long_set
    built_for = " ".join(a.long_form_minutes.split())
    stamp = data / "long_form_minutes"
    if not stamp.exists() or stamp.read_text(encoding="utf-8").strip() != built_for:
        if data.exists():
            shutil.rmtree(data)
        make_long_form(Path("data") / x.test_sets[0], data, [float(m) for m in a.long_form_minutes.split()])
        write_text_atomic(stamp, built_for + "\n")
        log.info("%s: recordings of %s minutes made from %s's utterances", data, built_for, x.test_sets[0])
    for name in (long_set, oracle_set):
        out = x.decode_dir(name)
        if out.exists():  # a decode dir is whole or redone: transcribe writes efficiency.json last
            shutil.rmtree(out)
        cmd = [sys.executable, "-m", "espnet_mtla.bin.transcribe", "--wav_scp", data / "wav.scp",
               "--model", x.exp, "--model_file", a.inference_model, "--task", x.task.name, "--output_dir", out,
               "--formats", "json", "srt", "kaldi", "--progress", "false",
               "--device", "cuda" if a.ngpu >= 1 else "cpu"]
        if a.inference_config:
            cmd += ["--decode_config", a.inference_config]
        if x.use_lm:
            cmd += ["--lm_train_config", x.lm_exp / "config.yaml", "--lm_file", x.lm_model()]
        if name == oracle_set:
            cmd += ["--segments", data / "oracle_segments"]
        cmd += shlex.split(a.long_form_args)
        log.info("%s: decoding the long recordings%s", name, " at their true segments" if name == oracle_set else "")
        run.jobs.launch(cmd, out.parent / "logdir" / f"transcribe_{name}.log")
        report = json.loads((out / "efficiency.json").read_text(encoding="utf-8"))
        report["model"] = describe_model(x.exp / a.inference_model)
        write_text_atomic(out / "efficiency.json", json.dumps(report, indent=2) + "\n")


def merge_efficiency(reports: List[dict]) -> dict:
    """One efficiency report from the decoding jobs' reports."""
    from espnet_mtla.metrics.efficiency import summarize  # imports torch: not at the driver's start-up

    utts = {}
    for report in reports:
        utts.update(report["utterances"])
    first = reports[0] if reports else {}
    decoding = first.get("decoding")
    merged = summarize(dict(sorted(utts.items())), first.get("device"), first.get("peak_memory_kind"),
                       dict(decoding, jobs=len(reports)) if decoding else None)
    return {"jobs": len(reports), **merged}


class Score(Stage):
    number, name = 9, "score"
    per_model = True
    records_under = "decode"

    def covers(self, x: Experiment) -> Cover:
        decode = x.decode_dirs()
        return Cover({"test_sets": x.decode_sets, "metrics": x.metrics}, [d / "text" for d in decode],
                     [d / name for d in decode for name in ("scores.json", "hypotheses.json")])

    def run(self, x: Experiment, run: StageRun) -> None:
        from espnet_mtla.metrics.scoring import score

        for name in x.decode_sets:  # a long-form set is scored per recording
            out = x.decode_dir(name)
            refs = dict(datadir.read_table(x.reference_dir(name) / x.text_names()["text"], datadir.Problems()))
            hyps, empty = hypotheses(refs, out)
            if empty:  # the decoding log names each one, with the best non-empty hypothesis' score
                log.warning("%s %s: %d of %d hypotheses are empty (see %s)", x.exp.name, name, empty, len(hyps),
                            out / "logdir")
            scores = score(x.metrics, refs, hyps, out)
            write_text_atomic(out / "scores.json", json.dumps(scores, indent=2) + "\n")
            # Beside the metrics (readers of scores.json expect only metrics): stage 10 reports it
            write_text_atomic(out / "hypotheses.json", json.dumps({"total": len(hyps), "empty": empty}) + "\n")
            log.info("%s %s: %s", x.exp.name, name, scores)
