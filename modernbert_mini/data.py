"""The pretraining corpus: real code and English that every machine has (chapters 1 and 10).

ModernBERT was pretrained on 2 trillion tokens of English web text, books, papers and a large
share of code. We cannot download that offline, but every machine with Python carries a few
megabytes of real, carefully written code and English: the Python standard library. Its source
files (with their docstrings and comments) are the code; the help topics of `pydoc` (pages of
the language reference, ~0.45 M characters of English) and the library's .txt/.rst files are the
prose. The shipped snapshot (CPython 3.11.7): 692 documents, 10.5 M characters, 2.7 M tokens
(8192-token BPE), 94% code.

- The corpus ships with the package, as a snapshot read from CPython 3.11.7's standard library
  (`assets/corpus/`, gzipped JSON lines, 2.6 MB; the library's PSF licence beside it), so every
  Python, Colab's 3.12 included, reads the same documents and every number of the book is the same.
  `load_corpus()` reads it and returns `Document`s in a fixed order; exact duplicate texts are kept
  once. `build_corpus(root)` reads a standard library directory by the same rules, and
  `write_snapshot()` (`make corpus`) remakes the snapshot from one.
- The split is by file: `is_heldout(path)` puts a fixed ~20% of the files aside, by a stable
  hash of their path (not Python's salted `hash()`). They are the corpus's validation split and
  the source of every downstream test example (`tasks.py`), so no pretraining or fine-tuning run
  ever sees a test function.
- Left out: the test suites (tests/, test/, idle_test/), site-packages, the generated codec
  tables of `encodings`, and build-time files (_sysconfigdata, config-*).
- `corpus_tokenizer()` trains (once, then caches on disk) the byte-level BPE of `tokenizer.py` on
  the training split.
- `stream_corpus()` streams a large web corpus through `datasets` when online (FineWeb-Edu by
  default); `datasets` is imported only then.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import importlib
import itertools
import json
import os
import sysconfig
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from . import tokenizer as tok

CORPUS_FORMAT = 1  # bump when the rules below change, so old caches are not reused
HELDOUT_PERCENT = 20
SPLITS = ("train", "validation")
KINDS = ("code", "prose")
SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                "lib-dynload", "encodings"}
PYDOC_TOPICS = "pydoc_data/topics.py"  # the language reference's help pages: prose, not code
NOT_PROSE = {"Grammar.txt", "PatternGrammar.txt"}  # lib2to3's grammars
DEFAULT_STREAM = ("HuggingFaceFW/fineweb-edu", "sample-10BT")
SNAPSHOT = Path(__file__).parent / "assets" / "corpus" / "stdlib-3.11.7.jsonl.gz"


@dataclass(frozen=True)
class Document:
    id: str  # path under the stdlib ("json/decoder.py"), or "pydoc_data/topics.py#assert"
    kind: str  # "code" or "prose"
    split: str  # "train" or "validation"
    text: str


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same on every machine and every run."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def is_heldout(path: str, *, salt: str = "", percent: int = HELDOUT_PERCENT) -> bool:
    """True for the fixed ~20% of stdlib files (or pydoc topics) that training never sees.

    With a salt, another fixed choice of `percent`% of the files, independent of the first
    (fine-tuning's validation files are salt "validation:" within the training split)."""
    return stable_hash(salt + path) % 100 < percent


def default_cache_dir() -> Path:
    """$MODERNBERT_MINI_CACHE, else ~/.cache/modernbert_mini."""
    return Path(os.environ.get("MODERNBERT_MINI_CACHE", Path.home() / ".cache" / "modernbert_mini"))


def stdlib_dir() -> Path:
    """Where this Python's standard library lives (what `write_snapshot` reads by default)."""
    return Path(sysconfig.get_paths()["stdlib"])


# ---------------------------------------------------------------------------------------------
# Reading the standard library
# ---------------------------------------------------------------------------------------------

def _stdlib_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every file we keep, in sorted order."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs
                            if d not in SKIPPED_DIRS and not d.startswith("config-"))
        for name in sorted(files):
            path = Path(directory) / name
            yield path.relative_to(root).as_posix(), path


def _read_source(path: Path) -> str | None:
    """A .py file's text, decoded as Python does (coding cookie), or None if it cannot be."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except (SyntaxError, UnicodeDecodeError, OSError):
        return None


def _pydoc_topics(path: Path) -> dict[str, str]:
    """The `topics` dict of pydoc_data/topics.py, read without importing it."""
    tree = ast.parse(_read_source(path) or "")
    for node in tree.body:
        targets = [getattr(target, "id", None) for target in getattr(node, "targets", [])]
        if "topics" in targets:
            return ast.literal_eval(node.value)
    return {}


def _raw_documents(root: Path) -> Iterator[tuple[str, str, str]]:
    """(id, kind, text) for each source file and prose page, before deduplication."""
    for rel, path in _stdlib_files(root):
        if rel == PYDOC_TOPICS:
            for topic, text in sorted(_pydoc_topics(path).items()):
                yield f"{rel}#{topic}", "prose", text
        elif path.suffix == ".py" and not path.name.startswith("_sysconfigdata"):
            yield rel, "code", _read_source(path)
        elif path.suffix in (".txt", ".rst") and path.name not in NOT_PROSE:
            try:
                yield rel, "prose", path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def build_corpus(root: str | Path | None = None) -> list[Document]:
    """Read the standard library into deduplicated, split `Document`s, sorted by id."""
    root = Path(root) if root is not None else stdlib_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"no standard library directory at {root}")
    docs, seen = [], set()
    for doc_id, kind, text in sorted(_raw_documents(root)):
        if not text or not text.strip():
            continue
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if digest in seen:  # an exact copy of an earlier document
            continue
        seen.add(digest)
        split = "validation" if is_heldout(doc_id) else "train"
        docs.append(Document(doc_id, kind, split, text))
    return docs


# ---------------------------------------------------------------------------------------------
# The shipped snapshot, and caches that belong to it
# ---------------------------------------------------------------------------------------------

def write_snapshot(root: str | Path | None = None, path: str | Path = SNAPSHOT) -> Path:
    """Build the corpus from a standard library (this Python's by default) and write it as the
    gzipped JSON lines that `load_corpus` reads, byte for byte the same for the same library."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (json.dumps({"id": d.id, "kind": d.kind, "text": d.text}, ensure_ascii=False) + "\n"
            for d in build_corpus(root))
    with path.open("wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as f:  # no name or date
        f.write("".join(rows).encode("utf-8"))
    return path


@functools.lru_cache(maxsize=1)
def _snapshot_documents() -> tuple[Document, ...]:
    """The shipped corpus, read once per process (about a fifth of a second)."""
    with gzip.open(SNAPSHOT, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return tuple(Document(row["id"], row["kind"], "validation" if is_heldout(row["id"]) else "train",
                          row["text"]) for row in rows)


@functools.lru_cache(maxsize=1)
def snapshot_digest() -> str:
    """The first 16 hex digits of the snapshot file's sha256: what the caches are keyed on."""
    return hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest()[:16]


def cache_path(suffix: str, cache_dir: str | Path | None = None,
               root: str | Path | None = None) -> Path:
    """A file in the cache directory that belongs to one corpus: the shipped snapshot (root None)
    or the one built from the standard library at `root`. Its name holds the corpus format and a
    fingerprint of the corpus, so a changed corpus never reads another's cache."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if root is None:
        return cache_dir / f"stdlib-v{CORPUS_FORMAT}-{snapshot_digest()}{suffix}"
    fingerprint = stable_hash(str(Path(root).resolve())) % 16**8
    return cache_dir / f"stdlib-v{CORPUS_FORMAT}-dir-{fingerprint:08x}{suffix}"


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Write dicts as JSON lines, atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with partial.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_corpus(split: str | None = None, kind: str | None = None, *,
                root: str | Path | None = None) -> list[Document]:
    """The corpus that ships with the package, or the one built from the standard library at
    `root` (a second or so).

    split: "train", "validation" or None for both; kind: "code", "prose" or None for both.
    """
    if split not in (None, *SPLITS):
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if kind not in (None, *KINDS):
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    docs = _snapshot_documents() if root is None else build_corpus(root)
    return [d for d in docs
            if (split is None or d.split == split) and (kind is None or d.kind == kind)]


def corpus_texts(split: str = "train", kind: str | None = None, **kwargs) -> list[str]:
    """Just the texts of `load_corpus(split, kind)`: what `train_tokenizer` takes."""
    return [doc.text for doc in load_corpus(split, kind, **kwargs)]


def prose_and_code(docs: Iterable[Document]) -> tuple[list[str], list[str]]:
    """The texts of `docs` in two lists, prose and code (to compare tokens per character)."""
    docs = list(docs)
    return [d.text for d in docs if d.kind == "prose"], [d.text for d in docs if d.kind == "code"]


def corpus_size(docs: Iterable[Document], tokenizer: Tokenizer | None = None) -> dict[str, int]:
    """Documents and characters of `docs`, and tokens when a tokenizer is given."""
    texts = [doc.text for doc in docs]
    size = {"documents": len(texts), "characters": sum(len(t) for t in texts)}
    if tokenizer is not None:
        size["tokens"] = tok.count_tokens(tokenizer, texts)
    return size


def corpus_tokenizer(vocab_size: int = 8192, *, cache_dir: str | Path | None = None,
                     root: str | Path | None = None) -> Tokenizer:
    """The byte-level BPE of chapter 1 trained on the corpus's training split, cached on disk."""
    directory = cache_path(f"-bpe{tok.round_up(vocab_size)}", cache_dir, root)
    if (directory / tok.TOKENIZER_FILE).is_file():
        return tok.load_tokenizer(directory)
    texts = corpus_texts("train", root=root)
    tokenizer = tok.train_tokenizer(texts, vocab_size)
    tok.save_tokenizer(tokenizer, directory)
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Online: large corpora through `datasets`
# ---------------------------------------------------------------------------------------------

def require(module: str, why: str, package: str | None = None):
    """Import an optional dependency, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{why} needs the `{module}` module: "
                          f"pip install {package or module}") from error


def stream_corpus(name: str = DEFAULT_STREAM[0], config: str | None = DEFAULT_STREAM[1],
                  split: str = "train", text_field: str = "text",
                  limit: int | None = None) -> Iterator[str]:
    """Stream the texts of a Hugging Face dataset without downloading it whole (online only).

    Defaults to FineWeb-Edu's 10-billion-token sample, educational English web pages of the
    kind ModernBERT's mix is made of. Another choice: ("wikimedia/wikipedia", "20231101.en").
    """
    datasets = require("datasets", "stream_corpus (online only)")  # fails here, not at next()
    rows = datasets.load_dataset(name, config, split=split, streaming=True)
    return itertools.islice((row[text_field] for row in rows), limit)
