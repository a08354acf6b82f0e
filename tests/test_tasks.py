"""tasks.py: the offline downstream tasks are deterministic, never leak test files into training,
and their baselines and metrics give the numbers worked out by hand."""

import ast
import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

from modernbert_mini import data, tasks


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def functions(cache_dir):
    return tasks.stdlib_functions(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def classification(cache_dir, functions):
    return tasks.package_classification(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def search(cache_dir, functions):
    return tasks.code_search(cache_dir=cache_dir)


# --- extracting functions ---------------------------------------------------------------------

SOURCE = '''\
import functools


def plain(a,
          b):
    """Add two numbers.

    Crème brûlée.
    """
    return a + b


class Outer:
    @functools.cache
    def method(self):
        """Cached."""
        def helper():
            return 1
## a comment at column 0 inside a method
        return helper()

    class Inner:
        async def run(self): """Inline docstring."""; return 2

        def only_doc(self):
            """Nothing else."""


def no_doc(x):
    return x
'''


def test_extract_functions_by_hand():
    found = {f.name: f for f in tasks.extract_functions(SOURCE, "pkg/mod.py")}
    assert list(found) == ["plain", "Outer.method", "Outer.Inner.run", "Outer.Inner.only_doc",
                           "no_doc"]
    assert found["plain"].docstring == "Add two numbers.\n\nCrème brûlée."
    assert found["plain"].code == "def plain(a,\n          b):\n    return a + b\n"
    method = found["Outer.method"]
    assert method.source.startswith("@functools.cache\ndef method(self):")  # decorator, dedented
    assert "def helper" in method.code and '"""Cached."""' not in method.code
    assert ast.parse(method.code) and ast.parse(method.source)  # each stands on its own
    assert found["Outer.Inner.run"].code == ""  # docstring shares its line with code
    assert found["Outer.Inner.only_doc"].code == ""  # nothing but a docstring
    assert found["no_doc"].docstring == "" and found["no_doc"].code == ""
    assert found["plain"].package == "pkg"
    assert tasks.Function("json.py", "f", "", "", "").package is None  # a module, not a package


def test_functions_cache_round_trips(functions, cache_dir):
    assert tasks.stdlib_functions(cache_dir=cache_dir) == functions
    assert len(functions) > 5000


# --- classification ---------------------------------------------------------------------------

def test_classification_has_enough_balanced_classes(classification):
    labels = classification.labels
    assert 8 <= len(labels) <= 20 and list(labels) == sorted(labels)
    for split, low, high in (("train", tasks.MIN_TRAIN_PER_CLASS, tasks.MAX_TRAIN_PER_CLASS),
                             ("test", tasks.MIN_TEST_PER_CLASS, tasks.MAX_TEST_PER_CLASS)):
        examples = getattr(classification, split)
        for label, package in enumerate(labels):
            count = sum(e.label == label for e in examples)
            assert low <= count <= high, (split, package, count)
            assert all(e.path.startswith(package + "/") for e in examples if e.label == label)


def test_classification_test_never_seen_in_training(classification, cache_dir):
    assert_no_leak(classification.train, classification.test, lambda e: e.text, cache_dir)


def test_classification_baseline(classification):
    scores = tasks.tfidf_logreg_baseline(classification)
    assert scores["accuracy"] > 0.4 and scores["macro_f1"] > 0.3  # chance is 1/13
    assert scores == tasks.tfidf_logreg_baseline(classification)  # deterministic


# --- code search ------------------------------------------------------------------------------

def test_search_pairs(search, functions):
    assert len(search.train) > 2000 and len(search.test) > 300
    docstring = {(f.path, f.name, f.code): f.docstring for f in functions}
    for pair in search.test:
        original = docstring[(pair.path, pair.name, pair.code)]
        assert pair.query == tasks.first_line(original) and len(pair.query.split()) >= 3
        node = ast.parse(pair.code).body[0]  # still valid Python without the docstring
        assert ast.get_docstring(node) != original
    assert len({p.query for p in search.test}) == len(search.test)
    assert len({p.code for p in search.test}) == len(search.test)


def test_search_test_never_seen_in_training(search, cache_dir):
    assert_no_leak(search.train, search.test, lambda p: p.code, cache_dir)
    assert {p.query for p in search.train}.isdisjoint(p.query for p in search.test)


def test_search_baseline(search):
    scores = tasks.bm25_baseline(search)
    assert scores["mrr@10"] > 0.25
    assert scores["recall@1"] <= scores["mrr@10"] <= scores["recall@10"]


def assert_no_leak(train, test, text_of, cache_dir):
    """Test files are held out, unseen by pretraining, and no test text is a training text."""
    train_files, test_files = {e.path for e in train}, {e.path for e in test}
    assert train_files.isdisjoint(test_files)
    assert all(data.is_heldout(path) for path in test_files)
    pretraining_files = {d.id for d in data.load_corpus("train")}
    assert pretraining_files.isdisjoint(test_files)
    assert {text_of(e) for e in train}.isdisjoint(text_of(e) for e in test)


# --- determinism ------------------------------------------------------------------------------

DIGEST = textwrap.dedent("""
    import hashlib, sys
    from modernbert_mini import data, tasks
    fresh, cached = sys.argv[1:]
    built = (data.load_corpus(), tasks.package_classification(cache_dir=fresh),
             tasks.code_search(cache_dir=cached))
    print(hashlib.sha256(repr(built).encode()).hexdigest())
""")


def test_same_corpus_and_tasks_in_every_process(classification, search, cache_dir, tmp_path):
    """Built again in processes whose str hashes differ (PYTHONHASHSEED): same corpus and tasks."""
    here = (data.load_corpus(), classification, search)
    expected = hashlib.sha256(repr(here).encode()).hexdigest()
    runs = [subprocess.Popen([sys.executable, "-c", DIGEST, str(tmp_path / seed), str(cache_dir)],
                             env={**os.environ, "PYTHONHASHSEED": seed},
                             stdout=subprocess.PIPE, text=True)
            for seed in ("1", "2")]  # in parallel
    for run in runs:
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0 and output.strip() == expected


# --- metrics by hand --------------------------------------------------------------------------

def test_retrieval_metrics_by_hand():
    ranked = [[0, 1, 2], [0, 1, 2], [1, 0, 2], [0, 1, 2]]  # query 3's document is not in the top 3
    scores = tasks.retrieval_metrics(ranked, k=3)
    # ranks 1, 2, 3, none; nDCG of rank r is 1 / log2(r + 1): 1, 1/log2(3) = 0.6309..., 1/2, 0
    assert scores == pytest.approx({"mrr@3": (1 + 1 / 2 + 1 / 3 + 0) / 4,
                                    "ndcg@3": (1 + 0.6309297535714575 + 1 / 2 + 0) / 4,
                                    "recall@1": 1 / 4, "recall@3": 3 / 4})
    assert tasks.retrieval_metrics(ranked, k=3, per_item=True)["per_item"] == "1 2 3 0"


def test_classification_metrics_by_hand():
    scores = tasks.classification_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    # class 0: precision 1, recall 1/2, F1 2/3; class 1: precision 2/3, recall 1, F1 4/5
    assert scores == pytest.approx({"accuracy": 3 / 4, "macro_f1": (2 / 3 + 4 / 5) / 2})
    assert tasks.classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], per_item=True)["per_item"] == "1 0 1 1"


def test_code_words_split_identifiers():
    assert tasks.code_words("getEventLoop(self, new_loop) -> HTTPServer2") == \
        ["get", "event", "loop", "self", "new", "loop", "http", "server", "2"]


# --- online only ------------------------------------------------------------------------------

def test_glue_without_datasets_says_how_to_install(monkeypatch):
    with pytest.raises(ValueError, match="unknown GLUE task"):
        tasks.load_glue("imdb")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets"):
        tasks.load_glue("sst2")
