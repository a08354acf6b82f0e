"""The README's quickstart runs as a user pastes it: its python blocks, in order, in one fresh
process, in an empty folder, with the Hugging Face hub switched off (HF_HUB_OFFLINE=1)."""

import os
import re
import subprocess
import sys

from conftest import ROOT

README = ROOT / "README.md"


def quickstart_code(text: str) -> str:
    """The ```python blocks of the "## Quickstart" section, joined in order."""
    section = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Quickstart' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert blocks, "the quickstart has no ```python block"
    return "\n".join(blocks)


def test_quickstart_code_finds_the_blocks():
    text = "## Quickstart\n```python\na = 1\n```\ntext\n```bash\nls\n```\n```python\nb = 2\n```\n## Next\n```python\nc\n```\n"
    assert quickstart_code(text) == "a = 1\n\nb = 2\n"


def test_the_quickstart_runs(tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart_code(README.read_text()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "' range'" in out  # fill-mask's guesses
    assert re.search(r"\{'label': '(code|prose)', 'score'", out), out  # the pipeline reads our labels
    assert "tensor(True)" in out  # sentence-transformers gives the package's embeddings
    assert (tmp_path / "code-or-prose" / "tokenizer.json").is_file()
