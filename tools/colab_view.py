"""Give a chapter's markdown the form that reads the same in the book and on Colab, in place.

    .venv/bin/python tools/colab_view.py chapters/10_pretraining.ipynb [more notebooks ...]

Readers open the chapters on Google Colab, which renders Markdown, not MyST: a role or a directive
shows there as raw text. Jupyter Book renders plain Markdown and raw HTML too, so each MyST-only
construct becomes a form that both render:

- a citation, {cite}`key1,key2`, becomes plain text linked to the work:
  ([Warner et al., 2024](https://arxiv.org/abs/2412.13663); [...](...)), the names, year and
  address taken from book/references.bib (every entry has a `url`); {cite:t} gives
  [Warner et al. (2024)](...); a citation that opens a parenthesis gets no second one;
- a folded block (```{dropdown} Title, :::{dropdown}, or an admonition with `:class: dropdown`)
  becomes raw HTML, `<details>`, `<summary>Title</summary>`, a blank line (without it Markdown
  inside is not rendered), the content as it was, a blank line, `</details>`;
- the Colab badge's image, ../book/_static/colab-badge.svg (a relative path Colab cannot load),
  becomes a data: URI of book/_static/colab-badge.png, which loads in both places with no
  network. A PNG, not the SVG: MyST's Markdown parser (markdown-it) accepts data: URIs of PNG,
  GIF, JPEG and WebP images only, and leaves `![...](data:image/svg+xml...)` as raw text. The PNG
  is drawn from the SVG's shapes (`--draw-badge` redraws it after the SVG changes).

What MyST keeps outside the Markdown gets a Markdown copy, generated here and nowhere else:

- a figure's caption lives in its code cell's metadata (`mystnb.figure.caption`), which the book
  renders under the figure and Colab never shows: after each figure cell comes a markdown cell
  "**Figure.** <the caption>", tagged `remove-cell` (the book skips it; Colab and Jupyter ignore
  tags and show it) and `colab-caption` (the prose guard reads the caption once, as a caption);
- the book's bibliography is a page of its own, which a notebook opened on Colab cannot link to:
  the chapter ends with "## References", the works its Markdown links to, in the order it first
  cites them, each with its title and address, and a pointer to book/references.bib in the
  repository (the address from _config.yml).

Code cells, their sources and outputs stay as they are, so committed outputs stay valid. The
notebook is written as tools/run_notebooks.py writes it (nbformat, indent 1), and only when
something changed; running it again changes nothing. What it does not
know how to convert (another role or directive) it leaves and prints: tests/test_colab_view.py
fails on it, so it is decided by hand.
"""

import base64
import codecs
import re
import sys
from functools import cache
from pathlib import Path

import latexcodec  # noqa: F401  (registers the "ulatex" codec)
import nbformat
import pybtex.database
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "book" / "references.bib"
BADGE_SVG = ROOT / "book" / "_static" / "colab-badge.svg"
BADGE_PNG = BADGE_SVG.with_suffix(".png")
BADGE_PATH = "../book/_static/colab-badge.svg"  # how the chapters pointed at it
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
CAPTION_TAG = "colab-caption"  # a figure's caption as Markdown: Colab shows it, the book skips it
REFERENCES = "## References"  # the heading of the chapter's last cell, which this file writes
LINK = re.compile(r"\]\((https?://[^)\s]+)\)")

CITE = re.compile(r"\{cite(?::(\w+))?\}`([^`]+)`")
OPEN = re.compile(r"^(\s*)(`{3,}|:{3,})\s*\{(dropdown|admonition)\}\s*(.*?)\s*$")
OPTION = re.compile(r"^\s*:([\w-]+):\s*(.*?)\s*$")
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*(.*?)\s*$")
# what Colab shows raw: a role, a directive, a target; used by tests/test_colab_view.py
MYST_ONLY = {
    "role": re.compile(r"(?<![\\\w])\{[a-z][\w:+-]*\}`[^`]*`"),
    "directive": re.compile(r"^\s*(?:`{3,}|~{3,}|:{3,})\s*\{[\w:-]+\}", re.M),
    "target": re.compile(r"^\s*\([\w:-]+\)=\s*$", re.M),
    "equation label": re.compile(r"\$\$\s*\([\w:-]+\)\s*$", re.M),
}


@cache
def bibliography():
    """key -> (the names to cite it by, year, url, title), from book/references.bib."""
    entries = {}
    for key, entry in pybtex.database.parse_file(str(BIB)).entries.items():
        last = [plain(" ".join(p.prelast_names + p.last_names)) for p in entry.persons["author"]]
        others = last[-1] == "others"
        last = [n for n in last if n != "others"]
        names = (f"{last[0]} et al." if len(last) > 2 or others else " and ".join(last))
        entries[key] = (names, entry.fields["year"], entry.fields["url"],
                        plain(entry.fields["title"]))
    return entries


def plain(latex):
    """'H{\\"a}gele' -> 'Hägele', '{Gemma Team}' -> 'Gemma Team'."""
    return codecs.decode(latex, "ulatex").replace("{", "").replace("}", "")


def citation(match):
    textual, keys = match[1] == "t", [k.strip() for k in match[2].split(",")]
    bib = bibliography()
    missing = [k for k in keys if k not in bib]
    if missing:
        raise KeyError(f"{missing} not in {BIB.relative_to(ROOT)}")
    if textual:
        return "; ".join(f"[{bib[k][0]} ({bib[k][1]})]({bib[k][2]})" for k in keys)
    cited = "; ".join(f"[{bib[k][0]}, {bib[k][1]}]({bib[k][2]})" for k in keys)
    inside = match.string[:match.start()].endswith("(")  # "({cite}`a`, following ...)"
    return cited if inside else f"({cited})"


def badge_uri():
    return "data:image/png;base64," + base64.b64encode(BADGE_PNG.read_bytes()).decode()


def draw_badge():
    """Draw book/_static/colab-badge.png, pixel for pixel the size of the SVG, from its rects,
    circles and text (all the SVG holds), with matplotlib."""
    import xml.etree.ElementTree as ET

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyBboxPatch

    svg = ET.parse(BADGE_SVG).getroot()
    ns, px = "{http://www.w3.org/2000/svg}", 72 / 100  # points per pixel at dpi 100
    w, h = float(svg.get("width")), float(svg.get("height"))
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1), xlim=(0, w), ylim=(h, 0))
    ax.set_axis_off()
    for e in svg:
        a = {k: float(v) if re.fullmatch(r"[\d.]+", v) else v for k, v in e.attrib.items()}
        if e.tag == ns + "rect":
            ax.add_patch(FancyBboxPatch((a.get("x", 0), a.get("y", 0)), a["width"], a["height"],
                                        f"round,pad=0,rounding_size={a.get('rx', 0)}",
                                        facecolor=a["fill"], edgecolor="none"))
        elif e.tag == ns + "circle":
            ax.add_patch(Circle((a["cx"], a["cy"]), a["r"], fill=False, edgecolor=a["stroke"],
                                linewidth=a["stroke-width"] * px))
        elif e.tag == ns + "text":
            ax.text(a["x"], a["y"], e.text, color=a["fill"], fontsize=a["font-size"] * px,
                    family="DejaVu Sans", ha="center", va="baseline")
    fig.savefig(BADGE_PNG, transparent=True, metadata={"Software": None})
    plt.close(fig)


def fold(source):
    """Each dropdown (or admonition with the dropdown class) as <details>; others left as they are."""
    lines, out, i = source.split("\n"), [], 0
    while i < len(lines):
        m = OPEN.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, fence, name, title = m.groups()
        j, options = i + 1, {}
        while j < len(lines) and OPTION.match(lines[j]):
            options.update([OPTION.match(lines[j]).groups()])
            j += 1
        if name == "admonition" and "dropdown" not in options.get("class", "").split():
            out.append(lines[i])  # a plain admonition: no fold to make (reported, not converted)
            i += 1
            continue
        body, inner = [], None  # inner: the fence of a code block inside, if open
        while j < len(lines):
            f = FENCE.match(lines[j])
            if inner:
                if f and f[1][0] == inner[0] and len(f[1]) >= len(inner) and not f[2]:
                    inner = None
            elif f and f[1][0] == fence[0] and len(f[1]) >= len(fence) and not f[2]:
                break  # the directive's own closing fence
            elif f and f[2]:
                inner = f[1]
            body.append(lines[j])
            j += 1
        else:
            raise ValueError(f"unclosed {{{name}}} directive: {lines[i]!r}")
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        summary = title or name.capitalize()
        out += [f"{indent}<details>", f"{indent}<summary>{summary}</summary>", "", *body, "",
                f"{indent}</details>"]
        i = j + 1
    return "\n".join(out)


def convert_source(source):
    source = CITE.sub(citation, source)
    source = fold(source)
    return source.replace(f"]({BADGE_PATH})", f"]({badge_uri()})")


def leftovers(source):
    """(kind, text) of each MyST-only construct left in a markdown source, math and code removed."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$", " ", source, flags=re.S)
    found = [(kind, m[0].strip()) for kind, rx in MYST_ONLY.items() for m in rx.finditer(text)]
    found += [("relative image", m[1]) for m in re.finditer(r"!\[[^\]]*\]\(([^)\s]+)", text)
              if not re.match(r"(data:|https?://)", m[1])]
    return found


def caption_source(caption):
    return f"**Figure.** {convert_source(caption)}"


def references_source(nb):
    """The chapter's works, in the order its Markdown first links to them, as a Markdown list."""
    by_url = {url: (names, year, url, title) for names, year, url, title in bibliography().values()}
    cited = dict.fromkeys(url for cell in nb.cells if cell.cell_type == "markdown"
                          and not cell.source.startswith(REFERENCES)
                          for url in LINK.findall(cell.source) if url in by_url)
    items = [f"- [{names} ({year})]({url}). *{title}*." for names, year, url, title in
             map(by_url.get, cited)]
    intro = ("The works this page cites, in the order it first cites them. The book's bibliography "
             "lists every work the chapters cite (its source: "
             f"[book/references.bib]({REPO_URL}/blob/main/book/references.bib)).")
    return "\n".join([REFERENCES, "", intro, "", *items])


def convert_notebook(nb):
    """Convert a notebook in memory; return how many cells were changed, added or removed."""
    before = {(cell.id, cell.source) for cell in nb.cells}
    cells = []
    for cell in nb.cells:
        if CAPTION_TAG in cell.metadata.get("tags", []):
            continue  # written again after its figure below, or gone with the figure's caption
        cells.append(cell)
        if cell.cell_type == "markdown":
            cell.source = convert_source(cell.source)
        caption = cell.metadata.get("mystnb", {}).get("figure", {}).get("caption")
        if cell.cell_type == "code" and caption:
            cells.append(nbformat.v4.new_markdown_cell(
                caption_source(caption), id=f"{cell.id}-caption"[-64:],
                metadata={"tags": ["remove-cell", CAPTION_TAG]}))
    if not (cells[-1].cell_type == "markdown" and cells[-1].source.startswith(REFERENCES)):
        cells.append(nbformat.v4.new_markdown_cell("", id="references"))
    nb.cells = cells
    cells[-1].source = references_source(nb)
    after = {(cell.id, cell.source) for cell in nb.cells}
    return len(after - before) + len({i for i, _ in before} - {i for i, _ in after})


def convert(path):
    """Convert one notebook in place; return how many cells changed, and what is left."""
    nb = nbformat.read(path, as_version=4)
    changed = convert_notebook(nb)
    if changed:
        nbformat.write(nb, path)
    return changed, [(i, *x) for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
                     for x in leftovers(cell.source)]


if __name__ == "__main__":
    paths = sys.argv[1:]
    if paths == ["--draw-badge"]:
        draw_badge()
        print(f"drew {BADGE_PNG.relative_to(ROOT)}")
        sys.exit()
    if not paths:
        sys.exit("usage: .venv/bin/python tools/colab_view.py chapters/NN_name.ipynb ...")
    for path in paths:
        changed, left = convert(path)
        print(f"{path}: {changed} markdown cells converted or written")
        for i, kind, text in left:
            print(f"  cell {i}: left as it is ({kind}): {text[:80]}")
