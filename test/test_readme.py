"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    return blocks


def test_readme_python_blocks_run(capsys):
    for block in python_blocks():
        if "load_model(" in block:  # needs a trained model: the next test
            continue
        exec(compile(block, str(README), "exec"), {})
    # Slots after 50 - pad prefix tokens + 1 step, s = 2: rows hold 51, 41, 31, 21 tokens
    # -> 26 + 21 + 16 + 11 slots; reordered rows [0, 0, 2, 3] -> 26 + 26 + 16 + 11 = 79.
    assert capsys.readouterr().out.strip() == str(79 * (256 + 32) * 4)


def test_architecture_names_files_that_exist():
    root = README.parent
    text = (root / "ARCHITECTURE.md").read_text()
    paths = set(re.findall(r"`((?:espnet_mtla|test|conf_templates|utils)/[\w/.]*)`", text))
    assert len(paths) > 8
    missing = sorted(p for p in paths if not (root / p).exists())
    assert not missing, missing


def test_docs_refer_to_nothing_outside_the_repository():
    """Every path a doc names that climbs out of its folder, and every .md file it names, is in the repo."""
    root = README.parent
    tops = [p for p in root.iterdir() if not p.name.startswith(".")]  # not the venvs
    ours = {p.name for top in tops for p in ([top] if top.is_file() else top.rglob("*.md")) if p.suffix == ".md"}
    for path in [README, root / "ARCHITECTURE.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        for climbing in re.findall(r"(?<![\w./])(?:\.\./)+\w[\w./-]*", text):
            assert root in (path.parent / climbing).resolve().parents, (path, climbing)
        for doc in set(re.findall(r"[\w/-]+\.md\b", text)):
            assert Path(doc).name in ours, (path, doc)


def test_readme_api_example_runs_in_a_recipe_dir(tmp_path, monkeypatch, capsys):
    """The API example, as written, in a recipe dir holding a (tiny, random) exp/asr_train_mtla,
    a short utt.flac and a meeting.flac of espeak-ng speech with pauses."""
    import numpy as np
    import soundfile

    from test_api import make_exp
    from espnet_mtla.data.speech_synth import Voice, check_espeak, speak

    check_espeak()
    block = next(b for b in python_blocks() if "load_model(" in b)
    assert len(block.strip().splitlines()) == 5
    exp = make_exp(tmp_path, "asr")
    monkeypatch.chdir(exp.parent.parent)
    exp.rename(exp.with_name("asr_train_mtla"))
    voice = Voice("en-us", "m3", 160, 50)
    soundfile.write("utt.flac", speak("the cat sees the red ball", voice), 16000)
    pause = np.zeros(16000, dtype=np.float32)
    sentences = ["my brother cleans a new book", "our teacher paints the white door", "his friend carries a chair"]
    soundfile.write("meeting.flac", np.concatenate([pause] + [x for t in sentences for x in (speak(t, voice), pause)]),
                    16000)
    exec(compile(block, str(README), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(sentences)  # the utterance, then one line per segment
    times = [tuple(map(float, line.split()[:2])) for line in lines[1:]]
    assert times == sorted(times) and all(start < end for start, end in times)
