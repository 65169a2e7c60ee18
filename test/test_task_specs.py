"""The task table: one TaskSpec per task, readable without ESPnet or torch, true to ESPnet."""

import importlib
import subprocess
import sys

import pytest

from espnet_mtla.metrics.scoring import METRICS
from espnet_mtla.task_specs import TASKS, get_task


def test_table_imports_neither_espnet_nor_torch_and_the_cli_cycle_is_gone():
    code = ("import sys, espnet_mtla.task_specs, espnet_mtla.cli.batch_inference\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('espnet', 'espnet2')),"
            " 'espnet_mtla.cli.inference' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] False"
    code = "import sys, espnet_mtla.task_specs; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_spec_names_what_espnet_and_we_have(name):
    import espnet_mtla.tasks.registration as registered

    spec = get_task(name)
    assert registered.ESPNET_TASKS[name].__name__ == spec.espnet_task
    inference = importlib.import_module(spec.espnet_module("inference"))
    assert hasattr(inference, spec.inference_class)
    assert callable(spec.load_model())
    assert set(spec.metrics) <= set(METRICS)
    names = spec.text_names("en", "de")
    assert names["text"] in ("text", "text.de") and spec.source_text == ("src_text" in names)
    assert spec.speech == (spec.input_name == "speech")


def test_unknown_task_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown task 'tts'; choose one of asr, st, slu, mt"):
        get_task("tts")


def test_the_old_imports_register_and_find_the_table():
    """``import espnet_mtla.tasks`` registered our classes before the layout change of 2026-11
    and does again; the table's paths of both layouts import, the newer one registering too."""
    code = ("import espnet_mtla.tasks\n"
            "from espnet2.tasks.asr import ASRTask\n"
            "from espnet_mtla.task_specs import TASKS\n"
            "from espnet_mtla.tasks.specs import TASKS as LATER, get_task\n"
            "choices = {c.name: c for c in ASRTask.class_choices_list}\n"
            "print('decoder_only' in choices['decoder'].classes, 'cached_transformer' in choices['decoder'].classes,"
            " LATER is TASKS, get_task('asr').name)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True True True asr"
