"""Every committed figure shows something, and names what it draws (issue 32).

The figures are the PNG outputs (`image/png`) of the chapters' code cells. A PNG does not say
where its axes are or what its legend holds, so the checks are rules of thumb, stated here:

- **Not one colour.** No figure is (almost) a single colour overall: at most 98% of its pixels
  share one colour.
- **No blank panel.** A panel is found by its frame: a rectangle of dark lines (matplotlib's
  spines) at least 100 pixels on each side. A panel whose inside is at least 90% one pale tinted
  colour (every channel 235 or more, but not the page's pure white) is blank: that is what a
  heatmap looks like when it is drawn from a constant array without `vmin`/`vmax`, in a colormap
  that starts pale (`Blues`, `Greys`, ...), as in chapter 6's "naive concatenation" panel. A
  panel filled with a dark colour (chapter 4's "global layer: every key") passes, and so does a
  plot's own white background. A blank panel in a colormap that starts dark would pass; the rule
  does not catch it.
- **The caption names the legend.** Legends cannot be read back from a PNG. A figure cell may
  record the labels its legend draws in its metadata (`"legend": ["label", ...]`, next to
  `mystnb`); each recorded label must then appear, word for word (case and spacing aside), in
  the figure's caption. Chapters 1 to 4 record theirs.
"""

import base64
import io
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

MOST_OF_ONE_COLOUR = 0.98  # of a whole figure
BLANK_PANEL = 0.90  # of a panel's inside, in one pale tinted colour
MIN_SIDE = 100  # pixels: a panel's frame is at least this long on every side
DARK = 110  # a frame pixel: every channel below this


def figures():
    """(chapter stem, cell index, cell, decoded RGB array) of every committed PNG output."""
    found = []
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            for output in cell.outputs:
                png = output.get("data", {}).get("image/png")
                if png:
                    image = Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")
                    found.append((path.stem, i, cell, np.asarray(image)))
    return found


FIGURES = figures()
IDS = [f"{stem}-cell{i}" for stem, i, _, _ in FIGURES]


def runs(line, min_len):
    """(start, end) of every run of True in a 1-D bool array at least min_len long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]])))
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_len]


def panels(rgb):
    """(top, bottom, left, right) of each rectangle framed by dark lines: the axes."""
    dark = rgb.max(-1) < DARK
    edges = [(y, a, b) for y in range(dark.shape[0]) for a, b in runs(dark[y], MIN_SIDE)]
    found = []
    for top, left, right in edges:
        for bottom, left2, right2 in edges:
            if bottom - top < MIN_SIDE or abs(left - left2) > 3 or abs(right - right2) > 3:
                continue
            left_side = dark[top:bottom, max(left - 1, 0):left + 2].any(1).mean()
            right_side = dark[top:bottom, right - 2:right + 1].any(1).mean()
            if left_side > 0.9 and right_side > 0.9:
                if not any(abs(top - t) <= 4 and abs(left - l) <= 4 for t, _, l, _ in found):
                    found.append((top, bottom, left, right))
                break
    return found


def commonest(pixels):
    """The commonest colour of an (N, 3) array of pixels, and the share of pixels it takes."""
    packed = (pixels[:, 0].astype(np.int64) << 16) | (pixels[:, 1].astype(np.int64) << 8) | pixels[:, 2]
    values, counts = np.unique(packed, return_counts=True)
    top = values[counts.argmax()]
    return np.array([top >> 16, (top >> 8) & 255, top & 255]), counts.max() / counts.sum()


def pale_share(rgb, panel):
    """The share of a panel's inside taken by its commonest colour, if that colour is pale and
    tinted (not pure white); else 0."""
    top, bottom, left, right = panel
    colour, share = commonest(rgb[top + 4:bottom - 3, left + 4:right - 3].reshape(-1, 3))
    if colour.min() < 235 or (colour == 255).all():
        return 0.0
    return share


@pytest.mark.parametrize("stem, index, cell, rgb", FIGURES, ids=IDS)
def test_a_figure_is_not_one_colour(stem, index, cell, rgb):
    _, share = commonest(rgb.reshape(-1, 3))
    assert share <= MOST_OF_ONE_COLOUR, f"{stem} cell {index}: {share:.0%} of the figure is one colour"


@pytest.mark.parametrize("stem, index, cell, rgb", FIGURES, ids=IDS)
def test_no_panel_is_blank(stem, index, cell, rgb):
    for panel in panels(rgb):
        share = pale_share(rgb, panel)
        top, bottom, left, right = panel
        assert share < BLANK_PANEL, (
            f"{stem} cell {index}: the panel at x {left}-{right}, y {top}-{bottom} pixels is "
            f"{share:.0%} one pale colour: a heatmap drawn without vmin/vmax?")


def test_the_panel_finder_finds_panels():
    """The rule above is only as good as the frames it finds: a figure of several heatmaps must
    give its panels (chapter 4's two masks)."""
    masks = [rgb for stem, i, cell, rgb in FIGURES if stem == "04_attention" and
             "global layer: every key" in cell.source]
    assert masks and len(panels(masks[0])) == 2


def normal(text):
    return re.sub(r"\s+", " ", text).strip().lower()


@pytest.mark.parametrize("stem, index, cell, rgb", FIGURES, ids=IDS)
def test_the_caption_names_every_recorded_legend_label(stem, index, cell, rgb):
    labels = cell.metadata.get("legend")
    if labels is None:
        pytest.skip("no legend recorded")
    caption = normal(cell.metadata["mystnb"]["figure"]["caption"])
    missing = [label for label in labels if normal(label) not in caption]
    assert not missing, f"{stem} cell {index}: the caption does not name {missing}"
