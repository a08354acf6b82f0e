"""Downstream tasks that work offline, with their baselines (chapter 11).

ModernBERT is judged on classification (GLUE) and retrieval (BEIR, and code search with
CodeSearchNet and StackQA). Both kinds can be built offline, with honest labels, from the
functions of the Python standard library, extracted with `ast`:

- `package_classification()`: which stdlib package does this function come from? The text is
  the function's source; the label is its top-level package (asyncio, email, tkinter, ...).
- `code_search()`: the query is the first line of a function's docstring, the document the
  function with its docstring removed; each test query must find its own function among all
  test functions (MRR@10, nDCG@10, recall@1, recall@10), as in CodeSearchNet.

Both split by source file with the corpus's rule (`data.is_heldout`): test examples come only
from held-out files, which the pretraining split never contains either, and any test example
whose text also occurs in training is dropped. Baselines: TF-IDF + logistic regression
(`tfidf_logreg_baseline`) and BM25 (`bm25_baseline`, the `bm25s` library). When online,
`load_glue` fetches GLUE through `datasets`.

Fine-tuning (`finetuning_data`) holds some training files out to choose settings on
(`holdout_validation`) and drops every training example that the model, reading max_len tokens,
would see exactly as a scored one (`drop_overlap`).

A dense retriever (`finetune.BiEncoder`) is scored here too: `top_k` ranks its (Q, D) scores,
`mean_cosine` measures how far its embeddings are from pointing all one way (anisotropy). A
hybrid fuses it with BM25: the two score matrices, each z-normalised per query and weighted
(`fuse_scores`, the weight chosen on validation queries, `choose_fusion_weight`); or their
rankings by reciprocal rank fusion (Cormack et al., 2009): score(d) = sum over rankings of
1 / (k + rank(d)), k = 60, which throws the scores away (`reciprocal_rank_fusion`).
"""

from __future__ import annotations

import ast
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from . import data
from .tokenizer import to_sequences

# classification: a package is a class when it has at least this many examples in each split;
# each class is then capped so that no package dominates
MIN_TRAIN_PER_CLASS, MIN_TEST_PER_CLASS = 50, 20
MAX_TRAIN_PER_CLASS, MAX_TEST_PER_CLASS = 400, 100
VALIDATION_PERCENT = 8  # of the training files (about 15% of the examples): where settings are chosen
MIN_FUNCTION_LINES = 3  # shorter functions (`def close(self): pass`) say nothing
MIN_QUERY_WORDS = 3
FUNCTIONS_FORMAT = 1  # bump when extract_functions changes
RRF_K = 60  # reciprocal rank fusion's constant, as in Cormack et al. (2009)
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax")


# ---------------------------------------------------------------------------------------------
# Functions of the standard library
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Function:
    path: str  # file under the stdlib, "asyncio/events.py"
    name: str  # qualified name, "AbstractEventLoop.run_forever"
    source: str  # decorators, def line and body, dedented
    docstring: str  # cleaned (inspect.cleandoc), "" when there is none
    code: str  # `source` without its docstring; "" when it has none or it cannot be cut out

    @property
    def package(self) -> str | None:
        """The top-level package ("asyncio"), None for a single-module file ("json.py" is not)."""
        return self.path.split("/")[0] if "/" in self.path else None

    @property
    def split(self) -> str:
        return "test" if data.is_heldout(self.path) else "train"


class _FunctionCollector(ast.NodeVisitor):
    """Module- and class-level functions (methods included), not functions inside functions."""

    def __init__(self):
        self.scope: list[str] = []
        self.found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def visit_ClassDef(self, node: ast.ClassDef):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node):
        # no generic_visit: a function nested in this one is part of this one's source
        self.found.append((".".join([*self.scope, node.name]), node))

    visit_AsyncFunctionDef = visit_FunctionDef


def extract_functions(source: str, path: str) -> list[Function]:
    """Every module- and class-level function of a Python source file, in file order."""
    lines = source.splitlines(keepends=True)
    collector = _FunctionCollector()
    collector.visit(ast.parse(source))
    functions = []
    for name, node in collector.found:
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if lines[first - 1][: node.col_offset].strip():  # e.g. "class A: def f(self): ..."
            continue
        functions.append(Function(
            path=path, name=name,
            source=_dedent(lines[first - 1: node.end_lineno], node.col_offset),
            docstring=ast.get_docstring(node) or "",
            code=_without_docstring(node, lines, first),
        ))
    return functions


def _without_docstring(node, lines: list[str], first: int) -> str:
    """The function's lines with the docstring's lines cut out, or "" if that is not clean."""
    if ast.get_docstring(node) is None or len(node.body) < 2:
        return ""  # no docstring, or nothing but the docstring
    doc = node.body[0]
    before = lines[doc.lineno - 1].encode()[: doc.col_offset]  # ast counts columns in bytes
    after = lines[doc.end_lineno - 1].encode()[doc.end_col_offset:]
    if before.strip() or after.strip():  # the docstring shares a line with other code
        return ""
    kept = lines[first - 1: doc.lineno - 1] + lines[doc.end_lineno: node.end_lineno]
    return _dedent(kept, node.col_offset)


def _dedent(lines: list[str], indent: int) -> str:
    """Take the def line's indentation off every line. (textwrap.dedent would take off nothing
    when a single comment sits at column 0, and the method would not parse on its own.)"""
    return "".join(line[min(indent, len(line) - len(line.lstrip(" \t"))):] for line in lines)


def stdlib_functions(*, cache_dir=None, root=None, rebuild: bool = False) -> list[Function]:
    """The functions of every code document in the corpus (both splits), in corpus order.

    Parsing the whole library takes a few seconds, so the result is cached next to the corpus.
    """
    cache = data.cache_path(f"-functions-v{FUNCTIONS_FORMAT}.jsonl", cache_dir, root)
    if not rebuild and cache.is_file():
        return [Function(**row) for row in data.read_jsonl(cache)]
    functions = []
    for doc in data.load_corpus(kind="code", root=root):
        try:
            functions += extract_functions(doc.text, doc.id)
        except SyntaxError:  # e.g. a file written for another Python version
            continue
    data.write_jsonl(cache, map(asdict, functions))
    return functions


def _unique(examples: list, *keys) -> list:
    """Examples in order, dropping any whose key (key(example) for each key) was seen before."""
    seen = [set() for _ in keys]
    kept = []
    for example in examples:
        values = [key(example) for key in keys]
        if any(v in s for v, s in zip(values, seen)):
            continue
        for v, s in zip(values, seen):
            s.add(v)
        kept.append(example)
    return kept


def _train_test(functions: list[Function], *keys) -> tuple[list[Function], list[Function]]:
    """Split by file; dedup within each split, then drop test examples whose keys occur in train."""
    train = _unique([f for f in functions if f.split == "train"], *keys)
    test = _unique([f for f in functions if f.split == "test"], *keys)
    in_train = [{key(f) for f in train} for key in keys]
    test = [f for f in test if not any(key(f) in s for key, s in zip(keys, in_train))]
    return train, test


def fixed_sample(functions: list, cap: int, salt: str = "") -> list:
    """At most `cap` functions (or examples: anything with a path and a name), a fixed
    pseudo-random choice (stable hash order; another salt, another choice), in input order."""
    chosen = set(sorted(functions, key=lambda f: data.stable_hash(f"{salt}{f.path}:{f.name}"))[:cap])
    return [f for f in functions if f in chosen]


# ---------------------------------------------------------------------------------------------
# Task 1: which package is this function from?
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelledText:
    text: str
    label: int
    path: str
    name: str


@dataclass(frozen=True)
class ClassificationTask:
    labels: tuple[str, ...]
    train: tuple[LabelledText, ...]
    test: tuple[LabelledText, ...]
    validation: tuple[LabelledText, ...] = ()  # files held out of train to choose settings on


def package_classification(*, cache_dir=None, root=None) -> ClassificationTask:
    """Predict a function's top-level stdlib package from its source.

    Candidates: functions of at least 3 non-blank lines that live in a package (not a single
    module file). A package becomes a class when it has >= 50 train and >= 20 test examples;
    each class is then capped at 400 train and 100 test examples (a fixed choice), so the classes
    are roughly balanced. Labels are sorted by name; examples come grouped by label (shuffle
    them before training with SGD).
    """
    candidates = [f for f in stdlib_functions(cache_dir=cache_dir, root=root)
                  if f.package is not None and _non_blank_lines(f.source) >= MIN_FUNCTION_LINES]
    train, test = _train_test(candidates, lambda f: f.source)
    by_class = {"train": defaultdict(list), "test": defaultdict(list)}
    for f in train + test:
        by_class[f.split][f.package].append(f)
    labels = tuple(sorted(p for p in by_class["train"]
                          if len(by_class["train"][p]) >= MIN_TRAIN_PER_CLASS
                          and len(by_class["test"][p]) >= MIN_TEST_PER_CLASS))

    def examples(split: str, cap: int) -> tuple[LabelledText, ...]:
        return tuple(LabelledText(f.source, label, f.path, f.name)
                     for label, package in enumerate(labels)
                     for f in fixed_sample(by_class[split][package], cap))

    return ClassificationTask(labels, examples("train", MAX_TRAIN_PER_CLASS),
                              examples("test", MAX_TEST_PER_CLASS))


def _non_blank_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def classification_metrics(true_labels: Sequence[int], predicted: Sequence[int],
                           per_item: bool = False) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean over classes of F1, so small classes count as much); with
    per_item=True also "per_item": each test item's outcome, "1" right or "0" wrong,
    space-separated (what a bootstrap over test items resamples: `results.bootstrap_interval`)."""
    from sklearn.metrics import accuracy_score, f1_score

    scores = {"accuracy": float(accuracy_score(true_labels, predicted)),
              "macro_f1": float(f1_score(true_labels, predicted, average="macro"))}
    if per_item:
        scores["per_item"] = " ".join(str(int(t == p)) for t, p in zip(true_labels, predicted))
    return scores


def tfidf_logreg_baseline(task: ClassificationTask, per_item: bool = False) -> dict[str, float]:
    """TF-IDF over words (identifiers split), then logistic regression; scores on the test split.

    Chosen by 5-fold cross-validation on the training split, grouped by file (unigrams beat
    bigrams and plain identifiers; C=10 beat C=1). The saga solver gives lbfgs's answer in a
    tenth of the time here.
    """
    data.require("sklearn", "tfidf_logreg_baseline", package="scikit-learn")  # a clear error
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(analyzer=code_words, sublinear_tf=True, min_df=2),
        LogisticRegression(C=10.0, solver="saga", max_iter=2000, random_state=0),
    )
    model.fit([e.text for e in task.train], [e.label for e in task.train])
    predicted = model.predict([e.text for e in task.test])
    return classification_metrics([e.label for e in task.test], predicted, per_item)


# ---------------------------------------------------------------------------------------------
# Task 2: code search
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchPair:
    query: str  # the first line of the docstring
    code: str  # the function without its docstring
    path: str
    name: str


@dataclass(frozen=True)
class RetrievalTask:
    train: tuple[SearchPair, ...]
    test: tuple[SearchPair, ...]  # query i's one relevant document is test[i].code
    validation: tuple[SearchPair, ...] = ()  # files held out of train to choose settings on


def first_line(docstring: str) -> str:
    return next((line.strip() for line in docstring.splitlines() if line.strip()), "")


def code_search(*, cache_dir=None, root=None) -> RetrievalTask:
    """Find a function from the first line of its docstring (CodeSearchNet-style).

    Pairs: functions whose docstring can be cut out cleanly, that have code besides it, and whose
    docstring's first line has >= 3 words. Within a split a query or a code text occurs once;
    test pairs whose query or code occurs in train are dropped.
    """
    candidates = [f for f in stdlib_functions(cache_dir=cache_dir, root=root)
                  if f.code and len(first_line(f.docstring).split()) >= MIN_QUERY_WORDS]
    train, test = _train_test(candidates, lambda f: first_line(f.docstring), lambda f: f.code)

    def pairs(functions):
        return tuple(SearchPair(first_line(f.docstring), f.code, f.path, f.name) for f in functions)

    return RetrievalTask(pairs(train), pairs(test))


def retrieval_metrics(ranked: Iterable[Sequence[int]], k: int = 10,
                      per_item: bool = False) -> dict[str, float]:
    """MRR@k, nDCG@k, recall@1 and recall@k when query i's only relevant document is document i;
    with per_item=True also "per_item": each query's rank of its document, 0 where it is not in
    the top k, space-separated (what a bootstrap over test items resamples:
    `results.bootstrap_interval`).

    ranked[i] lists document indices for query i, best first (at least k of them). With one
    relevant document found at rank r <= k, nDCG@k is 1 / log2(r + 1) (its ideal DCG is 1).
    """
    reciprocal_ranks, gains, hits_at_1, hits_at_k = [], [], [], []
    for i, documents in enumerate(ranked):
        top = list(documents[:k])
        rank = top.index(i) + 1 if i in top else None
        reciprocal_ranks.append(1.0 / rank if rank else 0.0)
        gains.append(1.0 / math.log2(rank + 1) if rank else 0.0)
        hits_at_1.append(rank == 1)
        hits_at_k.append(rank is not None)
    n = len(reciprocal_ranks)
    scores = {f"mrr@{k}": sum(reciprocal_ranks) / n, f"ndcg@{k}": sum(gains) / n,
              "recall@1": sum(hits_at_1) / n, f"recall@{k}": sum(hits_at_k) / n}
    if per_item:
        scores["per_item"] = " ".join(str(round(1 / r)) if r else "0" for r in reciprocal_ranks)
    return scores


def bm25_baseline(task: RetrievalTask, k: int = 10, per_item: bool = False) -> dict[str, float]:
    """BM25 (the `bm25s` library) over words, English stopwords removed; scores on the test split.

    Identifiers are split into words (`code_words`), so "Return the event loop" can match
    `get_event_loop`: on Python 3.11 that lifts MRR@10 from 0.30 (bm25s's own word pattern) to 0.42.
    """
    return retrieval_metrics(bm25_rankings(task, k), k, per_item)


def bm25_rankings(task: RetrievalTask, k: int = 10) -> list[list[int]]:
    """BM25's top k test documents for each test query, best first (as `bm25_baseline` scores
    them; a hybrid retriever fuses them with another ranking)."""
    retriever, queries = _bm25([p.code for p in task.test], [p.query for p in task.test])
    ranked, _ = retriever.retrieve(queries, k=min(k, len(task.test)), show_progress=False,
                                   n_threads=1)
    return ranked.tolist()


def bm25_scores(queries: Sequence[str], documents: Sequence[str]):
    """BM25's score of every document for every query: a (Q, D) numpy array, the scores that
    `bm25_rankings` sorts (for fusing with a dense retriever's scores)."""
    import numpy as np

    retriever, tokenized = _bm25(documents, queries)
    return np.stack([retriever.get_scores(words) for words in tokenized])


def _bm25(documents: Sequence[str], queries: Sequence[str]):
    """A bm25s index of the documents' words (`code_words`, English stopwords out), and the
    queries' words."""
    bm25s = data.require("bm25s", "bm25_baseline")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([" ".join(code_words(d)) for d in documents], stopwords="en",
                                   show_progress=False), show_progress=False)
    return retriever, bm25s.tokenize([" ".join(code_words(q)) for q in queries], stopwords="en",
                                     show_progress=False, return_ids=False)


# ---------------------------------------------------------------------------------------------
# The tasks as fine-tuning uses them: a validation split, no scored example in training
# ---------------------------------------------------------------------------------------------

def holdout_validation(examples: Sequence, percent: int = VALIDATION_PERCENT) -> tuple[list, list]:
    """Split training examples by file, with the corpus's rule and its own salt
    (`data.is_heldout(path, salt="validation:")`): (train, validation). Settings are chosen on
    the validation part, never on the test split."""
    held = [data.is_heldout(e.path, salt="validation:", percent=percent) for e in examples]
    return ([e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h])


def finetuning_data(tokenizer: Tokenizer, max_len: int, validation: bool = False,
                    retrieval_max_len: int | None = None,
                    ) -> tuple[ClassificationTask, RetrievalTask]:
    """The two offline tasks as the experiment uses them: train on .train, choose on
    .validation, score on .test.

    .validation is some of the training split's files (`holdout_validation`), .train the rest;
    .test is the task's own test split (the baselines score the same examples), and from .train
    go the examples the model would see exactly as a scored one (`drop_overlap`).
    validation=True scores on .validation instead (.test is then those files), so that the real
    test split is not looked at while choosing.
    """
    out = []
    for task, cut in ((package_classification(), max_len),
                      (code_search(), retrieval_max_len or max_len)):
        train, held = holdout_validation(task.train)
        task = replace(task, train=tuple(train), validation=tuple(held))
        if validation:
            task = replace(task, test=tuple(held))
        out.append(drop_overlap(task, tokenizer, cut))
    return out[0], out[1]


def example_texts(example: LabelledText | SearchPair) -> list[str]:
    """What the model reads of an example: its text, or a search pair's query and code."""
    return [example.text] if isinstance(example, LabelledText) else [example.query, example.code]


def drop_overlap(task, tokenizer: Tokenizer, max_len: int):
    """The task without the training examples that the model, reading max_len tokens, would see
    exactly as it sees a scored one: texts that differ only after the cut are one example to it.
    (The task keeps distinct texts apart; cut to 128 tokens, two `distutils` `link` methods meet.)"""
    def cut(examples):
        texts = [t for e in examples for t in example_texts(e)]
        return [tuple(s.tolist()) for s in to_sequences(tokenizer, texts, max_len, overflow="truncate")]
    scored = set(cut(task.test))
    per = len(example_texts(task.train[0]))
    seen = cut(task.train)
    kept = [e for i, e in enumerate(task.train) if scored.isdisjoint(seen[i * per:(i + 1) * per])]
    return replace(task, train=tuple(kept))


# ---------------------------------------------------------------------------------------------
# Scoring a dense retriever, and fusing it with BM25
# ---------------------------------------------------------------------------------------------

def top_k(scores: torch.Tensor, k: int) -> list[list[int]]:
    """For each row of scores (Q, D), the k best columns, best first."""
    return scores.topk(min(k, scores.shape[1]), dim=-1).indices.tolist()


def mean_cosine(embeddings: torch.Tensor) -> float:
    """The mean cosine similarity between two different rows of (N, H) embeddings: near 0 when
    they spread over the space, near 1 when they all point one way (anisotropy)."""
    if embeddings.dim() != 2 or len(embeddings) < 2:
        raise ValueError(f"embeddings must be (N, H) with N >= 2, got {tuple(embeddings.shape)}")
    unit = F.normalize(embeddings.double(), dim=-1)
    total = unit.sum(0)  # sum over pairs i != j of u_i . u_j = |sum u|^2 - N
    n = len(unit)
    return float((total @ total - n) / (n * (n - 1)))


def fuse_scores(dense: torch.Tensor, lexical: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * z(dense) + (1 - weight) * z(lexical), each score matrix (Q, D) z-normalised per
    query (its row's mean 0, standard deviation 1), so that the two scales can be added."""
    if dense.shape != lexical.shape or dense.dim() != 2:
        raise ValueError(f"dense {tuple(dense.shape)} and lexical {tuple(lexical.shape)} must "
                         "both be (queries, documents)")
    if not 0 <= weight <= 1:
        raise ValueError(f"weight={weight!r} is invalid: must be in [0, 1]")

    def z(scores):
        scores = scores.double()
        return (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp(min=1e-12)
    return weight * z(dense) + (1 - weight) * z(lexical)


FUSION_WEIGHTS = tuple(i / 10 for i in range(11))


def choose_fusion_weight(dense: torch.Tensor, lexical: torch.Tensor,
                         metric: Callable[[list[list[int]]], float],
                         weights: Sequence[float] = FUSION_WEIGHTS) -> tuple[float, dict]:
    """The weight of `fuse_scores` with the best metric(rankings) on these (validation) queries,
    the first of the best on a tie; and the metric of every weight tried."""
    tried = {w: metric(top_k(fuse_scores(dense, lexical, w), 10)) for w in weights}
    best = max(tried.values())
    return next(w for w in weights if tried[w] == best), tried


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Sequence[int]]], k: int = RRF_K,
                           depth: int | None = None) -> list[list[int]]:
    """Fuse several rankings of the same queries: score(d) = sum_r 1 / (k + rank_r(d)).

    rankings[r][q] lists the documents ranker r returns for query q, best first (rank 1 is the
    first); a document a ranker did not return gets nothing from it. Returns, per query, the
    documents by fused score, best first (ties: the smaller document index first), at most
    `depth` of them (None: all that any ranker returned).
    """
    if not rankings:
        raise ValueError("rankings is empty: fusion needs at least one ranking")
    if len({len(r) for r in rankings}) != 1:
        raise ValueError(f"rankings cover different numbers of queries: {[len(r) for r in rankings]}")
    if not (isinstance(k, (int, float)) and k >= 0):
        raise ValueError(f"k={k!r} is invalid: must be a number >= 0")
    fused = []
    for per_query in zip(*rankings):
        scores: dict[int, float] = {}
        for documents in per_query:
            for position, document in enumerate(documents):
                scores[document] = scores.get(document, 0.0) + 1.0 / (k + position + 1)
        best = sorted(scores, key=lambda d: (-scores[d], d))
        fused.append(best if depth is None else best[:depth])
    return fused


# ---------------------------------------------------------------------------------------------
# Words for the baselines
# ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def code_words(text: str) -> list[str]:
    """Lowercased words, identifiers split too: "getEventLoop(self, new_loop)" ->
    ['get', 'event', 'loop', 'self', 'new', 'loop']."""
    return [w.lower() for w in _WORD.findall(text)]


# ---------------------------------------------------------------------------------------------
# Online: GLUE
# ---------------------------------------------------------------------------------------------

def load_glue(name: str, split: str | None = None):
    """A GLUE task through `datasets` (online only), e.g. load_glue("sst2", "validation")."""
    if name not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; choose one of {GLUE_TASKS}")
    datasets = data.require("datasets", "load_glue (online only)")
    return datasets.load_dataset("nyu-mll/glue", name, split=split)
