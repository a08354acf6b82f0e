"""Every chapter follows book/chapter_layout.md: title, Colab badge, install cell, runtime summary."""

import re

import nbformat
import pytest
import yaml

from conftest import ROOT, toc_files

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
REPO = REPO_URL.removeprefix("https://github.com/")


def test_every_toc_page_exists_and_every_chapter_is_in_the_toc():
    files = toc_files()
    for doc in files:
        assert (ROOT / f"{doc}.md").exists() or (ROOT / f"{doc}.ipynb").exists(), doc
    listed = {f for f in files if f.startswith("chapters/")}
    assert {f"chapters/{p.stem}" for p in CHAPTERS} == listed


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_layout(path):
    number = int(re.match(r"(\d\d)_[a-z0-9_]+$", path.stem).group(1))
    nb = nbformat.read(path, as_version=4)
    title, install, summary = nb.cells[:3]

    assert title.cell_type == "markdown"
    assert re.match(rf"# {number}\. \S", title.source), "first line must be '# N. Title'"
    badge = (r"\[!\[Open in Colab\]\([^)\s]+\)\]\(" + re.escape(
        f"https://colab.research.google.com/github/{REPO}/blob/main/chapters/{path.name})"))
    assert re.search(badge, title.source), "the Colab badge must link to this very notebook"
    # that its image loads on Colab too: tests/test_colab_view.py

    assert install.cell_type == "code"
    assert 'if "google.colab" in sys.modules:' in install.source
    assert f"git+{REPO_URL}" in install.source
    assert summary.cell_type == "code" and "runtime.summary()" in summary.source
    assert "nbval-ignore-output" in summary.metadata.get("tags", []), "tag the summary cell"

    imports_transformers = any("import transformers" in c.source or "from transformers" in c.source
                               for c in nb.cells[3:] if c.cell_type == "code")
    if imports_transformers:
        assert "transformers==" in install.source, "the Colab cell must install what the chapter imports"

    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata, "strip widget state (make notebooks does it)"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_nbval_markers_are_tags_and_figures_have_captions(path):
    """Markers for nbval live in the cell tags, so the rendered page does not show them; every
    figure carries a caption and alt text (MyST-NB's mystnb.figure / mystnb.image metadata)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert "NBVAL_" not in cell.source, f"cell {i}: use the nbval-ignore-output tag, not a comment"
        if any("image/png" in o.get("data", {}) for o in cell.outputs):
            options = cell.metadata.get("mystnb", {})
            assert options.get("figure", {}).get("caption"), f"cell {i}: a figure needs a caption"
            assert options.get("image", {}).get("alt"), f"cell {i}: a figure needs alt text"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_was_executed_top_to_bottom_with_a_figure(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "run the notebook once, top to bottom (make notebooks)"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures, "every chapter shows at least one figure"


def test_the_repository_address_lives_in_one_setting():
    """Publishing the book is a one-line change in _config.yml: every Colab badge, install cell,
    README line and setup page that points at the book's repository points at that one address."""
    sources = [ROOT / "README.md", ROOT / "pyproject.toml", *sorted((ROOT / "book").rglob("*.md")),
               *sorted((ROOT / "modernbert_mini").glob("*.py")), *sorted((ROOT / "tools").iterdir())]
    texts = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sources if p.is_file()}
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        texts[f"chapters/{path.name}"] = "\n".join(cell.source for cell in nb.cells)
    others = {"computationalmodelling/nbval", "karpathy/nanoGPT"}  # cited, not the book's repository
    found = 0
    for name, text in texts.items():
        for address in re.findall(r"(?:github\.com|colab\.research\.google\.com/github)/([\w.-]+/[\w.-]+)", text):
            if address in others:
                continue
            found += 1
            assert address == REPO, f"{name} points at github.com/{address}, _config.yml at {REPO}"
    assert found >= 2 * len(CHAPTERS) + 2  # badges, install cells, README


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_was_executed_with_the_kernels_make_test_does_not_check_with(path):
    """`make notebooks` executes with the BLAS's matrix kernels and records it; `make test` checks
    the outputs with oneDNN's. A chapter executed another way would be checked against itself."""
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("executed_with") == {"MODERNBERT_MINI_ONEDNN": "0"}, \
        "execute it with `make notebooks` (tools/run_notebooks.py)"
