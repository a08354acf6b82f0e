r"""Every figure the prose states is shown by an output of the same notebook (issue 21).

Prose: every markdown cell, the solutions in its `<details>` (or ```{dropdown}```) included, and
every figure caption (a code cell's `mystnb.figure.caption`). Skipped: code spans, fenced code,
links, years, version numbers, references ("chapter 4", "cells 20-23", "layer 0"), and exercise
prompts (the "## Exercises" list before its solutions), which propose settings. Math is read too
(see "Math" below).

A figure: a number with a unit (ms, s, min, KiB/MiB/GiB, MB/GB, GFLOP(/s), TFLOP, M/B/T or
"million" for scale, tokens, steps, epochs, parameters, nats), a percentage, a ratio (1.33x, "14
times"), or any number with a decimal point or exponent (a loss 0.177, a rate 4e-3). A bare
integer ("8 sequences") is a setting the reader sees in the code: checked only in captions.

Supported: an output of the notebook (stream, text/plain, text/markdown, text/html) shows a number
the figure is a rounding of, at the prose's precision: 0.08 by 0.078, 16% by 15.5% or 0.155, 2.2x
by 2.18 or 2.18x, 3,504 by 3504, 5.3M by 5,312,000 tokens; not 16% by 16 ms or by an integer 16.
"below 1e-5" is supported by a shown 2.7e-06 (a bound within 10x of what is shown).
A setting (a bare number, tokens, steps, epochs, parameters, a scale, a percentage) may instead
be written in code exactly, not rounded: assigned to a name, keyword or dict key, or looped over
(`lr=4e-3`, `"p": 0.3` for 30%, `for step in (0, 25)`; n - 1 counts for n, the last index of
`range(n)`). A caption may also use any number in the run of code cells ending with its own.
Timings, sizes, FLOPs and ratios are measurements: only outputs support them. A figure worked out
by hand goes in math ($11.0 / 8.0 = 1.38$), where the reader sees the arithmetic.

Math ($...$, $$...$$) holds figures by the same rule (`10^{-5}` is 1e-5, `3.5 \cdot 10^{-6}` is
3.5e-6, `10{,}000` is 10,000, `\%` is %). Arithmetic shown to the reader is its own support: in
`$11.0 / 8.0 = 1.38$` the part after a relation (=, \approx, <, \le, ...) that follows an
expression with an operator and a number is derived, and it supports figures of the same cell. The
operands, and a figure written alone or after a bare relation (`$\text{loss} = 2.81$`), are checked
like prose; besides outputs, any number in the chapter's code cells supports them where a setting
may be supported (a constant of a formula, $\theta = 10{,}000$, `0.999` for beta2). So a measured
figure in math needs an output, as anywhere else.

Figures from elsewhere are marked where they stand (a list item or a table row is a sentence):
- a sentence with a citation, a `{cite}` role or a link to a work of book/references.bib (its
  `url`: the form tools/colab_view.py gives citations), states the cited work's figures, and is not
  checked;
- a sentence naming a committed file in a code span, e.g. "(`modernbert_mini/assets/finetune/
  results.md`)", or another chapter ("chapter 8 prints it") is checked against that file's text
  or that chapter's outputs as well;
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
BIB_URLS = re.findall(r"^\s*url\s*=\s*\{([^}]+)\}", (ROOT / "book/references.bib").read_text(), re.M)
EXTERNAL = re.compile(r"\{cite(?::\w+)?\}|not shown on this page|\]\((?:"
                      + "|".join(map(re.escape, BIB_URLS)) + r")\)", re.I)
ASSIGNED = re.compile(  # a value after "name =", "keyword=", '"key":' or "in": a setting
    rf"(?:(?<![=<>!])=|[\"']\s*:|\bin)\s*[(\[]?\s*((?:{NUM})(?:\s*,\s*(?:{NUM}))*)")
COSMETIC = re.compile(  # a plot's looks are no setting
    r"\b(?:figsize|alpha|lw|linewidth|fontsize|ms|markersize|[xy]lim|dpi|zorder|bbox_to_anchor|"
    r"rotation|[wh]space|pad|width|height)\s*=\s*(?:\([^)]*\)|[\w.]+)")
EXERCISES = re.compile(r"^#+ Exercises\b.*?(?=^```\{dropdown\}|^<details>|^#|\Z)", re.S | re.M)
MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$]+)\$", re.S)
RELATION = re.compile(r"(=|≈|<|>|≤|≥|≠)")
OPERATOR = re.compile(r"[-+*/^√]|\b(?:log|ln|exp)\b|⌈|⌊")
LATEX = [  # LaTeX to plain text, in this order
    (r"\\(?:text|mathrm|mathbf|mathit|operatorname|textrm)\s*\{([^{}]*)\}", r" \1 "),
    (r"(\d)\s*(?:\{,\}|\\,)\s*(?=\d{3})", r"\1,"),  # 10{,}000
    (r"(\d+(?:\.\d+)?)\s*\\(?:cdot|times)\s*10\^\{?([-−]?\d+)\}?", r"\1e\2"),  # 3.5 \cdot 10^{-6}
    (r"(?<![\d.])10\^\{?([-−]?\d+)\}?", r"1e\1"),  # 10^{-5}
    (r"\^(?:\{[^{}]*\}|\S)", " ^ "), (r"_(?:\{[^{}]*\}|\S)", "_"),  # other powers; B_r is no "B"
    (r"\\%", "%"), (r"\\(?:leq?|leqslant)\b", "≤"), (r"\\(?:geq?|geqslant)\b", "≥"),
    (r"\\(?:approx|sim|simeq)\b", "≈"), (r"\\neq?\b", "≠"), (r"\\lt\b", "<"), (r"\\gt\b", ">"),
    (r"\\(?:cdot|times|div)\b", " * "), (r"\\frac\b", " / "), (r"\\sqrt\b", " √ "),
    (r"\\(log|ln|exp)\b", r" \1 "), (r"\\lceil\b", " ⌈ "), (r"\\lfloor\b", " ⌊ "),
    (r"\\[a-zA-Z]+|\\.|[{}&]", " "), (r"\s+", " "),
    (r"(?<![\w.])\d+(?:\.\d+)?\s?(?!e[-+−]?\d)(?=[AC-JLN-SU-Za-wyz](?![A-Za-z]))", " "),  # 4.5H
]


def parse(raw):
    """The value of a number as written, and half its last digit: what its rounding allows."""
    mantissa, _, exponent = raw.replace(",", "").lower().partition("e")
    scale = 10.0 ** int(exponent or 0)
    return float(mantissa) * scale, 0.5 * 10.0 ** -len(mantissa.partition(".")[2]) * scale


def numbers(text):
    """(value, unit, half its last digit) of every number in a text, signs dropped."""
    return [(*parse(m[1]), unit_of(m[2])) for m in re.finditer(rf"({NUM})({UNIT})?", text)]


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
        source = COSMETIC.sub("", source)
        every = [n[0] for n in numbers(source)]
        assigned = [n[0] for group in ASSIGNED.findall(source) for n in numbers(group)]
        code.append((every + [n - 1 for n in every], assigned + [n - 1 for n in assigned]))
    return nb, outputs, code


def prose(nb):
    """(cell index, text, is_caption) for every piece of prose, fenced code dropped."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            caption = cell.metadata.get("mystnb", {}).get("figure", {}).get("caption")
            if caption:
                yield i, caption, True
            continue
        if "colab-caption" in cell.metadata.get("tags", []):
            continue  # the caption above, copied for Colab by tools/colab_view.py
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


def figures(text, bare=False, math=True):
    """(number, unit, bound, where) of each figure in a sentence, code and references removed;
    bound: -1 after "below", "under", "less than", "at most", +1 after "above", "over" and such;
    where: "prose", or for math "operand" or "derived" (after a relation that follows arithmetic)."""
    for raw, unit, bound in plain_figures(SKIP.sub(" ", text), bare):
        yield raw, unit, bound, "prose"
    arithmetic = False
    for m in MATH.finditer(text if math else ""):
        tex = m[1] or m[2]
        for pattern, repl in LATEX:
            tex = re.sub(pattern, repl, tex)
        parts = RELATION.split(tex)
        arithmetic &= not parts[0].strip()  # "$4 \cdot 10^6$ bytes $\approx 16$ MB" goes on
        for k in range(0, len(parts), 2):  # expressions, between the relations
            # the relation before, or the words before the span ("below $10^{-5}$"), for bounds
            words = re.sub(r"[^A-Za-z<>≤≥]", " ", text[max(0, m.start() - 12):m.start()])
            before = parts[k - 1] if k else words
            for raw, unit, bound in plain_figures(before + " " + parts[k], bare):
                yield raw, unit, bound, "derived" if arithmetic else "operand"
            arithmetic |= bool(OPERATOR.search(parts[k]) and re.search(r"\d", parts[k]))


def plain_figures(text, bare):
    for m in FIGURE.finditer(text):
        unit = unit_of(m[3])
        before = text[max(0, m.start() - 12):m.start()].lower()
        bound = (-1 if re.search(r"(below|under|less than|at most|<|≤)\s*$", before) else
                 1 if re.search(r"(above|over|more than|at least|>|≥)\s*$", before) else 0)
        for raw in filter(None, (m[1], m[2])):
            if unit or bare or re.search(r"[.eE]", raw):  # bare integers: captions only
                yield raw, unit, bound


def shows(value, tol, unit, bound, n, half, u):
    """Whether an output number n (written to +-half, with unit u) shows the figure."""
    near = lambda k=1: abs(n - value * k) <= tol * k * (1 + 1e-9)  # noqa: E731
    decimal = half < 0.5  # an integer in an output is too common to support a % or a ratio
    if bound and u in ("", unit) and decimal:  # "below 1e-5": shown within 10x under the bound
        low, high = (n + half, value) if bound < 0 else (value, n - half)
        if low <= high * (1 + 1e-9) and high <= 10 * low:
            return True
    if unit == "%":
        return u == "%" and near() or not u and decimal and near(1e-2)
    if unit in ("x", "times"):  # "9 times" may be a count
        return (u in ("x", "times") or not u and (decimal or unit == "times")) and near()
    if unit in SCALE:
        return u == unit and near() or u in SETTINGS and near(SCALE[unit])
    if not unit:  # a plain decimal: a loss, an accuracy, a rate
        return near() or u == "%" and near(100)
    return u in ("", unit) and near()


def supported(raw, unit, bound, outputs, settings):
    value, tol = parse(raw)
    if any(shows(value, tol, unit, bound, *number) for number in outputs):
        return True
    setting = value / 100 if unit == "%" else value if unit in SETTINGS + tuple(SCALE) else None
    return setting is not None and any(math.isclose(n, setting, rel_tol=1e-12) for n in settings)


def unsupported(path, math=True):
    nb, outputs, code = shown(path)
    constants = [n for every, _ in code for n in every]  # any number in the chapter's code
    found, bad = 0, []
    for i, text, is_caption in prose(nb):
        settings = [n for _, assigned in code for n in assigned]
        if is_caption:  # its block of code cells, and the settings assigned above it
            j = next(j for j in range(i, -1, -1) if j == 0 or nb.cells[j - 1].cell_type != "code")
            settings = [n for k, (every, assigned) in enumerate(code[:i + 1])
                        for n in (every if k >= j else assigned)]
        sentences = [" ".join(s.split()) if math else s for s in SENTENCE.split(text)]  # math wraps
        sentences = [s for s in sentences if not EXTERNAL.search(" ".join(s.split()))]
        derived = [(*parse(raw), unit) for s in sentences
                   for raw, unit, _, where in figures(s, is_caption, math) if where == "derived"]
        for sentence in sentences:
            extra = []
            for name in re.findall(r"`([\w./-]+\.\w+)`", sentence):  # a committed file it names
                if (ROOT / name).is_file():
                    extra += numbers((ROOT / name).read_text(errors="replace"))
            for n in re.findall(r"\bchapters? (\d+)", sentence, re.I):  # another chapter
                extra += [x for p in CHAPTERS if p.name.startswith(f"{int(n):02d}_")
                          for x in shown(p)[1]]
            for raw, unit, bound, where in figures(sentence, is_caption, math):
                found += 1
                if where == "derived":  # the reader sees the arithmetic
                    continue
                known = settings + constants if where == "operand" else settings
                if not supported(raw, unit, bound, outputs + extra + derived, known):
                    flat = " ".join(sentence.split())
                    at = re.search(rf"(?<![\d.,]){re.escape(raw)}(?!\d)", flat)
                    at = max(0, at.start() - 50) if at else 0
                    bad.append(f"cell {i}{' caption' if is_caption else ''}: {raw}"
                               f"{'' if unit in ('%', 'x') else ' '}{unit}".rstrip()
                               + f"{' (in math)' if where == 'operand' else ''}"
                               + f"  | ...{flat[at:at + 120]}...")
    return found, bad


# Being re-executed while math was added to the guard: checked without math; see test_colab_view.py.
NOT_YET_CONVERTED = ()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_prose_figures_are_shown_by_outputs(path):
    found, bad = unsupported(path, math=path.name[:2] not in NOT_YET_CONVERTED)
    assert not bad, (f"{len(bad)} of {found} prose figures are shown by no output "
                     "(see this file's docstring for the markers):\n" + "\n".join(bad))


def test_the_guard_fails_on_a_stale_figure(tmp_path):
    """Figures the output shows pass; the same sentence with stale figures fails; a cited one is
    not checked."""
    output = nbformat.v4.new_output("stream", text="loss 0.1772, padding 15.3%, 2.18x the speed")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print(summary)", outputs=[output]),
        nbformat.v4.new_markdown_cell("The loss is 0.177, padding 15% and the speed 2.2x. "
                                      "The paper's loss is 1.9 {cite}`warner2024modernbert`."),
        nbformat.v4.new_markdown_cell("The loss is 0.19, padding 16% and the speed 2.3x.")])
    nbformat.write(nb, path := tmp_path / "guard.ipynb")
    found, bad = unsupported(path)
    assert found == 6 and [b.split("  |")[0] for b in bad] == ["cell 2: 0.19", "cell 2: 16%",
                                                               "cell 2: 2.3x"]


def test_the_guard_reads_math(tmp_path):
    """Arithmetic shown in math passes (its result, and the result used again in the cell);
    operands come from outputs or the code; a measured figure planted in math fails, alone, as an
    operand, or with a unit; a formula's coefficient ($8.5 H^2$) is no figure."""
    output = nbformat.v4.new_output("stream", text="loss 2.811, step time 11.04 ms, max |diff| 3.1e-07")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("beta2 = 0.999\nprint(summary)", outputs=[output]),
        nbformat.v4.new_markdown_cell(
            "The loss is $\\approx 2.81$, a step $11.0\\ \\text{ms}$, and the difference below "
            "$10^{-6}$. Doubling gives $2 \\times 11.0 = 22.0$ ms, and $22.0 / 4 = 5.5$; "
            "$1/\\sqrt{1 - 0.999} \\approx 31.6$, $\\theta = 10{,}000$, about $8.5 H^2$ weights, "
            "$4 \\cdot 1024^2$ bytes $\\approx 4.2$ MB."),
        nbformat.v4.new_markdown_cell(
            "The loss is $\\approx 2.95$, a step $12.5\\ \\text{ms}$, $\\text{speedup} = 1.7$, and "
            "$2 \\times 13.1 = 26.2$ ms; the difference below $10^{-9}$.")])
    nbformat.write(nb, path := tmp_path / "math.ipynb")
    found, bad = unsupported(path)
    assert [b.split("  |")[0] for b in bad] == [
        "cell 2: 2.95 (in math)", "cell 2: 12.5 ms (in math)", "cell 2: 1.7 (in math)",
        "cell 2: 13.1 (in math)", "cell 2: 1e-9 (in math)"]
    assert unsupported(path, math=False)[1] == []  # what math=False (NOT_YET_CONVERTED) misses
