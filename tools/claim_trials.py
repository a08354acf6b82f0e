"""Show that a chapter's checked statements can fail: change the outputs one reads, and it turns.

    python tools/claim_trials.py              # every trial, one at a time (about 5 minutes)
    python tools/claim_trials.py --only 04 05 # some chapters
    python tools/claim_trials.py --list       # the trials, without running them
    python tools/claim_trials.py --control    # the same copies unchanged: each prints its committed value

A chapter prints "checked statements" (`blocked memory grows 1.4x to 2.5x per doubling: True`),
computed from the numbers its cell measured. A statement that prints True whatever the numbers say
checks nothing. Each trial below takes one statement, copies its chapter to a temporary folder,
keeps the cells up to and including the statement's cell, inserts a few lines into that cell that
change the data the statement reads as a real regression could (the trial says which), and runs
the copy in a fresh kernel, as tools/run_notebooks.py runs a chapter (on the CPU, with
MODERNBERT_MINI_ONEDNN=0). It passes when the committed output prints the value the trial expects
and the changed run prints the other one (`--control` runs the copies unchanged, to show that they
print the committed value and the mutation is what turns it). The chapters are only read, never
written.

A trial finds its cell by a piece of the cell's source (`anchor`), not by its index: markdown cells
come and go. tests/test_claim_trials.py checks, without running anything, that every anchor and
statement is still where its trial expects it.
"""

import argparse
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
KERNELS = {"MODERNBERT_MINI_ONEDNN": "0"}  # as tools/run_notebooks.py executes the chapters


@dataclasses.dataclass(frozen=True)
class Trial:
    notebook: str     # file name in chapters/
    anchor: str       # a piece of the target code cell's source, found in no other code cell
    statement: str    # the printed line up to ": True" / ": False"
    expected: bool    # what the committed output prints
    before: str       # a piece of the one line of the target cell that the mutation goes before
    mutation: str     # the lines inserted there, at that line's indentation
    stands_for: str   # the regression the mutation plays, in plain English

    @property
    def chapter(self) -> str:
        return self.notebook[:2]


TRIALS = [
    Trial("00_how_to_use.ipynb",
          anchor="the two texts about counting are the closer pair",
          statement="the two texts about counting are the closer pair", expected=True,
          before="cosine = mm.similarity(",
          mutation="embeddings = embeddings[[0, 2, 1]]",
          stands_for="mm.embed returns the vectors in another order than the texts "
                     "(sorted by length for unpadding and never put back)"),
    Trial("01_tokenizer.ipynb",
          anchor="toy corpus: no merge saves more than the merge before it",
          statement="toy corpus: no merge saves more than the merge before it", expected=True,
          before="toy_saved = [corpus_length(a)",
          mutation="""\
              right_count_pairs = count_pairs
              count_pairs = lambda corpus: Counter({p: -n for p, n in right_count_pairs(corpus).items()})
              toy_merges, toy_history = train_bpe(word_counts, num_merges=20)
              count_pairs = right_count_pairs""",
          stands_for="train_bpe merges the rarest pair first (its max turned into a min)"),
    Trial("02_rope.ipynb",
          anchor="constant along each diagonal",
          statement="score grid: (64, 64) | constant along each diagonal", expected=True,
          before="score_grid = Q @ K.T",
          mutation="K = rope_from_scratch(k_vec.expand(64, 64), positions, 160_000.0)",
          stands_for="keys rotated with another theta than the queries (a local layer's keys "
                     "given the global layer's table): the score depends on where, not how far"),
    Trial("03_geglu.ipynb",
          anchor="GeGLU, 2 units (10 weights), set by hand",
          statement="GeGLU, 2 units (10 weights), set by hand: max |error| < 1e-6", expected=True,
          before="# the errors of a fit move",
          mutation="""\
              a_rows, gate_rows = W_i_product.chunk(2)
              swapped = torch.cat([gate_rows, a_rows])
              geglu_error = (geglu_mlp(points, swapped, W_o_product) - product).abs().max()""",
          stands_for="GeGLU reads the two halves of W_i the other way round (GELU on the gate), "
                     "as a checkpoint loaded with its halves swapped would"),
    Trial("04_attention.ipynb",
          anchor="the blocked memory line crosses dense+mask",
          statement="the blocked memory line crosses dense+mask between 2048 and 4096 tokens",
          expected=True,
          before="# what the text below reads from the table, as statements",
          mutation='megabytes["local, blocked"] = [1.1 * m for m in megabytes["local, dense + mask"]]',
          stands_for="blocked local attention needs the dense S x S mask's memory and a bit more "
                     "(as if it built the full mask before cutting blocks out of it)"),
    Trial("05_block.ipynb",
          anchor="post-norm's ratio more than 100 times pre-norm's",
          statement="ModernBERT init, pre-norm: the last layer's gradient more than 100 times "
                    "the first's", expected=False,
          before="for (init, name), ratio in ratios.items():",
          mutation='ratios["ModernBERT", "pre-norm"] = ratios["ModernBERT", "post-norm"]',
          stands_for="pre-norm's gradient shrinks towards the first layer as post-norm's does "
                     "(a LayerNorm left on the residual path)"),
    Trial("06_unpadding.ipynb",
          anchor="sorted: less padding than random order",
          statement="sorted: less padding than random order at every batch size from 2 on, "
                    "in every distribution", expected=True,
          before="short = (",
          mutation='shares["functions", "sorted"][4] = shares["functions", "random"][4]',
          stands_for="sorting by length leaves the functions' batches of 16 as padded as "
                     "random order (a tie where sorting should win)"),
    Trial("07_flash_attention.ipynb",
          anchor="online vs softmax(scores) @ values",
          statement="online vs softmax(scores) @ values, largest |difference| < 1e-5",
          expected=True,
          before="exact = torch.softmax(scores, dim=0) @ values",
          mutation="out, lse, history = online_softmax_attention(scores[:-8], values[:-8], tile=8)",
          stands_for="the tile loop stops one tile early (an off-by-one in its bound): the last "
                     "8 keys never reach the output"),
    Trial("08_model.ipynb",
          anchor="decoder tied to the token embedding",
          statement="decoder tied to the token embedding", expected=True,
          before='print("decoder tied to the token embedding:"',
          mutation="base.decoder.weight = torch.nn.Parameter(base.decoder.weight.clone())",
          stands_for="the decoder gets its own copy of the token embedding (the tie lost, as "
                     "with a loader that replaces the parameter)"),
    Trial("09_stableadamw.ipynb",
          anchor="10 steps, largest |ours - torch.optim.AdamW|",
          statement="10 steps, largest |ours - torch.optim.AdamW| < 1e-12 (float64)",
          expected=True,
          before='print("10 steps,',
          mutation="""\
              p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
              for t, g in enumerate(grads, start=2):
                  p, m, v = adamw_step(p, g, m, v, t, lr=1e-2, weight_decay=0.1)""",
          stands_for="our AdamW counts its steps from 2 (an off-by-one in the bias correction)"),
    Trial("10_pretraining.ipynb",
          anchor="same targets as the hand-written rule",
          statement="same targets as the hand-written rule", expected=True,
          before="inputs, labels = mlm.mask_tokens(ids, **args",
          mutation='args["rate"] = 0.15',
          stands_for="mask_tokens chooses 15% of the tokens (BERT's rate), not ModernBERT's 30%"),
    Trial("11_finetuning.ipynb",
          anchor="max |difference| < 1e-5: {bool((theirs - ours)",
          statement="max |difference| < 1e-5", expected=True,
          before='print("embeddings:", tuple(theirs.shape)',
          mutation="ours = mm.embed(bi_encoder.encoder, tokenizer, texts, normalize=False, truncation=True)",
          stands_for="mm.embed ignores normalize=True: its vectors are not of length 1, as the "
                     "saved sentence-transformers model's are"),
    Trial("12_efficiency.ipynb",
          anchor="varlen: ours (both rows) need less peak memory",
          statement="varlen: ours (both rows) need less peak memory than the reference",
          expected=True,
          before='print("varlen: ours (both rows) more than 1.5x',
          mutation='row["varlen", mini]["memory_ratio"] = 1.25',
          stands_for="our unpadded forward needs 25% more peak memory than the reference on the "
                     "varlen batch (as if it kept a padded copy of the activations)"),
]


class TrialError(Exception):
    """A trial that cannot run: its notebook, anchor, line or statement is not where it says."""


def printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def find_cell(trial: Trial, nb) -> int:
    """The index of the one code cell whose source holds trial.anchor, once."""
    found = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and trial.anchor in cell.source]
    if len(found) != 1 or nb.cells[found[0]].source.count(trial.anchor) != 1:
        raise TrialError(f"{trial.notebook}: anchor {trial.anchor!r} found in {len(found)} code "
                         "cells; it must be found once, in one")
    return found[0]


def statement_value(trial: Trial, output: str) -> bool:
    """The True or False printed right after `statement: ` on its one line of the output."""
    values = [match.group(1) for line in output.splitlines()
              if (match := re.match(re.escape(trial.statement) + r": (True|False)\b", line.strip()))]
    if len(values) != 1:
        raise TrialError(f"{trial.notebook}: statement {trial.statement!r} followed by ': True' or "
                         f"': False' found on {len(values)} lines of the output; it must be one")
    return values[0] == "True"


def mutate(trial: Trial, source: str) -> str:
    """The cell's source with the mutation inserted before the line that holds trial.before."""
    lines = source.splitlines()
    found = [i for i, line in enumerate(lines) if trial.before in line]
    if len(found) != 1 or source.count(trial.before) != 1:
        raise TrialError(f"{trial.notebook}: {trial.before!r} found {source.count(trial.before)} "
                         "times in the target cell; it must be found once")
    at = found[0]
    indent = lines[at][:len(lines[at]) - len(lines[at].lstrip())]
    inserted = textwrap.indent(textwrap.dedent(trial.mutation).strip("\n"), indent).splitlines()
    return "\n".join(lines[:at] + inserted + lines[at:])


def prepare(trial: Trial, mutated: bool = True):
    """Check the trial against the committed notebook; return it cut after the (mutated) target cell."""
    path = CHAPTERS / trial.notebook
    if not path.is_file():
        raise TrialError(f"{trial.notebook}: no such notebook in {CHAPTERS}")
    nb = nbformat.read(path, as_version=4)
    index = find_cell(trial, nb)
    target = nb.cells[index]
    committed = statement_value(trial, printed(target))
    if committed != trial.expected:
        raise TrialError(f"{trial.notebook}: the committed output prints {trial.statement!r}: "
                         f"{committed}, the trial expects {trial.expected}")
    changed = mutate(trial, target.source)  # checks the line it goes before, also for a control
    if mutated:
        target.source = changed
    nb.cells = nb.cells[:index + 1]
    return nb, committed


def run(trial: Trial, mutated: bool = True, timeout: int = 600) -> tuple[bool, bool | str, float]:
    """Execute the copy; return (committed value, the value it printed or the error, seconds)."""
    nb, committed = prepare(trial, mutated)
    folder = Path(tempfile.mkdtemp(prefix=f"claim-trial-{trial.chapter}-"))
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": str(folder)}})
        start = time.perf_counter()
        try:
            client.execute()
            value = statement_value(trial, printed(nb.cells[-1]))
        except (CellExecutionError, CellTimeoutError, DeadKernelError, TrialError) as error:
            last_line = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()[-1]
            value = f"error: {last_line}"  # the exception, without its colours
        return committed, value, time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NN", help="chapters to run, e.g. 04 05")
    parser.add_argument("--list", action="store_true", help="print the trials, run nothing")
    parser.add_argument("--control", action="store_true",
                        help="run the copies without the mutations: each must print its committed value")
    args = parser.parse_args()
    trials = [t for t in TRIALS if not args.only or t.chapter in args.only]
    if not trials:
        sys.exit(f"no trial for chapters {args.only}; there are: {sorted({t.chapter for t in TRIALS})}")
    if args.list:
        for t in trials:
            print(f"{t.chapter}  {t.statement}: {t.expected}\n    stands for: {t.stands_for}\n"
                  f"    inserted before {t.before!r}:\n{textwrap.indent(textwrap.dedent(t.mutation), ' ' * 8)}")
        return 0
    problems = []
    for t in trials:  # every anchor and statement in place before anything runs
        try:
            prepare(t)
        except TrialError as error:
            problems.append(str(error))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # committed outputs come from the CPU
    os.environ.update(KERNELS)  # the kernels inherit it
    failed, start = 0, time.perf_counter()
    for t in trials:
        committed, value, seconds = run(t, mutated=not args.control)
        ok = value == (committed if args.control else not committed)
        failed += not ok
        print(f"{t.chapter} | {t.statement} | committed {committed} | "
              f"{'control' if args.control else 'mutated'} {value} | {seconds:.0f} s | "
              f"{'PASS' if ok else 'FAIL'}", flush=True)
    print(f"{len(trials) - failed} of {len(trials)} trials pass, "
          f"{time.perf_counter() - start:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
