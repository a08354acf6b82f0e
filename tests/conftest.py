"""Shared fixtures: the repository root, the table of contents, and the book built once per run."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

# Triton makes its own helpers (tl.max, tl.sum) for the GPU or for its CPU interpreter when it is
# first imported. Without a GPU, import it now in interpreter mode, then put the variable back:
# the tests of the Triton backend switch the interpreter on for themselves (TRITON_INTERPRET=1).
if importlib.util.find_spec("triton") and not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
    import triton  # noqa: F401
    del os.environ["TRITON_INTERPRET"]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def toc_files() -> list[str]:
    """Every document of _toc.yml, in reading order, as paths without extension."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return files


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """Build the book once, the way `make book` does, into a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=1800)
    return result, out / "_build" / "html"
