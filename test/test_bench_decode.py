"""bench_decode's report (the measurement itself is a script, not a timed test)."""

import json
import shutil
from pathlib import Path

import pytest

from espnet_mtla.bin import bench_decode

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
    from espnet_mtla.bin import bench_batch_decode

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
