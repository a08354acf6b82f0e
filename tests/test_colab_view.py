"""A chapter reads cleanly on Colab, which renders Markdown, not MyST (tools/colab_view.py).

Fails on a markdown cell that holds what Colab shows as raw text (a role such as {cite}, a
directive such as {dropdown}, a target, an equation label) and on an image Colab cannot load (a
relative path); fails where a figure's caption (cell metadata, which Colab never shows) has no
Markdown copy under it, or the chapter's closing list of references is not the works it cites;
the Colab badge must be the data: URI of book/_static/colab-badge.png, which in
turn must be the current drawing of the SVG. The converter itself is checked on a made-up cell.
"""

import base64
import importlib.util
import re

import nbformat
import pytest

from conftest import ROOT

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
# Being re-executed while these were converted; run tools/colab_view.py on them, then empty this.
NOT_YET_CONVERTED = ()

spec = importlib.util.spec_from_file_location("colab_view", ROOT / "tools" / "colab_view.py")
colab_view = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab_view)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_markdown_holds_nothing_colab_shows_raw(path):
    if path.name[:2] in NOT_YET_CONVERTED:
        pytest.skip(f"run: .venv/bin/python tools/colab_view.py chapters/{path.name}")
    nb = nbformat.read(path, as_version=4)
    left = [f"cell {i} ({kind}): {text[:80]}" for i, cell in enumerate(nb.cells)
            if cell.cell_type == "markdown" for kind, text in colab_view.leftovers(cell.source)]
    assert not left, ("MyST-only Markdown that Colab shows as raw text (tools/colab_view.py "
                      "converts what it knows):\n" + "\n".join(left))
    assert colab_view.convert_notebook(nb) == 0, \
        f"captions or references out of date: .venv/bin/python tools/colab_view.py chapters/{path.name}"
    badge = re.search(r"\[!\[Open in Colab\]\(([^)\s]+)\)\]", nb.cells[0].source)
    assert badge and badge[1] == colab_view.badge_uri(), \
        "the badge's image must be the data: URI of book/_static/colab-badge.png"


def test_the_badge_png_is_drawn_from_the_svg(tmp_path, monkeypatch):
    """The PNG the chapters embed is what --draw-badge draws from the SVG today."""
    monkeypatch.setattr(colab_view, "BADGE_PNG", tmp_path / "badge.png")
    colab_view.draw_badge()
    import numpy as np
    from PIL import Image
    drawn, kept = (np.asarray(Image.open(p).convert("RGBA"), dtype=int)
                   for p in (tmp_path / "badge.png", ROOT / "book/_static/colab-badge.png"))
    assert drawn.shape == kept.shape == (20, 117, 4)
    # the same within antialiasing (another FreeType may shade the text's edges differently)
    assert (abs(drawn - kept) > 64).mean() < 0.02


def test_the_converter_folds_cites_and_badges_and_is_idempotent():
    source = ("[![Open in Colab](../book/_static/colab-badge.svg)](https://colab.example/x.ipynb)\n\n"
              "ModernBERT {cite}`warner2024modernbert` follows ({cite}`devlin2019bert,su2021roformer`,"
              " and more).\n\n"
              "```{dropdown} Solutions\n1. A list, with $x$ and\n\n   ```python\n   code()\n   ```\n"
              "2. and more.\n```\n\n"
              ":::{admonition} Hint\n:class: dropdown\nFolded.\n:::\n")
    out = colab_view.convert_source(source)
    assert colab_view.convert_source(out) == out
    assert colab_view.leftovers(source) and not colab_view.leftovers(out)
    assert "ModernBERT ([Warner et al., 2024](https://arxiv.org/abs/2412.13663)) follows" in out
    assert ("([Devlin et al., 2019](https://arxiv.org/abs/1810.04805); "
            "[Su et al., 2021](https://arxiv.org/abs/2104.09864), and more)") in out
    assert ("<details>\n<summary>Solutions</summary>\n\n1. A list, with $x$ and\n\n   ```python\n"
            "   code()\n   ```\n2. and more.\n\n</details>") in out
    assert "<details>\n<summary>Hint</summary>\n\nFolded.\n\n</details>" in out
    image = re.search(r"\]\(data:image/png;base64,([^)]+)\)", out)
    assert base64.b64decode(image[1]).startswith(b"\x89PNG")


def test_captions_get_a_markdown_copy_and_the_chapter_its_references():
    """A figure's caption is copied under it (tagged for the book to skip), kept in step with the
    metadata, and removed with it; the references list the works linked, in order, once each."""
    figure = nbformat.v4.new_code_cell("plot()", id="fig1", metadata={"mystnb": {"figure": {
        "caption": "Loss against steps ({cite}`warner2024modernbert`)."}}})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 1. T\n\nSee {cite}`devlin2019bert` and {cite}`warner2024modernbert`."),
        figure, nbformat.v4.new_markdown_cell("Again {cite}`devlin2019bert`.")])
    assert colab_view.convert_notebook(nb) == 4  # the text, the caption, the references; one changed
    copy, references = nb.cells[2], nb.cells[-1]
    assert copy.metadata["tags"] == ["remove-cell", "colab-caption"]
    assert copy.source == ("**Figure.** Loss against steps ([Warner et al., 2024]"
                           "(https://arxiv.org/abs/2412.13663)).")
    items = [line for line in references.source.splitlines() if line.startswith("- ")]
    assert [i.split("]")[0] for i in items] == ["- [Devlin et al. (2019)", "- [Warner et al. (2024)"]
    assert colab_view.REPO_URL + "/blob/main/book/references.bib" in references.source
    assert colab_view.convert_notebook(nb) == 0
    figure.metadata["mystnb"]["figure"]["caption"] = "Another caption."
    assert colab_view.convert_notebook(nb) == 1 and nb.cells[2].source == "**Figure.** Another caption."
    del figure.metadata["mystnb"]
    assert colab_view.convert_notebook(nb) == 1
    assert not any("colab-caption" in c.metadata.get("tags", []) for c in nb.cells)
