"""The pretraining corpus: real code and English that every machine has (chapters 1 and 10).

ModernBERT was pretrained on 2 trillion tokens of English web text, books, papers and a large
share of code. We cannot download that offline, but every machine with Python carries a few
megabytes of real, carefully written code and English: the Python standard library. Its source
files (with their docstrings and comments) are the code; the help topics of `pydoc` (pages of
the language reference, ~0.45 M characters of English) and the library's .txt/.rst files are the
prose. On Python 3.11: 692 documents, 10.5 M characters, 2.7 M tokens (8192-token BPE), 94% code.

- `load_corpus()` builds the corpus once (well under a second), caches it as JSON lines, and
  returns `Document`s in a fixed order. Exact duplicate texts are kept once.
- The split is by file: `is_heldout(path)` puts a fixed ~20% of the files aside, by a stable
  hash of their path (not Python's salted `hash()`). They are the corpus's validation split and
  the source of every downstream test example (`tasks.py`), so no pretraining or fine-tuning run
  ever sees a test function.
- Left out: the test suites (tests/, test/, idle_test/), site-packages, the generated codec
  tables of `encodings`, and build-time files (_sysconfigdata, config-*).
- `corpus_tokenizer()` trains (once, then caches) the byte-level BPE of `tokenizer.py` on the
  training split.
- `stream_corpus()` streams a large web corpus through `datasets` when online (FineWeb-Edu by
  default); `datasets` is imported only then.

The corpus follows the Python it is read from: another Python version gives other sizes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import itertools
import json
import os
import sys
import sysconfig
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class Document:
    id: str  # path under the stdlib ("json/decoder.py"), or "pydoc_data/topics.py#assert"
    kind: str  # "code" or "prose"
    split: str  # "train" or "validation"
    text: str


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same on every machine and every run."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def is_heldout(path: str) -> bool:
    """True for the fixed ~20% of stdlib files (or pydoc topics) that training never sees."""
    return stable_hash(path) % 100 < HELDOUT_PERCENT


def default_cache_dir() -> Path:
    """$MODERNBERT_MINI_CACHE, else ~/.cache/modernbert_mini."""
    return Path(os.environ.get("MODERNBERT_MINI_CACHE", Path.home() / ".cache" / "modernbert_mini"))


def stdlib_dir() -> Path:
    """Where this Python's standard library lives."""
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
# The cached corpus
# ---------------------------------------------------------------------------------------------

def cache_path(suffix: str, cache_dir: str | Path | None = None,
               root: str | Path | None = None) -> Path:
    """A file in the cache directory that belongs to this corpus: its name holds the corpus format,
    the Python version and the stdlib location, so a change in any of them builds anew."""
    root = Path(root) if root is not None else stdlib_dir()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fingerprint = stable_hash(f"{root.resolve()}|{sys.version}") % 16**8
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return cache_dir / f"stdlib-v{CORPUS_FORMAT}-py{version}-{fingerprint:08x}{suffix}"


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
                cache_dir: str | Path | None = None, root: str | Path | None = None,
                rebuild: bool = False) -> list[Document]:
    """The stdlib corpus, built on first use and cached in `cache_dir` as JSON lines.

    split: "train", "validation" or None for both; kind: "code", "prose" or None for both.
    """
    if split not in (None, *SPLITS):
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if kind not in (None, *KINDS):
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    cache = cache_path(".jsonl", cache_dir, root)
    if rebuild or not cache.is_file():
        docs = build_corpus(root)
        write_jsonl(cache, map(asdict, docs))
    else:
        docs = [Document(**row) for row in read_jsonl(cache)]
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
    texts = corpus_texts("train", cache_dir=cache_dir, root=root)
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
