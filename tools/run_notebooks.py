"""Execute chapter notebooks in place, the way `make notebooks` does, and time each one.

    python tools/run_notebooks.py chapters/*.ipynb

Each notebook runs top to bottom in a fresh kernel from its own folder, on the CPU, with the BLAS's
matrix kernels (`MODERNBERT_MINI_ONEDNN=0`), and its metadata records that. `make test` checks the
outputs with the other family (oneDNN's reordered weights, `=1`): an output that moves with the
order of a matrix product's sums fails on the developer's own machine, not on a reader's CPU
(tests/test_chapter_layout.py checks that every chapter was executed this way). The widget
state that ipywidgets leaves in the metadata is stripped: the book renders the static figure next
to each widget, and widget state would make it load JavaScript from the network.
"""

import os
import sys
import time

import nbformat
from nbclient import NotebookClient


def strip_widget_state(nb: nbformat.NotebookNode) -> None:
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


KERNELS = {"MODERNBERT_MINI_ONEDNN": "0"}  # what the committed outputs are executed with


def run(path: str, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    strip_widget_state(nb)
    nb.metadata["executed_with"] = dict(KERNELS)
    nbformat.write(nb, path)
    return seconds


if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # committed outputs come from the CPU
    os.environ.update(KERNELS)  # the kernels inherit it
    paths = sys.argv[1:]
    if not paths:
        sys.exit("usage: python tools/run_notebooks.py chapters/NN_name.ipynb ...")
    for path in paths:
        print(f"{path}: {run(path):.1f} s", flush=True)
