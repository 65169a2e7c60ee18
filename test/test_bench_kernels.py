"""The backend benchmark's report and options (its numbers live in docs/benchmarks.md)."""

import json

import pytest
import torch

from espnet_mtla.bench.kernels import VARIANTS, main, markdown


def fake_report(bandwidth=None):
    def decode(name, backend, context, step, core):
        row = {"name": name, "backend": backend, "context": context, "step_ms": step, "cache_bytes": 1_000_000}
        if name != "MHA":
            row["core_ms"] = core
        return row

    report = {
        "machine": "test machine",
        "options": {"batch": 4, "contexts": [1024], "train_lengths": [512, 1024]},
        "backends": ["eager", "sdpa", "triton"],
        "decode": [],
        "train": [],
    }
    for name in VARIANTS:
        for backend, factor in [("eager", 1.0), ("sdpa", 0.5), ("triton", 0.25)]:
            if backend != "triton" or name != "MHA":
                report["decode"].append(decode(name, backend, 1024, 4.0 * factor, 2.0 * factor))
        for backend, factor in [("eager", 1.0), ("sdpa", 0.5), ("auto", 0.4)]:
            for length in (512, 1024):
                report["train"].append({"name": name, "backend": backend, "length": length, "seconds": factor * length / 512,
                                        "peak_mib": 100 * factor})
    if bandwidth:
        report["copy_bandwidth"] = bandwidth
    return report


def test_markdown_reports_speedups_over_eager_and_the_cache_read_bound():
    # 1 MB read at a copy bandwidth of 2 GB/s (read + write) takes 1 ms.
    table = markdown(fake_report(bandwidth=2e9))
    assert "| MTLA s=2 | triton | 1.000 (4.00x) | 0.500 (4.00x) | 1.0 | 0.50 |" in table
    assert "| MHA | sdpa | 2.000 (2.00x) | - | 1.0 | - |" in table
    assert "| MHA | triton" not in table  # triton has no MHA kernel: not reported as if it had
    assert "| MLA | auto | 0.400 (0.80x) | 0.800 (0.80x) | 40 (0.80x) | 40 (0.80x) |" in table  # ratios to MHA sdpa
    assert "| MHA | sdpa | 0.500 (1.00x) | 1.000 (1.00x) | 50 (1.00x) | 50 (1.00x) |" in table
    assert "Device-to-device copy bandwidth: 0.00 TB/s" in table


def test_quick_cpu_run_writes_every_type_and_backend(tmp_path):
    main(["--device", "cpu", "--quick", "--out-dir", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    assert {(r["name"], r["backend"]) for r in report["decode"]} == {(n, b) for n in VARIANTS for b in ("eager", "sdpa")}
    assert {(r["name"], r["backend"]) for r in report["train"]} == {
        (n, b) for n in VARIANTS for b in ("eager", "sdpa", "auto")}
    assert all(r["step_ms"] > 0 and r["cache_bytes"] > 0 for r in report["decode"])
    assert all("core_ms" in r for r in report["decode"] if r["name"] != "MHA")
    assert (tmp_path / "results.png").stat().st_size > 0
    assert (tmp_path / "results.md").read_text() == markdown(report)


def test_quick_cpu_run_of_one_part_and_some_types(tmp_path):
    main(["--device", "cpu", "--quick", "--part", "train", "--variants", "MHA", "MTLA s=2", "--out-dir", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["decode"] == [] and {r["name"] for r in report["train"]} == {"MHA", "MTLA s=2"}
    table = (tmp_path / "results.md").read_text()
    assert "| MTLA s=2 | auto |" in table and "step ms" not in table and "| MLA |" not in table


def test_rows_are_saved_one_by_one():
    """A run cut off by a time limit (utils/gpu_checks.sh) keeps every row that finished."""
    from espnet_mtla.bench.kernels import run

    saved = []
    opts = {"device": "cpu", "dtype": "float32", "batch": 2, "contexts": [64], "train_lengths": [32],
            "decode_repeats": 1, "core_repeats": 1, "train_repeats": 1, "part": "both", "variants": ["MHA", "MLA"]}
    report = run(opts, lambda r: saved.append((len(r["decode"]), len(r["train"]))))
    assert saved == [(1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (3, 3), (4, 3), (4, 4), (4, 5), (4, 6)]
    assert len(report["decode"]) == 4 and len(report["train"]) == 6


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    cases = [
        (["--device", "cpu", "--variants", "MLA", "--out-dir", str(tmp_path / "new")],
         "--variants must include MHA (the ratios are to MHA)"),
        (["--device", "cpu", "--tune", "--out-dir", str(tmp_path / "new")], "--tune times the Triton kernel: it needs --device cuda"),
        (["--replot", "--out-dir", str(tmp_path)], f"--replot needs {tmp_path}/results.json"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda", "--out-dir", str(tmp_path)], "--device cuda: no CUDA device is visible"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written
