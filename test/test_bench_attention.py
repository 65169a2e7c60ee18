"""The attention benchmark's measuring parts (its numbers live in docs/benchmarks.md)."""

import json

import pytest
import torch

from espnet_mtla.bench.attention import OurLayer, main, markdown
from espnet_mtla.metrics.memory import peak_allocated_mib


def test_peak_allocation_counts_a_known_tensor():
    def allocate():
        big = torch.ones(16 * 2**20)  # 64 MiB of float32
        del big
        torch.ones(2**20)  # 4 MiB after the big one is freed: the peak stays 64

    assert 64 <= peak_allocated_mib(allocate) < 66


def test_decode_steps_keep_cache_accounting():
    layer = OurLayer("mtla", dict(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, down_rate=2))
    layer.layer = layer.layer.eval()
    cache_bytes = layer.start_decoding(batch=4, context=10)
    assert cache_bytes() == 4 * 5 * (16 + 4) * 4
    with torch.no_grad():
        layer.decode_step(torch.randn(4, 1, 512), torch.tensor([1, 1, 0, 3]))
    assert cache_bytes() == 4 * 6 * (16 + 4) * 4


def test_markdown_reports_ratios_to_mha():
    def result(name, seconds, ms):
        return {
            "name": name,
            "train": {512: {"seconds": seconds, "peak_mib": 10.0}},
            "decode": {1024: {"ms_per_step": ms, "cache_bytes": 2_000_000}},
        }

    args = {"train_lengths": [512], "contexts": [1024]}
    table = markdown([result("MHA", 1.0, 4.0), result("MTLA s=2", 1.5, 1.0)], args)
    assert "| MTLA s=2 | 1.500 (1.50) | 10 (1.00) | 1.00 (0.25) | 2.00 |" in table


def test_markdown_of_one_part():
    def result(name, ms):
        return {"name": name, "train": {}, "decode": {1024: {"ms_per_step": ms, "cache_bytes": 2_000_000}}}

    table = markdown([result("MHA", 4.0), result("MTLA s=2", 1.0)], {"train_lengths": [], "contexts": [1024]})
    assert "| MTLA s=2 | 1.00 (0.25) | 2.00 |" in table and "train" not in table
    table = markdown([{"name": "MHA", "train": {512: {"seconds": 1.0, "peak_mib": 10.0}}, "decode": {}}],
                     {"train_lengths": [512], "contexts": []})
    assert "| MHA | 1.000 (1.00) | 10 (1.00) |" in table and "cache MB" not in table


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    for argv, message in [
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["--rounds", "0"], "argument --rounds: must be an integer >= 1, got 0"),
        (["--variants", "MTLA s=3"], "argument --variants: invalid choice: 'MTLA s=3'"),
        (["--part", "kernels"], "argument --part: invalid choice: 'kernels'"),
        (["--device", "cuda", "--out-dir", str(tmp_path / "new")], "--device cuda times decode steps only: add --part decode"),
        (["--replot", "--out-dir", str(tmp_path)], f"--replot needs {tmp_path}/results.json: run the benchmark"),
    ] + ([] if torch.cuda.is_available() else [
        (["--device", "cuda", "--part", "decode", "--out-dir", str(tmp_path / "new")],
         "--device cuda: no CUDA device is visible"),
    ]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_replot_rewrites_table_and_plot_in_place(tmp_path):
    report = {
        "machine": "test machine",
        "settings": {"train_lengths": [512], "contexts": [1024]},
        "results": [
            {"name": "MHA", "train": {"512": {"seconds": 1.0, "peak_mib": 10.0}}, "decode": {"1024": {"ms_per_step": 4.0, "cache_bytes": 8}}}
        ],
    }
    (tmp_path / "results.json").write_text(json.dumps(report))
    main(["--replot", "--out-dir", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.md", "results.png"]
    assert (tmp_path / "results.md").read_text().startswith("Machine: test machine.")
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
