"""Stages 10-11: the RESULTS.md table (rows of every experiment, kept in RESULTS.json) and
the packed model (a zip that ``--packed_model`` decodes from)."""

import json
import logging
from pathlib import Path
from typing import Optional, Tuple

from espnet_mtla.recipe.experiment import Experiment, read_config
from espnet_mtla.recipe.results import (RESULT_FIELDS, comparisons, figure_path, learning_curves, plot_results,
                                        render_results)
from espnet_mtla.recipe.stage import Cover, Stage, StageRun
from espnet_mtla.recipe.stages.decode import check_model, tuning_dir
from espnet_mtla.storage.fileio import write_text_atomic

log = logging.getLogger("pipeline")


class Report(Stage):
    """Merge this experiment's rows into results.json (next to --results), then render RESULTS.md.
    No record: it merges rows into a file that experiments share, in a second."""

    number, name = 10, "report"
    per_model = True
    records_under = None

    def run(self, x: Experiment, run: StageRun) -> None:
        path = Path(x.args.results)
        results_file = path.with_suffix(".json")
        saved = json.loads(results_file.read_text(encoding="utf-8")) if results_file.exists() else {}
        rows, lms = saved.get("rows", []), saved.get("lms", [])
        notes = ""  # sections a person added below the table ("## ..."): kept as they are
        if path.exists():
            text = path.read_text(encoding="utf-8")
            notes = "\n## " + text.split("\n## ", 1)[1] if "\n## " in text else ""
            if not results_file.exists() and "| experiment |" in text:
                log.warning("%s has a table but no %s (written before it existed): its rows are replaced by this "
                            "run's; re-run stage 10 of the other experiments to list them again", path, results_file)
        for name in x.decode_sets:
            out = x.decode_dir(name)
            eff = json.loads((out / "efficiency.json").read_text())
            decoder, attention = decoder_of(x.exp)
            lm = x.lm_exp.name if x.use_lm else None
            row = {"experiment": x.exp.name, "test_set": name, "decoder": decoder, "attention": attention,
                   "epochs": read_config(x.exp / "config.yaml").get("max_epoch"), "lm": lm, "model": eff.get("model", "-"),
                   "scores": json.loads((out / "scores.json").read_text()),
                   "empty_hypotheses": empty_hypotheses(out),
                   **({"seed_group": x.seed_group, "seed": read_config(x.exp / "config.yaml").get("seed")}
                      if x.seed_group else {}),
                   **{key: eff.get(key) for key in RESULT_FIELDS}, "decoding": tuned(x, eff.get("decoding")),
                   "learning_curves": learning_curves(x.exp, path.resolve().parent)}
            rows = [r for r in rows if (r["experiment"], r["test_set"], r.get("lm")) != (x.exp.name, name, lm)] + [row]
        rows.sort(key=lambda r: (r["experiment"], r["test_set"], r.get("lm") or ""))
        perplexity = x.lm_exp / "perplexity.json"
        if x.use_lm and perplexity.exists():
            lms = [r for r in lms if r["lm"] != x.lm_exp.name] + [json.loads(perplexity.read_text(encoding="utf-8"))]
            lms.sort(key=lambda r: r["lm"])
        write_text_atomic(results_file, json.dumps({"rows": rows, **({"lms": lms} if lms else {})}, indent=2) + "\n")
        figures = {test_set: figure_path(path, test_set).name for test_set in plot_results(rows, path)}
        write_text_atomic(path, render_results(rows, results_file.name, figures, lms) + notes)
        print(path.read_text())
        for line in comparisons(rows):
            log.info("stage 10: %s", line)


def tuned(x: Experiment, decoding: Optional[dict]) -> Optional[dict]:
    """The decoding record, saying where its length bonus was chosen (stage 8's --tune_penalty)."""
    if decoding is None or not x.args.tune_penalty.split() or not (tuning_dir(x) / "tuning.json").exists():
        return decoding
    return {**decoding, "penalty_tuned_on": x.args.valid_set}


def empty_hypotheses(decode_dir: Path) -> Optional[int]:
    """How many of the set's hypotheses stage 9 found empty; None for a set scored before it counted."""
    counts = decode_dir / "hypotheses.json"
    return json.loads(counts.read_text(encoding="utf-8"))["empty"] if counts.exists() else None


def decoder_of(exp: Path) -> Tuple[Optional[str], Optional[str]]:
    """The trained model's decoder and attention type (its config.yaml); the attention type is
    None for a decoder without one (ESPnet's own)."""
    if not (exp / "config.yaml").exists():
        return None, None
    config = read_config(exp / "config.yaml")
    return config.get("decoder"), (config.get("decoder_conf") or {}).get("attention_type")


class Pack(Stage):
    number, name = 11, "pack"
    per_model = True
    records_under = "exp"
    after = tuple(range(1, 8))

    def ready(self, x: Experiment) -> None:
        check_model(x)

    def covers(self, x: Experiment) -> Cover:
        return Cover({"inference_config": x.args.inference_config},
                     [x.exp / x.args.inference_model, x.exp / "config.yaml"] + x.token_files(),
                     [x.exp / f"{x.exp.name}.zip"])

    def run(self, x: Experiment, run: StageRun) -> None:
        from espnet_mtla.storage.packed_model import pack, write_safetensors_copy

        model = x.exp / x.args.inference_model
        extras = [p for p in (x.token_dir("tgt") / "bpe.model", x.token_dir("src") / "bpe.model",
                              x.stats_dir / "train" / "feats_stats.npz") if p.exists()]
        if x.args.inference_config:
            extras.append(Path(x.args.inference_config))
        outpath = x.exp / f"{x.exp.name}.zip"
        t = x.task.name
        # A safetensors copy, which --packed_model loads in preference: it cannot hold code.
        weights = write_safetensors_copy(model, x.exp / f"{model.name.rsplit('.', 1)[0]}.safetensors")
        pack(files={f"{t}_model_file": model}, yaml_files={f"{t}_train_config": x.exp / "config.yaml"},
             outpath=outpath, extras=extras, safetensors_of={f"{t}_model_file": weights})
        log.info("packed: %s (decode with: python -m espnet_mtla.bin.%s_inference --packed_model %s ...)",
                 outpath, t, outpath)
