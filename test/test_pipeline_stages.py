"""Pipeline stages that need no training: speed perturbation (2) and length filtering (4)."""

import numpy as np
import pytest
import soundfile

from espnet_mtla.data import datadir
from espnet_mtla.recipe.experiment import Experiment
from espnet_mtla.recipe.jobs import Jobs
from espnet_mtla.recipe.options import get_parser
from espnet_mtla.recipe.stage import StageRun
from espnet_mtla.recipe.stages import STAGES


def make_data(path, durations, rates=None):
    path.mkdir(parents=True)
    for name in ("wav.scp", "text", "utt2spk"):
        lines = []
        for i, seconds in enumerate(durations):
            utt = f"spk-u{i}"
            wav = path / f"{utt}.flac"
            if name == "wav.scp":
                rate = rates[i] if rates else 16000
                soundfile.write(wav, np.zeros(int(rate * seconds), dtype=np.float32) + 0.01, rate)
            lines.append({"wav.scp": f"{utt} {wav}", "text": f"{utt} word {i}", "utt2spk": f"{utt} spk"}[name])
        (path / name).write_text("\n".join(lines) + "\n")
    datadir.fix(path)  # spk2utt


def run_alone(x, number):
    """Stage ``number`` alone, its jobs on this machine (no record)."""
    STAGES[number].run(x, StageRun(Jobs(x.args, STAGES[number].jobs)))


def pipeline(tmp_path, *args):
    return Experiment(get_parser().parse_args(["--task", "asr", "--dumpdir", str(tmp_path / "dump"),
                                             "--expdir", str(tmp_path / "exp"), *args]))


def test_speed_perturbation_copies_with_prefixed_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_data(tmp_path / "data" / "train", [0.5, 0.6])
    p = pipeline(tmp_path, "--speed_perturb_factors", "0.9 1.0 1.1")
    run_alone(p, 2)
    sp = tmp_path / "data" / "train_sp"
    wav = datadir.read_table(sp / "wav.scp", datadir.Problems())
    assert list(wav) == ["sp0.9-spk-u0", "sp0.9-spk-u1", "sp1.1-spk-u0", "sp1.1-spk-u1", "spk-u0", "spk-u1"]
    assert wav["sp1.1-spk-u0"].startswith("sox -t flac ") and wav["sp1.1-spk-u0"].endswith(" speed 1.1 |")
    assert datadir.read_table(sp / "utt2spk", datadir.Problems())["sp0.9-spk-u1"] == "sp0.9-spk"
    assert p.train_set == "train_sp"


def test_length_filter_drops_short_and_long(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("train", "dev", "test"):
        make_data(tmp_path / "data" / name, [0.05, 1.0, 2.0, 9.0])
    p = pipeline(tmp_path, "--min_wav_duration", "0.1", "--max_wav_duration", "5")
    run_alone(p, 3)
    run_alone(p, 4)
    kept = list(datadir.read_table(tmp_path / "dump" / "flac" / "train" / "utt2spk", datadir.Problems()))
    assert kept == ["spk-u1", "spk-u2"]  # u0 too short, u3 too long
    assert not datadir.validate(tmp_path / "dump" / "flac" / "train")


def test_format_logs_what_it_resampled(tmp_path, monkeypatch, caplog):
    """Stage 3 says, per data dir, how many utterances it resampled to --fs and from which rates."""
    import logging

    monkeypatch.chdir(tmp_path)
    make_data(tmp_path / "data" / "train", [0.5, 0.5, 0.5, 0.5], rates=[8000, 16000, 44100, 8000])
    for name in ("dev", "test"):
        make_data(tmp_path / "data" / name, [0.5, 0.5])
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run_alone(pipeline(tmp_path, "--nj", "2"), 3)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage 3:")]
    assert lines == ["stage 3: train: 3 of 4 utterances resampled to 16000 Hz (2 from 8000 Hz, 1 from 44100 Hz)",
                     "stage 3: dev: all 2 utterances at 16000 Hz, none resampled",
                     "stage 3: test: all 2 utterances at 16000 Hz, none resampled"]
    assert not list((tmp_path / "dump").rglob("resampled*"))  # the jobs' counts are merged away


def test_decoding_before_training_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    code = main(["--task", "asr", "--stage", "8", "--stop_stage", "8", "--train_config", "conf/train_{attention}.yaml",
                 "--attention", "mha", "--expdir", str(tmp_path / "exp")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: stage 8 (decode): {tmp_path / 'exp' / 'asr_train_mha' / 'valid.acc.ave.pth'} not found: "
                   "train first (stage 7), or set --inference_model")
    assert not (tmp_path / "exp" / "asr_train_mha").exists()  # nothing half-made


def test_data_stage_outside_a_recipe_dir(tmp_path, monkeypatch, capsys):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    assert main(["--task", "asr", "--stage", "1", "--stop_stage", "1", "--expdir", str(tmp_path / "exp")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: stage 1 (data): {tmp_path / 'local' / 'data.sh'} not found: run from a recipe dir (egs2/<corpus>/<task>1)")


def test_missing_packed_model_is_a_one_line_error(tmp_path):
    import pytest

    from espnet_mtla.cli.options import unpack_model_option
    from espnet_mtla.task_specs import get_task

    with pytest.raises(SystemExit, match=f"^error: --packed_model: no such file: {tmp_path / 'x.zip'}$"):
        unpack_model_option(get_task("asr"), ["--packed_model", str(tmp_path / "x.zip"), "--output_dir", "out"])
    assert unpack_model_option(get_task("asr"), ["--output_dir", "out"]) == ["--output_dir", "out"]


def test_missing_symbols_file_and_ssl_checkpoint_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    common = ["--task", "slu", "--expdir", str(tmp_path / "exp"), "--train_config", "train.yaml"]
    assert main(common + ["--stage", "5", "--stop_stage", "5", "--user_defined_symbols_file", "data/intents.txt"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: stage 5 (tokenizer): --user_defined_symbols_file data/intents.txt: no such file (the recipe's "
        "stage 1 writes it)")
    assert main(common + ["--stage", "6", "--stop_stage", "6", "--ssl_checkpoint", "wavlm.pt"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: stage 6 (stats): --ssl_checkpoint wavlm.pt: no such file (a local HuBERT/WavLM checkpoint; "
        "recipes take it from SSL_CHECKPOINT in db.sh)")
    (tmp_path / "train.yaml").write_text("encoder: transformer\n")
    assert main(["--task", "st", "--expdir", str(tmp_path / "exp"), "--train_config", "train.yaml",
                 "--stage", "7", "--stop_stage", "7", "--pretrained_asr", "asr.pth"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: stage 7 (train): --pretrained_asr asr.pth: no such file (an ASR model file, e.g. "
        "exp/asr_train_mtla/valid.acc.ave.pth of an ASR recipe on the same audio)")
    assert not list((tmp_path / "exp").rglob("stages/*"))  # refused before anything was recorded


def test_report_renders_results_md_from_results_json(tmp_path, monkeypatch):
    """Stage 10 merges this experiment's rows into RESULTS.json and renders RESULTS.md from it;
    other experiments' rows and a person's notes below the table stay."""
    import json

    monkeypatch.chdir(tmp_path)
    efficiency = {"model": "valid.acc.ave", "total_decode_time_s": 1.5, "utterances_per_s": 2.0, "tokens_per_s": 9.5,
                  "peak_memory_bytes": 3 * 2**20, "cache_bytes_peak": 123456}
    for attention, wer in (("mha", 5.0), ("mtla", 4.5)):
        p = pipeline(tmp_path, "--train_config", f"conf/train_{attention}.yaml")
        decode = p.decode_dir("test")
        decode.mkdir(parents=True)
        (p.exp / "images").mkdir()
        (p.exp / "config.yaml").write_text(f"decoder: decoder_only\ndecoder_conf:\n  attention_type: {attention}\n")
        for curve in ("acc", "loss", "grad_norm"):  # what ESPnet draws (some of it)
            (p.exp / "images" / f"{curve}.png").write_bytes(b"png")
        (decode / "efficiency.json").write_text(json.dumps(efficiency))
        (decode / "scores.json").write_text(json.dumps({"wer": wer, "cer": 1.0}))
        if attention == "mtla":  # stage 9's count (a set scored before it counted has none)
            (decode / "hypotheses.json").write_text(json.dumps({"total": 200, "empty": 3}))
        run_alone(p, 10)
        if attention == "mha":
            text = (tmp_path / "RESULTS.md").read_text()
            (tmp_path / "RESULTS.md").write_text(text + "\n## Notes\n\nkept as written\n")
    rows = json.loads((tmp_path / "RESULTS.json").read_text())["rows"]
    assert [(r["experiment"], r["scores"]["wer"]) for r in rows] == [("asr_train_mha", 5.0), ("asr_train_mtla", 4.5)]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| asr_train_mtla | test | valid.acc.ave | wer 4.5, cer 1.0, 3 empty | 1.50 | 2.0 | 9.5 | 3.0 | 0.123 |" in text
    assert "| asr_train_mha | test | valid.acc.ave | wer 5.0, cer 1.0 | 1.50 |" in text
    assert [r["empty_hypotheses"] for r in rows] == [None, 3]
    assert text.index("asr_train_mha") < text.index("asr_train_mtla") < text.index("## Notes\n\nkept as written")
    # what the numbers mean, against MHA
    assert ("- asr_train_mtla vs asr_train_mha on test: wer 4.5 vs 5.0 (-0.50 points, better); decoding speed 1.00x "
            "the utterances/s; peak decoding memory 1.00x the memory; KV cache 1.00x the bytes\n") in text
    # the figure, embedded; the learning curves, linked
    assert "![test: the experiments side by side](RESULTS_test.png)" in text
    assert "- asr_train_mtla: [loss](exp/asr_train_mtla/images/loss.png), [acc](exp/asr_train_mtla/images/acc.png)" in text
    from PIL import Image

    with Image.open(tmp_path / "RESULTS_test.png") as image:
        assert image.format == "PNG" and image.size[0] > 800


def test_experiments_compare_with_the_mha_experiment_of_their_own_decoder():
    """Encoder-decoder rows against the encoder-decoder MHA row, decoder-only rows against theirs;
    rows written before rows named their decoder count as decoder_only."""
    from espnet_mtla.recipe.results import comparisons

    def row(name, decoder, attention, wer):
        return {"experiment": name, "test_set": "test", "attention": attention, "scores": {"wer": wer},
                **({"decoder": decoder} if decoder else {})}

    rows = [row("asr_train_mha", None, "mha", 5.0), row("asr_train_mtla", "decoder_only", "mtla", 4.0),
            row("asr_train_encdec_mha", "cached_transformer", "mha", 6.0),
            row("asr_train_encdec_mtla", "cached_transformer", "mtla", 6.5),
            row("asr_espnet", "transformer", None, 7.0)]
    assert comparisons(rows) == [
        "asr_train_encdec_mtla vs asr_train_encdec_mha on test: wer 6.5 vs 6.0 (+0.50 points, worse)",
        "asr_train_mtla vs asr_train_mha on test: wer 4.0 vs 5.0 (-1.00 points, better)"]


def test_results_figure_has_one_bar_per_experiment_in_each_panel(tmp_path):
    from espnet_mtla.recipe.results import plot_results

    rows = [{"experiment": f"asr_train_{a}", "test_set": t, "model": "m", "scores": {"wer": w},
             "utterances_per_s": 3.0, "peak_memory_bytes": 2**20, "cache_bytes_peak": None if a == "mha" else 10**6}
            for a, w in (("mha", 5.0), ("mtla", 4.0), ("mla", 4.5)) for t in ("dev", "test")]
    drawn = plot_results(rows, tmp_path / "RESULTS.md")
    assert drawn == {t: ["asr_train_mha", "asr_train_mla", "asr_train_mtla"] for t in ("dev", "test")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS_dev.png", "RESULTS_test.png"]


def test_results_figure_draws_a_seed_group_as_one_bar(tmp_path):
    """Three seeds are one bar (their mean, the spread as an error bar), not three bars that would
    show seed noise as if it were a difference between experiments."""
    from espnet_mtla.recipe.results import plot_results

    def row(name, wer, seed=None):
        return {"experiment": name, "test_set": "test", "attention": "mtla", "scores": {"wer": wer},
                "utterances_per_s": 3.0, "peak_memory_bytes": 2**20, "cache_bytes_peak": 10**6,
                **({"seed_group": "asr_train_mtla", "seed": seed} if seed is not None else {})}

    rows = [row("asr_train_mha", 4.0)] + [row(f"asr_train_mtla_seed{s}", w, s) for s, w in enumerate((3.6, 3.0, 2.7))]
    assert plot_results(rows, tmp_path / "RESULTS.md") == {"test": ["asr_train_mha", "asr_train_mtla (3 seeds)"]}
    assert (tmp_path / "RESULTS_test.png").stat().st_size > 0


def test_unknown_metric_and_job_backend_are_one_line_option_errors(capsys):
    import pytest

    for option, value, message in (("--metrics", "bleu,blue", "unknown metric 'blue'; choose from wer, cer, bleu"),
                                   ("--decode_cmd", "pbs --mem 4G", "unknown job backend 'pbs'; use local, slurm"),
                                   ("--seeds", "0 x", "'x' is not a seed; give integers >= 0, e.g. \"0 1 2\""),
                                   ("--seeds", "1 -2", "'-2' is not a seed"),
                                   ("--tune_penalty", "0 0.2x", "'0.2x' is not a number; give length bonuses")):
        with pytest.raises(SystemExit):
            get_parser().parse_args(["--task", "mt", option, value])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"argument {option}: {message}" in err
    assert get_parser().parse_args(["--task", "mt", "--metrics", "bleu,chrf"]).metrics == ["bleu", "chrf"]


def test_training_progress_shows_only_numbers_that_exist(tmp_path, caplog):
    """ESPnet's ST model reports cer/wer as nan in validation (a decoder it does not run)."""
    import logging

    from espnet_mtla.recipe.progress import TrainingProgress, parse_epoch_results

    progress = TrainingProgress(tmp_path / "train.log", max_epoch=2)
    results = parse_epoch_results("[train] loss=12.5, [valid] loss=10.25, acc=0.5, cer=nan, wer=nan, bleu=3.2")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        progress.report(1, results)
    line = caplog.records[-1].getMessage()
    assert "nan" not in line and "valid loss 10.25, acc 0.5" in line


def test_rows_decoded_differently_are_not_compared_and_say_why():
    from espnet_mtla.recipe.results import comparisons, render_results

    how = {"search": "batched", "beam_size": 10, "batch_frames": 4000, "batch_size": 1, "penalty": 0.0,
           "maxlenratio": 0.0, "ctc_weight": 0.3, "lm_weight": None, "device": "cpu", "machine": "Xeon, 2 cores",
           "threads": 1, "jobs": 2}

    def row(attention, **decoding):
        return {"experiment": f"asr_train_{attention}", "test_set": "test", "attention": attention,
                "model": "valid.acc.ave", "scores": {"wer": 3.0}, "utterances_per_s": 10.0,
                "decoding": dict(how, **decoding)}

    alike = comparisons([row("mha"), row("mtla")])
    assert alike == ["asr_train_mtla vs asr_train_mha on test: wer 3.0 vs 3.0 (+0.00 points, equal); decoding "
                     "speed 1.00x the utterances/s"]
    assert comparisons([row("mha", search="per-utterance", batch_frames=None), row("mtla")]) == [
        "asr_train_mtla vs asr_train_mha on test: not compared, decoded differently (search batched vs "
        "per-utterance; batch_frames 4000 vs None): decode both alike (stage 8 with the same options and machine)"]
    old = row("mha")
    del old["decoding"]  # a row from before rows said how they were decoded
    assert "asr_train_mha's decoding was not recorded" in comparisons([old, row("mtla")])[0]
    # each with the length bonus it does best with on dev (--tune_penalty): compared; one tuned only: not
    tuned = dict(penalty_tuned_on="dev")
    assert comparisons([row("mha", penalty=0.5, **tuned), row("mtla", penalty=0.2, **tuned)]) == alike
    assert "penalty 0.2 vs 0.5" in comparisons([row("mha", penalty=0.5, **tuned), row("mtla", penalty=0.2)])[0]
    assert "length bonus 0.5 (the best on dev), maxlenratio" in render_results([row("mha", penalty=0.5, **tuned)])
    # the same rule for a row with an LM against the row without: both tuned, each its own bonus
    fused = dict(row("mtla", penalty=1.0, lm_weight=0.5, **tuned), lm="lm_train_lm_mha", scores={"wer": 2.5})
    assert ("- asr_train_mtla on test with lm_train_lm_mha: wer 2.5 vs 3.0 without (-0.50 points); decoding speed "
            "1.00x\n") in render_results([row("mtla", penalty=1.5, **tuned), fused])
    assert "with lm_train_lm_mha" not in render_results([row("mtla", penalty=1.5), fused])
    text = render_results([row("mha"), row("mtla", beam_size=20)])
    assert ("- asr_train_mha (test): batched within 4000 frames, beam 10, CTC weight 0.3, length bonus 0.0, "
            "maxlenratio 0.0, 2 job(s) of 1 thread(s) on Xeon, 2 cores\n") in text


def test_experiments_compare_with_the_mha_experiment_trained_as_long():
    """A 16-epoch MTLA row against the 16-epoch MHA row, never the 8-epoch one; MHA rows are not
    compared with each other; a row without an MHA row of its epochs says so."""
    from espnet_mtla.recipe.results import comparisons

    def row(name, attention, epochs, bleu):
        return {"experiment": name, "test_set": "test", "attention": attention, "epochs": epochs,
                "scores": {"bleu": bleu}}

    rows = [row("mt_train_mha", "mha", 8, 90.16), row("mt_train_mha_16epochs", "mha", 16, 93.2),
            row("mt_train_mtla", "mtla", 8, 47.01), row("mt_train_mtla_16epochs", "mtla", 16, 90.73),
            row("mt_train_mla_24epochs", "mla", 24, 93.0)]
    assert comparisons(rows) == [
        "mt_train_mtla vs mt_train_mha on test: bleu 47.01 vs 90.16 (-43.15 points, worse)",
        "mt_train_mtla_16epochs vs mt_train_mha_16epochs on test: bleu 90.73 vs 93.2 (-2.47 points, worse)",
        "mt_train_mla_24epochs on test: not compared, no MHA row trained for 24 epochs (MHA: mt_train_mha 8, "
        "mt_train_mha_16epochs 16 epochs): train one alike"]
    # an MHA row from before rows said their epochs is still the baseline of a new row
    old_mha = row("mt_train_mha", "mha", 8, 90.16)
    del old_mha["epochs"]
    assert comparisons([old_mha, row("mt_train_mtla", "mtla", 8, 47.01)]) == [
        "mt_train_mtla vs mt_train_mha on test: bleu 47.01 vs 90.16 (-43.15 points, worse)"]


def test_compare_curves_reads_train_logs_into_a_table_and_a_figure(tmp_path, capsys):
    """Each experiment's valid metric per epoch from ESPnet's epoch reports (a resumed epoch: its
    last report), as a Markdown table and a PNG; a missing log or metric is one line."""
    from espnet_mtla.cli.compare_curves import main

    line = ("[vm] 2026-12-06 18:51:19,226 (trainer:394) INFO: {e}epoch results: [train] iter_time=0.011, loss=118.7, "
            "acc=0.121, time=42.6 seconds, total_count=62, [valid] loss=44.490, acc={acc}, bleu=32.872, time=1.1 seconds")
    for name, accs in (("a", ["0.5", "0.75"]), ("b", ["0.25", "0.3", "0.9"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.log").write_text("\n".join(line.format(e=e + 1, acc=a) for e, a in enumerate(accs))
                                                   + "\n" + line.format(e=2, acc="0.8") * (name == "a") + "\n")
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--names", "MHA", "MTLA", "--figure", str(tmp_path / "c.png")])
    assert capsys.readouterr().out.splitlines() == [
        "| experiment | valid acc ep 1 | valid acc ep 2 | valid acc ep 3 |", "|---|---|---|---|",
        "| MHA | 0.500 | 0.800 | - |", "| MTLA | 0.250 | 0.300 | 0.900 |"]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    for argv, message in (([str(tmp_path / "none")], f"{tmp_path / 'none' / 'train.log'} not found"),
                          ([str(tmp_path / "a"), "--metric", "wer"], "no epoch reports [valid] wer")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert message in str(exit_info.value)


def test_seed_groups_are_reported_as_mean_and_spread_and_compared_by_it():
    """--seeds rows: each seed's row in the table, the group's mean +- standard deviation below
    it, and the comparison made between means, saying whether the gap exceeds the spread."""
    from espnet_mtla.recipe.results import comparisons, render_results

    def row(attention, seed, bleu, ups):
        return {"experiment": f"mt_train_{attention}_seed{seed}", "test_set": "test", "attention": attention, "model": "m",
                "epochs": 8, "scores": {"bleu": bleu, "chrf": bleu + 3}, "utterances_per_s": ups,
                "seed_group": f"mt_train_{attention}", "seed": seed}

    mha = [row("mha", 0, 90.0, 10.0), row("mha", 1, 92.0, 12.0), row("mha", 2, 91.0, 11.0)]
    mtla = [row("mtla", 0, 93.0, 30.0), row("mtla", 1, 95.0, 34.0)]
    assert comparisons(mha + mtla) == [
        "mt_train_mtla (2 seeds) vs mt_train_mha (3 seeds) on test: bleu 94.0 vs 91.0 (+3.00 points, better; larger "
        "than the seed spread, 1.41 + 1.00 standard deviations); decoding speed 2.91x the utterances/s"]
    lone_mha = {"experiment": "mt_train_mha", "test_set": "test", "attention": "mha", "epochs": 8,
                "scores": {"bleu": 80.0}}
    assert comparisons([lone_mha] + mha + mtla)[0].startswith("mt_train_mtla (2 seeds) vs mt_train_mha (3 seeds)")
    close = [row("mtla", 0, 91.0, 30.0), row("mtla", 1, 92.5, 34.0)]
    assert "not larger than the seed spread, 1.06 + 1.00" in comparisons(mha + close)[0]
    single = {"experiment": "mt_train_mla", "test_set": "test", "attention": "mla", "epochs": 8,
              "scores": {"bleu": 92.0}}
    assert comparisons(mha + [single])[0].endswith(
        "(+1.00 points, better; mt_train_mla is one run, so whether this is more than seed noise is unknown)")
    text = render_results(mha + mtla)
    assert "| mt_train_mha_seed1 | test |" in text  # every seed's own row
    assert "| mt_train_mha (3 seeds) | test | bleu 91.0 +- 1.0, chrf 94.0 +- 1.0 | 11.000 | - |" in text


def test_seeds_train_one_experiment_per_seed(tmp_path, monkeypatch, capsys):
    """Each seed is its own experiment (tag _seed<N>, ESPnet's --seed N); a bad list is one line
    (test_unknown_metric_and_job_backend_are_one_line_option_errors), before any stage runs."""
    from espnet_mtla.recipe.runner import main

    monkeypatch.chdir(tmp_path)
    p = pipeline(tmp_path, "--train_config", "conf/train_mtla.yaml", "--seeds", "0 3",
                 "--train_args", "--max_epoch 2")
    runs = p.seed_experiments()
    assert [r.exp.name for r in runs] == ["asr_train_mtla_seed0", "asr_train_mtla_seed3"]
    assert [r.args.train_args for r in runs] == ["--max_epoch 2 --seed 0", "--max_epoch 2 --seed 3"]
    assert {r.seed_group for r in runs} == {"asr_train_mtla"} and p.args.seeds == "0 3"
    with pytest.raises(SystemExit) as exit_info:
        main(["--task", "asr", "--stage", "8", "--stop_stage", "8", "--train_config", "conf/train_{attention}.yaml",
              "--seeds", "0 x"])
    assert exit_info.value.code == 2 and "argument --seeds: 'x' is not a seed" in capsys.readouterr().err
    assert not (tmp_path / "exp" / "asr_train_mtla_seed0").exists()
