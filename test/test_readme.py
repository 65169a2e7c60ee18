"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
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
