"""data.py: the offline stdlib corpus, its shipped snapshot and its fixed split, on a hand-made
library and on the real one."""

import gzip
import hashlib
import json
import sys

import pytest

from modernbert_mini import data


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.fixture
def fake_stdlib(tmp_path):
    """A small library laid out like the real one, with everything the corpus must leave out."""
    root = tmp_path / "lib"
    write(root / "a.py", "def f():\n    return 1\n")
    write(root / "dup.py", "def f():\n    return 1\n")  # an exact copy of a.py
    write(root / "empty.py", "")
    write(root / "pkg" / "__init__.py", "\n")
    write(root / "pkg" / "b.py", "x = 'é'  # UTF-8\n")
    write(root / "latin.py", "# -*- coding: latin-1 -*-\ns = 'caf\xe9'\n".encode("latin-1"))
    write(root / "notes.txt", "Some prose.\n")
    write(root / "broken.txt", b"\xff\xfe not utf-8 \xff")
    write(root / "pydoc_data" / "topics.py",
          "topics = {'if': 'The if statement', 'assert': 'The assert statement'}\n")
    for left_out in ("pkg/tests/test_b.py", "test/test_x.py", "site-packages/numpy.py",
                     "encodings/cp1252.py", "config-3.11-x86_64-linux-gnu/python-config.py",
                     "_sysconfigdata__linux_x86_64-linux-gnu.py", "lib2to3/Grammar.txt",
                     "__pycache__/a.py"):
        write(root / left_out, f"left_out = {left_out!r}\n")
    return root


def test_corpus_rules_on_a_hand_made_library(fake_stdlib):
    docs = data.build_corpus(fake_stdlib)
    assert [(d.id, d.kind) for d in docs] == [
        ("a.py", "code"),  # dup.py is the same text: kept once, under the first id
        ("latin.py", "code"),
        ("notes.txt", "prose"),
        ("pkg/b.py", "code"),
        ("pydoc_data/topics.py#assert", "prose"),
        ("pydoc_data/topics.py#if", "prose"),
    ]
    texts = {d.id: d.text for d in docs}
    assert texts["latin.py"].endswith("s = 'café'\n")  # decoded with the file's coding cookie
    assert texts["pydoc_data/topics.py#if"] == "The if statement"
    for doc in docs:
        assert doc.split == ("validation" if data.is_heldout(doc.id) else "train")


def test_a_snapshot_gives_back_the_built_corpus_byte_for_byte(fake_stdlib, tmp_path, monkeypatch):
    first = data.write_snapshot(fake_stdlib, tmp_path / "one.jsonl.gz")
    second = data.write_snapshot(fake_stdlib, tmp_path / "two.jsonl.gz")
    assert first.read_bytes() == second.read_bytes()  # no date or path inside
    monkeypatch.setattr(data, "SNAPSHOT", first)
    data._snapshot_documents.cache_clear()
    data.snapshot_digest.cache_clear()
    try:
        assert data.load_corpus() == data.build_corpus(fake_stdlib) == data.load_corpus(root=fake_stdlib)
        digest = hashlib.sha256(first.read_bytes()).hexdigest()[:16]  # this snapshot's, not the shipped one's
        assert data.cache_path(".x", tmp_path).name == f"stdlib-v{data.CORPUS_FORMAT}-{digest}.x"
    finally:
        data._snapshot_documents.cache_clear()
        data.snapshot_digest.cache_clear()


def test_the_split_is_a_fixed_hash_of_the_path():
    # sha256, not Python's salted hash(): the same on every machine, in every process
    assert data.stable_hash("json/decoder.py") == 4264412640196777893
    assert data.is_heldout("asyncio/events.py")  # 13 < 20
    assert not data.is_heldout("json/decoder.py")


@pytest.fixture(scope="module")
def corpus():
    return data.load_corpus()


# What the shipped snapshot holds: CPython 3.11.7's library. A change here changes every number
# of the book that rests on the corpus (the tokenizer, the checkpoint, the tasks, the chapters).
SNAPSHOT_DOCUMENTS = 692
SNAPSHOT_CHARACTERS = 10_513_972
SNAPSHOT_SHA256 = "85793e7313276d43"  # of the ids and texts, in order
SNAPSHOT_TOKENS = {"train": 2_118_409, "validation": 567_057}  # with corpus_tokenizer(8192)


def content_digest(docs) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(f"{doc.id}\0{doc.kind}\0{doc.split}\0{doc.text}\0".encode("utf-8"))
    return digest.hexdigest()[:16]


def test_the_shipped_corpus_is_pinned(corpus):
    """The corpus is read from the package, never from the running Python's standard library, so
    it is the same on every Python version (Colab's 3.12 included)."""
    assert data.SNAPSHOT.is_file() and (data.SNAPSHOT.parent / "LICENSE").is_file()
    assert (len(corpus), sum(len(d.text) for d in corpus)) == (SNAPSHOT_DOCUMENTS, SNAPSHOT_CHARACTERS)
    assert content_digest(corpus) == SNAPSHOT_SHA256
    tokenizer = data.corpus_tokenizer()
    for split, tokens in SNAPSHOT_TOKENS.items():
        assert data.corpus_size(data.load_corpus(split), tokenizer)["tokens"] == tokens, split


def test_loading_never_reads_the_running_pythons_library(monkeypatch, tmp_path):
    data._snapshot_documents.cache_clear()
    monkeypatch.setattr(data, "stdlib_dir", lambda: tmp_path / "no-stdlib-here")
    monkeypatch.setattr(data, "build_corpus", lambda root=None: pytest.fail("built from a library"))
    try:
        assert len(data.load_corpus()) == SNAPSHOT_DOCUMENTS
    finally:
        data._snapshot_documents.cache_clear()


def test_the_snapshot_is_well_formed():
    with gzip.open(data.SNAPSHOT, "rt", encoding="utf-8") as f:
        first = f.readline()
    assert set(json.loads(first)) == {"id", "kind", "text"}


def test_real_corpus_shape(corpus):
    ids = [d.id for d in corpus]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert len({d.text for d in corpus}) == len(corpus)  # no exact duplicates
    assert {d.kind for d in corpus} == {"code", "prose"}
    assert any(d.id.startswith("pydoc_data/topics.py#") for d in corpus)
    assert {"json/decoder.py", "asyncio/events.py", "LICENSE.txt"} <= set(ids)
    for doc_id in ids:
        parts = doc_id.split("#")[0].split("/")
        assert not {"test", "tests", "idle_test", "site-packages", "encodings"} & set(parts)
    heldout = sum(d.split == "validation" for d in corpus) / len(corpus)
    assert 0.1 < heldout < 0.3


def test_splits_and_kinds_select(corpus):
    train = data.load_corpus("train")
    prose = data.load_corpus("validation", "prose")
    assert train == [d for d in corpus if d.split == "train"]
    assert prose == [d for d in corpus if d.split == "validation" and d.kind == "prose"]
    code = data.corpus_texts("train", "code")
    assert code == [d.text for d in train if d.kind == "code"]
    prose_texts, code_texts = data.prose_and_code(corpus)
    assert len(prose_texts) + len(code_texts) == len(corpus)
    assert {d.id for d in train}.isdisjoint(d.id for d in corpus if d.split == "validation")


def test_corpus_tokenizer_is_trained_once_then_read_from_the_cache(corpus, tmp_path):
    trained = data.corpus_tokenizer(500, cache_dir=tmp_path)
    assert trained.get_vocab_size() == 512
    assert data.corpus_tokenizer(500, cache_dir=tmp_path).to_str() == trained.to_str()
    assert data.corpus_size(corpus[:3], trained)["tokens"] == sum(
        len(trained.encode(d.text, add_special_tokens=False).ids) for d in corpus[:3])


def test_corpus_size_counts(corpus):
    docs = corpus[:5]
    assert data.corpus_size(docs) == {"documents": 5, "characters": sum(len(d.text) for d in docs)}


@pytest.mark.parametrize("kwargs", [{"split": "test"}, {"kind": "docs"}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="must be one of"):
        data.load_corpus(**kwargs)


def test_missing_library_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.build_corpus(tmp_path / "nowhere")


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MODERNBERT_MINI_CACHE", str(tmp_path))
    assert data.default_cache_dir() == tmp_path


def test_streaming_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now fails
    with pytest.raises(ImportError, match="pip install datasets"):
        data.stream_corpus()
