"""Every figure the prose states is shown by an output of the same notebook (issue 21).

Prose is every markdown cell, the solutions in its ```{dropdown}``` included, and every figure
caption (a code cell's `mystnb.figure.caption`). Skipped: math ($...$, $$...$$), code spans and
fenced code, links, years, version numbers, references ("chapter 4", "cells 20-23", "layer 0"),
and the exercise prompts (the "## Exercises" list before its dropdown), which propose settings.

A figure is a number with a unit (ms, s, min, KiB/MiB/GiB, MB/GB, GFLOP(/s), TFLOP(/s), M/B/T for
millions/billions/trillions, tokens, steps, epochs, parameters, nats, seconds/minutes/hours), a
percentage, a ratio (1.33x, "14 times"), or any number with a decimal point or exponent (a loss
0.177, a bound 1e-5). A bare integer ("8 sequences", "base has 22 layers") is a setting a reader
sees in the code, and is not checked in markdown; in a caption every number is checked.

Supported means some output of the notebook (stream text, text/plain, text/markdown, text/html)
shows a number that the figure is a rounding of, at the prose's precision: 0.08 by 0.078, 16% by
15.5% or 0.155, 2.2x by 2.18, 3,504 by 3504, 5.3M by 5,312,000. A percentage needs an output shown
as a percentage or with a decimal point, an "x" ratio one shown as a ratio ("16x the length") or
with a decimal point: bare integers in outputs are too common to count.
A setting (a count of tokens, steps, epochs or parameters, a percentage, a unitless decimal, any
number of a caption) may instead be written in code, exactly, not rounded, comments not counting:
4e-3 by `lr=4e-3`, 30% by `0.3`. For markdown any code cell counts. A caption describes the code
that made its figure: the run of code cells that ends with its own, and the values assigned above
it (`LR = 2e-3`, `warmup_steps=50`, `"p": 0.3`, `for step in (0, 25)`), not any stray argument.
Timings, sizes, FLOPs and ratios are measurements: only outputs support them. A figure the prose
works out by hand goes in math ($11.0 / 8.0 = 1.38$), where the reader sees the arithmetic.

Figures from elsewhere are marked where they stand (a list item or a table row is a sentence):
- a sentence with a `{cite}` role states the cited work's figures, and is not checked;
- a sentence that names a committed file in a code span, e.g. "(`modernbert_mini/assets/finetune/
  results.md`)", is checked against that file's text as well as the outputs;
- a sentence that names another chapter ("chapter 8 prints it") is checked against that chapter's
  outputs as well;
- a sentence that says "not shown on this page" (our measurement, made elsewhere) is not checked.
Nothing else exempts a figure: "in the committed run" or "in our runs" names no source.
"""

import math
import re
from functools import cache
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+−]?\d+)?"
UNIT = (r"%|[x×](?!\w)|\s?(?:[GTM]FLOP(?:/s)?|[KMG]iB|[MG]B|ms|s|min)\b|[KMBT]\b|\s[MBT]\b(?!-)|"
        r"\s(?:times|tokens?|steps?|epochs?|parameters|nats|seconds?|minutes?|hours?|"
        r"thousand|million|billion|trillion)\b")
SAME = {"×": "x", "token": "tokens", "step": "steps", "epoch": "epochs", "seconds": "s",
        "second": "s", "minutes": "min", "minute": "min", "hour": "hours", "thousand": "K",
        "million": "M", "billion": "B", "trillion": "T"}
SCALE = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
SETTINGS = ("", "tokens", "steps", "epochs", "parameters")  # units a setting may carry, and %
FIGURE = re.compile(rf"(?<![\w.,/-])({NUM})(?:\s?(?:-|–|to)\s?({NUM}))?({UNIT})?(?![\w.]\d)")
SKIP = re.compile(
    r"\$\$.*?\$\$|\$[^$\n]+\$|`[^`]*`|https?://\S+|\]\([^)]*\)|<[^>]+>"  # math, code, links, html
    r"|\b(?:chapters?|cells?|sections?|layers?|exercises?|solutions?|parts?|figures?|tables?|"
    r"equations?|lines?|rows?|rank|seed|Python|torch|PyTorch|transformers|CUDA|version|v)"
    r"\s+\d[\d.]*(?:\s*(?:,|-|–|and|or|to)\s*\d[\d.]*)*"  # references and versions
    r"|\b(?:19|20)\d\d\b(?!\s?(?:tokens|steps|%|x))|\d+\.\d+\.\d+\S*",  # years, x.y.z
    re.S | re.I)
SENTENCE = re.compile(r"(?<=[.!?:;])\s+(?=[A-Z(*_])|\n(?=\s*(?:[-*+|]|\d+\.)\s)|\n\s*\n")
EXTERNAL = re.compile(r"\{cite(?::\w+)?\}|not shown on this page", re.I)
ASSIGNED = re.compile(rf"(?:(?<![=<>!])=|[\"']\s*:|\bin)\s*[(\[]?\s*((?:{NUM})(?:\s*,\s*(?:{NUM}))*)")
EXERCISES = re.compile(r"^#+ Exercises\b.*?(?=^```\{dropdown\}|^#|\Z)", re.S | re.M)


def numbers(text):
    """(value, unit, has a decimal point) of every number in a text, signs and thousands
    separators dropped."""
    return [(float(m[1].replace(",", "")), unit_of(m[2]), bool(re.search(r"[.eE]", m[1])))
            for m in re.finditer(rf"({NUM})({UNIT})?", text)]


def unit_of(text):
    return SAME.get((text or "").strip(), (text or "").strip())


@cache
def shown(path):
    """The numbers the outputs of a notebook show, and per cell the numbers its code writes, all
    of them and those assigned (to a name, a keyword or a dict key, or looped over)."""
    nb = nbformat.read(path, as_version=4)
    outputs, code = [], []
    for cell in nb.cells:
        text = []
        for out in cell.get("outputs", []):
            text.append("".join(out.get("text", "")))
            text += ["".join(out.get("data", {}).get(mime, ""))
                     for mime in ("text/plain", "text/markdown", "text/html")]
        outputs += numbers(re.sub(r"<[^>]+>", " ", "\n".join(text)))
        source = re.sub(r"#.*", "", cell.source) if cell.cell_type == "code" else ""
        code.append(([n[0] for n in numbers(source)],
                     [n[0] for group in ASSIGNED.findall(source) for n in numbers(group)]))
    return nb, outputs, code


def prose(nb):
    """(cell index, text, is_caption) for every piece of prose, fenced code dropped."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            caption = cell.metadata.get("mystnb", {}).get("figure", {}).get("caption")
            if caption:
                yield i, caption, True
            continue
        kept, fence = [], None  # fence: the open code fence, if any
        for line in EXERCISES.sub("", cell.source).splitlines():
            m = re.match(r"\s*(`{3,}|~{3,})\s*(\S*)", line)
            if fence:
                fence = None if m and m[1].startswith(fence) and not m[2] else fence
            elif m and (m[2] and not m[2].startswith("{") or m[2] in ("{code-cell}", "{math}")):
                fence = m[1]
            elif not m:
                kept.append(line)
        yield i, "\n".join(kept), False


def figures(text, bare=False):
    """(number, unit) of each figure in a sentence, math, code and references removed."""
    for m in FIGURE.finditer(SKIP.sub(" ", text)):
        unit = unit_of(m[3])
        for raw in filter(None, (m[1], m[2])):
            if unit or bare or re.search(r"[.eE]", raw):  # bare integers: captions only
                yield raw, unit


def supported(raw, unit, outputs, settings):
    mantissa, _, exponent = raw.replace(",", "").lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    scale = 10.0 ** int(exponent or 0)
    value, tol = float(mantissa) * scale, 0.5 * 10.0 ** -decimals * scale
    near = lambda n, k=1: abs(n - value * k) <= tol * k * (1 + 1e-9)  # noqa: E731
    for n, u, decimal in outputs:
        if (unit == "%" and (u == "%" and near(n) or not u and decimal and near(n, 1e-2))
                or unit == "x" and (u in ("x", "times") or not u and decimal) and near(n)
                or unit == "times" and u in ("x", "times", "") and near(n)  # a count, a ratio
                or unit in SCALE and (u == unit and near(n) or not u and near(n, SCALE[unit]))
                or unit and u in ("", unit) and near(n)
                or not unit and (near(n) or u == "%" and near(n, 100))):
            return True
    setting = value / 100 if unit == "%" else value if unit in SETTINGS else None
    return any(math.isclose(n, setting, rel_tol=1e-12) for n in settings if setting is not None)


def unsupported(path):
    nb, outputs, code = shown(path)
    found, bad = 0, []
    for i, text, is_caption in prose(nb):
        settings = [n for every, _ in code for n in every]
        if is_caption:  # its block of code cells, and the settings assigned above it
            j = next(j for j in range(i, -1, -1) if j == 0 or nb.cells[j - 1].cell_type != "code")
            settings = [n for k, (every, assigned) in enumerate(code[:i + 1])
                        for n in (every if k >= j else assigned)]
        for sentence in SENTENCE.split(text):
            if EXTERNAL.search(sentence):
                continue
            extra = []
            for name in re.findall(r"`([\w./-]+\.\w+)`", sentence):  # a committed file it names
                if (ROOT / name).is_file():
                    extra += numbers((ROOT / name).read_text(errors="replace"))
            for n in re.findall(r"\bchapters? (\d+)", sentence, re.I):  # another chapter
                extra += [x for p in CHAPTERS if p.name.startswith(f"{int(n):02d}_")
                          for x in shown(p)[1]]
            for raw, unit in figures(sentence, bare=is_caption):
                found += 1
                if not supported(raw, unit, outputs + extra, settings):
                    where = f"cell {i}{' caption' if is_caption else ''}"
                    bad.append(f"{where}: {raw}{unit}  | {' '.join(sentence.split())[:120]}")
    return found, bad


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_prose_figures_are_shown_by_outputs(path):
    found, bad = unsupported(path)
    assert not bad, (f"{len(bad)} of {found} prose figures are shown by no output "
                     "(see this file's docstring for the markers):\n" + "\n".join(bad))
