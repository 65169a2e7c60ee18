"""bench_decode's report (the measurement itself is a script, not a timed test)."""

import json
import shutil
from pathlib import Path

import pytest

from espnet_mtla.bench import decode as bench_decode

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "bench_decode" / "results.json"


def test_replot_rebuilds_table_and_plot_from_results(tmp_path):
    shutil.copy(COMMITTED, tmp_path / "results.json")
    bench_decode.main(["--replot", "--out-dir", str(tmp_path)])
    table = (tmp_path / "results.md").read_text()
    report = json.loads(COMMITTED.read_text())
    mha = next(r for r in report["results"] if r["name"] == "MHA")
    mtla = next(r for r in report["results"] if r["name"] == "MTLA s=2")
    row = next(line for line in table.splitlines() if line.startswith("| MTLA s=2 |"))
    assert f"{mha['cache_bytes'] / mtla['cache_bytes']:.1f}x" in row
    assert f"{mha['search_s'] / mtla['search_s']:.2f}x" in row
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_replot_without_results_names_the_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_decode.main(["--replot", "--out-dir", str(tmp_path)])
    assert f"--replot needs {tmp_path / 'results.json'}" in capsys.readouterr().err


def test_batch_decode_replot_from_the_committed_results(tmp_path):
    from espnet_mtla.bench import batch_decode as bench_batch_decode

    committed = COMMITTED.parent.parent / "bench_batch_decode" / "results.json"
    shutil.copy(committed, tmp_path / "results.json")
    bench_batch_decode.main(["--replot", "--out-dir", str(tmp_path)])
    report = json.loads(committed.read_text())
    budget = report["options"]["budgets"][-1]

    def row(name):
        result = next(x for x in report["results"] if x["name"] == name)
        return next(r for r in result["rows"] if r["ctc_weight"] == 0.3 and r["budget"] == budget)

    mha, mtla = row("MHA"), row("MTLA s=2")
    section = (tmp_path / "results.md").read_text().split("**CTC weight 0.3**")[1]
    line = next(line for line in section.splitlines() if line.startswith("| MTLA s=2 |"))
    assert f"{mtla['search_s']:.1f} ({mha['search_s'] / mtla['search_s']:.2f}x faster)" in line
    assert f"({mtla['utts_per_s'] / mha['utts_per_s']:.2f})" in line
    assert (tmp_path / "results.png").stat().st_size > 10_000


# -- the paper-protocol benchmark (bench_paper) ----------------------------------------------
def test_paper_test_set_is_tst_common_shaped_and_fixed():
    from espnet_mtla.bench import paper as bench_paper

    frames, tokens = bench_paper.test_set(bench_paper.TST_COMMON_SEGMENTS)
    assert len(frames) == 2641 and (frames, tokens) == bench_paper.test_set(2641)
    hours = sum(frames) / 100 / 3600
    assert 3.6 < hours < 4.6  # tst-COMMON: about 4 hours
    assert 40 <= min(frames) and max(frames) <= 3000 and min(tokens) >= 2
    assert bench_paper.test_set(10) == (frames[:10], tokens[:10])  # a subset is the head of the draw


BLOCK_ESPNET = """import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('espnet', 'espnet2'):
            raise ImportError('no ' + name + ' (blocked: the GPU nodes have no ESPnet)')
sys.meta_path.insert(0, Block())
"""


def test_paper_benchmark_cpu_mode_runs_every_type_side_by_side(tmp_path):
    """Tiny run (2 utterances, beam 2) of the real script where ESPnet cannot be imported (as
    on the offline GPU nodes; the block is in every spawned process through sitecustomize):
    each type emits its target lengths, and the table carries the paper's ratios beside ours."""
    import os
    import subprocess
    import sys

    from espnet_mtla.bench import paper as bench_paper

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_ESPNET)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{root}")
    result = subprocess.run([sys.executable, "-m", "espnet_mtla.bench.paper", "--device", "cpu", "--utts", "2",
                             "--beam", "2", "--threads", "1", "--variants", "MHA", "MTLA s=2", "--out-dir", str(tmp_path)],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    mha, mtla = report["results"]
    assert [mha["name"], mtla["name"]] == ["MHA", "MTLA s=2"]
    assert mha["tokens"] == mtla["tokens"] == sum(bench_paper.test_set(2)[1])
    assert mtla["kv_cache_peak_mib"] * 5 < mha["kv_cache_peak_mib"]
    row = next(line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| MTLA s=2 |"))
    assert "| 4.29x |" in row and "| 6.58x |" in row  # the paper's speed-up and memory reduction
    assert (tmp_path / "results.png").stat().st_size > 10_000
    bench_paper.main(["--replot", "--out-dir", str(tmp_path)])
    assert (tmp_path / "results.md").read_text().count("| MTLA s=2 |") == 1


def test_paper_benchmark_refuses_a_missing_gpu_in_one_line(capsys):
    import torch

    from espnet_mtla.bench import paper as bench_paper

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit):
        bench_paper.main(["--device", "cuda"])
    assert "--device cuda: no CUDA device here; use --device cpu" in capsys.readouterr().err


def test_paper_benchmark_refuses_cuda_graphs_on_a_cpu_in_one_line(capsys, tmp_path):
    from espnet_mtla.bench import paper as bench_paper

    with pytest.raises(SystemExit):
        bench_paper.main(["--device", "cpu", "--cuda_graphs", "--out-dir", str(tmp_path / "out")])
    assert "--cuda_graphs needs --device cuda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["decode", "paper"])
def test_variants_without_mha_are_a_one_line_error(module, capsys, tmp_path):
    import importlib

    bench = importlib.import_module(f"espnet_mtla.bench.{module}")
    with pytest.raises(SystemExit):
        bench.main(["--variants", "MTLA s=2", "--out-dir", str(tmp_path / "out")]
                   + (["--device", "cpu"] if module == "paper" else []))
    assert "--variants must include MHA (every ratio is to MHA)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


# -- the encoder-decoder benchmark (bench.encdec) ---------------------------------------------
def test_encdec_replot_rebuilds_the_committed_table(tmp_path):
    from espnet_mtla.bench import encdec

    committed = COMMITTED.parent.parent / "bench_encdec"
    shutil.copy(committed / "results.json", tmp_path / "results.json")
    encdec.main(["--replot", "--out-dir", str(tmp_path)])
    assert (tmp_path / "results.md").read_text() == (committed / "results.md").read_text()


def test_encdec_quick_run_gives_espnets_hypotheses_and_fewer_bytes(tmp_path):
    from espnet_mtla.bench import encdec

    encdec.main(["--quick", "--out-dir", str(tmp_path)])  # 2 s and 4 s, 4 tokens, 4 utterances, beam 2
    rows = [r for r in json.loads((tmp_path / "results.json").read_text())["results"] if r["seconds"] == 2]
    assert [(r["decoder"], r["batch"]) for r in rows] == [("ESPnet", 1), ("ours MHA", 1), ("ours MHA", 4),
                                                            ("ours MTLA s=2", 1), ("ours MTLA s=2", 4)]
    assert all(r["same_as_espnet"] for r in rows if r["decoder"] == "ours MHA")
    mha, mtla = rows[1], rows[3]
    assert mha["held_bytes"] > 4 * mtla["held_bytes"]  # per-head source memory against merged latents


def test_lm_fusion_quick_run_measures_every_lm_side_by_side(tmp_path):
    from espnet_mtla.bench import lm_fusion

    lm_fusion.main(["--quick", "--out-dir", str(tmp_path)])  # 4 utterances, beam 2, 4 tokens
    rows = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    assert list(rows) == ["no LM", "ESPnet TransformerLM", "ours MHA", "ours MTLA s=2"]
    assert rows["no LM"]["lm_cache_bytes"] == 0
    # ESPnet keeps each layer's outputs (one 512-d vector per token), our MHA keys and values (two)
    assert rows["ours MHA"]["lm_cache_bytes"] >= 2 * rows["ESPnet TransformerLM"]["lm_cache_bytes"] > 0
    assert 0 < rows["ours MTLA s=2"]["lm_cache_bytes"] < rows["ours MHA"]["lm_cache_bytes"] / 4
    table = (tmp_path / "results.md").read_text()
    assert "| ours MTLA s=2 |" in table and "x smaller |" in table
    lm_fusion.main(["--replot", "--out-dir", str(tmp_path)])
    assert (tmp_path / "results.md").read_text() == table


def test_trained_models_decode_in_turns_and_the_stopwatches_change_nothing(tmp_path, capsys):
    from espnet_mtla.bench import trained
    from espnet_mtla.api import load_model
    from espnet_mtla.search.beam_search import DecodeStep
    from test_api import make_exp
    from test_batch_decoding import make_data

    exps = []
    for attention in ("mha", "mtla"):
        (tmp_path / attention).mkdir()
        exps.append(make_exp(tmp_path / attention, "asr", attention))
    make_data(tmp_path, "asr")  # 7 utterances of noise: tmp_path/wav.scp
    original = DecodeStep.__call__
    model = load_model(exps[1], maxlenratio=-3, ctc_weight=0.3)
    inputs = trained.read_inputs(model, tmp_path / "wav.scp")
    plain = [r.nbest for r in model(inputs)]
    totals = {part: [0.0, 0] for part in trained.PARTS}
    with trained.stopwatches(totals):
        timed = [r.nbest for r in model(inputs)]
    assert timed == plain and DecodeStep.__call__ is original  # measured, unchanged, restored
    assert totals["decoder step"][1] > 0 and totals["CTC scorer"][1] == totals["decoder step"][1]
    assert totals["search"][0] >= totals["decoder step"][0] + totals["CTC scorer"][0]

    out = tmp_path / "report"
    trained.main(["--exps", *map(str, exps), "--inputs", str(tmp_path / "wav.scp"), "--rounds", "2",
                  "--out-dir", str(out)])
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [r["model"] for r in rows] == list(map(str, exps))
    assert all(r["utterances"] == 7 and len(r["utterances_per_s"]) == 2 and r["steps_per_pass"] > 0 for r in rows)
    table = (out / "results.md").read_text()
    assert f"| {exps[0]} |" in table and "| 1.00x |" in table
    trained.main(["--replot", "--out-dir", str(out)])
    assert (out / "results.md").read_text() == table
    with pytest.raises(SystemExit):
        trained.main(["--exps", str(tmp_path / "nope"), "--out-dir", str(out)])
    assert "--exps: " + str(tmp_path / "nope") + " does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        trained.main(["--exps", str(exps[0]), "--inputs", str(tmp_path / "nope.scp"), "--out-dir", str(out)])
    assert f"--inputs {tmp_path / 'nope.scp'} is not a file" in capsys.readouterr().err
    (tmp_path / "bad.scp").write_text("u0\n")  # a key without a value
    with pytest.raises(SystemExit, match=f"error: --inputs {tmp_path / 'bad.scp'}: every line must be '<key> <value>'"):
        trained.main(["--exps", str(exps[0]), "--inputs", str(tmp_path / "bad.scp"), "--out-dir", str(tmp_path / "r2")])
    assert not (tmp_path / "r2").exists()  # nothing written
