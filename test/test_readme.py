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
