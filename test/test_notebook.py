"""The example notebook runs top to bottom (nbclient) and is the one make_notebook.py writes."""

import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="needs transformers (make install)")
nbformat = pytest.importorskip("nbformat", reason="needs nbformat/nbclient (make install)")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "mtla_char_lm.ipynb"


def outputs(notebook) -> str:
    return "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)


def test_committed_notebook_matches_its_generator_and_holds_outputs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebook", EXAMPLES / "make_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in module.CELLS], "re-run examples/make_notebook.py"
    assert "reloaded: same generations" in outputs(committed)


@pytest.mark.slow
@pytest.mark.serial  # timed: it runs alone, after the parallel workers
def test_notebook_executes_in_under_three_minutes(tmp_path):
    from espnet_mtla.bin.run_notebook import run_notebook

    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    start = time.time()
    run_notebook(tmp_path / NOTEBOOK.name, tmp_path / "out.ipynb")
    assert time.time() - start < 180
    text = outputs(nbformat.read(tmp_path / "out.ipynb", as_version=4))
    assert "step 500: loss" in text and "reloaded: same generations" in text
    sizes = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
             if line.split()[:1] in (["mha"], ["gqa"], ["mla"], ["mtla"])}
    assert sizes["mtla"] * 2 == sizes["mla"] and sizes["mla"] < sizes["gqa"] < sizes["mha"]
