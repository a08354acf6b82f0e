"""What the chapters share for showing things: the package's own source, rendered in the page.

STYLE: a chapter derives an idea inline, then shows the package's real source, rendered from the
module (never pasted), so the book and the package cannot drift apart.
"""

from __future__ import annotations

import inspect

from IPython.display import Markdown


def show_source(obj) -> Markdown:
    """The source of a function, class or module of the package, as a highlighted code block.

        show_source(modernbert_mini.rope.apply_rope)
    """
    obj = getattr(obj, "_init_fn", obj)  # a torch custom op (flash.py): the function it was made from
    path = inspect.getsourcefile(obj) or "?"
    where = path[path.rfind("modernbert_mini"):] if "modernbert_mini" in path else path
    source = inspect.getsource(obj).rstrip()
    return Markdown(f"`{where}`\n\n```python\n{source}\n```")


def file_figure(**kwargs):
    """A matplotlib Figure outside pyplot, for a plot the package writes to a file.

    It leaves pyplot and its backend alone, so a notebook that runs `train.train` or
    `finetune.compare` goes on showing its own figures. kwargs: Figure's (figsize=...).
    """
    from matplotlib.figure import Figure

    return Figure(**kwargs)
