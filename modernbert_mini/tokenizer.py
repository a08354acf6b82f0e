"""The tokenizer: byte-level BPE as ModernBERT uses it, and BPE itself from scratch (chapter 1).

ModernBERT reads text through the byte-level BPE tokenizer of OLMo (itself the GPT-NeoX recipe):
text is split into words by the GPT-2 regular expression, each word keeps the space in front of
it, and every byte is mapped to one printable character (a space becomes "Ġ"), so any text,
code and emoji included, is a sequence of known symbols and decodes back exactly. BPE then merges
the most frequent adjacent pair of symbols again and again; the ordered list of merges *is* the
tokenizer. On top of that sit the encoder's special tokens, [CLS] text [SEP] (and
[CLS] a [SEP] b [SEP] for pairs), a [MASK] token that swallows the space before it (so
"a [MASK]" masks the word " b" of "a b"), and a vocabulary padded to a multiple of 64 so the
embedding matrix tiles well on a GPU (50,368 for ModernBERT).

This module holds, in the order chapter 1 builds them:

1. `toy_bpe_train` / `toy_bpe_encode`: BPE in plain Python, short enough to read in one go. It
   learns the same merges, in the same order, as the `tokenizers` library (tests check this).
2. `train_tokenizer`, `save_tokenizer`, `load_tokenizer`: the ModernBERT-style tokenizer with
   `tokenizers`, trained on our own corpus, or the published one read from its tokenizer.json.
3. `modernbert_tokenizer`: ModernBERT's own tokenizer, rebuilt offline from OLMo's tokenizer
   file, which ships with the package (assets/olmo/, Apache-2.0).
4. `train_wordpiece` and `tokens_per_char`: BERT's WordPiece on the same data, to compare.
5. `to_sequences`: the one way from texts to token ids, as `Sequences` (one flat tensor and its
   offsets), each text [CLS] ... [SEP] and split or cut at max_len; pretraining, fine-tuning,
   inference and counting all go through it, and it never changes the caller's tokenizer.
   It takes a `tokenizers.Tokenizer` or a transformers fast tokenizer (`as_tokenizer`).

Our special tokens come first, so their ids are fixed and small: [UNK]=0 [CLS]=1 [SEP]=2
[PAD]=3 [MASK]=4 (the mini configs use these). ModernBERT's tokenizer keeps OLMo's 50,280 ids and
puts them after OLMo's vocabulary instead ([UNK]=50280 ... [MASK]=50284); `load_tokenizer` reads
whichever tokenizer.json it is given.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
UNK_ID, CLS_ID, SEP_ID, PAD_ID, MASK_ID = range(len(SPECIAL_TOKENS))
VOCAB_MULTIPLE = 64  # ModernBERT pads its vocabulary to a multiple of 64 (50,368 = 787 * 64)
BYTE_ALPHABET_SIZE = 256  # byte-level BPE starts from one symbol per byte
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + BYTE_ALPHABET_SIZE
UNUSED_TOKEN = "[unused{}]"  # fills the vocabulary up to the multiple of 64; never produced
TOKENIZER_FILE = "tokenizer.json"


# ---------------------------------------------------------------------------------------------
# 1. BPE from scratch
# ---------------------------------------------------------------------------------------------

def toy_bpe_train(corpus: str | Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """Learn `num_merges` BPE merges from a corpus, in plain Python.

    `corpus` is a text, split into words on whitespace, or an iterable of words already split
    (for instance `byte_level_words(text)`). Every word starts as its characters. Each step
    counts every adjacent pair of symbols in every word (weighted by how often the word occurs),
    merges the most frequent pair everywhere, and records it. Stops early when no pair is left.

    Ties: among pairs with the same count, the pair whose symbols entered the vocabulary first
    wins. The vocabulary starts as the characters sorted by code point, and each merged symbol
    is appended when it is first made. This is the rule of the `tokenizers` BpeTrainer (a heap
    ordered by count, then by the smaller pair of token ids, where ids are given in exactly that
    order), so both learn the same merges in the same order from the same words. Like the library,
    "aaa" counts the pair (a, a) twice though only one merge fits. For the same words, give the
    library no normalizer and the pre-tokenizer WhitespaceSplit (for a text) or
    ByteLevel(add_prefix_space=False) (for `byte_level_words`), and ask its BpeTrainer for
    len(alphabet) + num_merges tokens.
    """
    if num_merges < 0:
        raise ValueError(f"num_merges must be >= 0, got {num_merges}")
    word_counts = Counter(corpus.split() if isinstance(corpus, str) else corpus)
    words = [(list(word), count) for word, count in word_counts.items()]
    alphabet = sorted({char for word in word_counts for char in word})
    vocab_order = {symbol: i for i, symbol in enumerate(alphabet)}  # the tie-breaker

    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pair_counts: Counter[tuple[str, str]] = Counter()
        for symbols, count in words:
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        # the most frequent pair; on a tie, the pair of older symbols
        best = max(pair_counts, key=lambda p: (pair_counts[p], -vocab_order[p[0]], -vocab_order[p[1]]))
        merges.append(best)
        vocab_order.setdefault(best[0] + best[1], len(vocab_order))
        words = [(_merge_pair(symbols, best), count) for symbols, count in words]
    return merges


def toy_bpe_encode(text: str, merges: list[tuple[str, str]]) -> list[str]:
    """Split `text` into BPE tokens with `merges` (words split on whitespace, as in training).

    Within each word, apply the earliest-learned merge that still applies, until none does.
    """
    rank = {pair: i for i, pair in enumerate(merges)}
    tokens: list[str] = []
    for word in text.split():
        symbols = list(word)
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:]), key=lambda p: rank.get(p, math.inf))
            if best not in rank:
                break
            symbols = _merge_pair(symbols, best)
        tokens.extend(symbols)
    return tokens


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace each occurrence of `pair` in `symbols` by the merged symbol, left to right."""
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def byte_level_words(text: str) -> list[str]:
    """Pre-tokenize like ModernBERT: GPT-2 regex words, each byte as a printable character.

    A word keeps the space in front of it; a run of whitespace gives all but its last space to
    one word, so an indented line starts with "ĊĠĠĠ" (newline, 3 spaces) then "Ġreturn":

    "def f(x):\\n    return x" -> ['def', 'Ġf', '(', 'x', '):', 'ĊĠĠĠ', 'Ġreturn', 'Ġx']
    """
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return [word for word, _ in byte_level.pre_tokenize_str(text)]


def bpe_merges(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """The ordered merges of a BPE tokenizer from `tokenizers`, as pairs of symbols."""
    model = json.loads(tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"not a BPE tokenizer: its model is {model.get('type')!r}")
    # tokenizers >= 0.20 writes [a, b]; older files write "a b"
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


def emittable_ids(tokenizer: Tokenizer) -> list[int]:
    """The ids that encoding some text can give: special tokens and fillers left out.

    Vocabulary entries: for BPE, the single symbols (its alphabet) and the result of every
    merge, so that an entry no merge builds (the [unusedN] fillers of `train_tokenizer`) is left
    out; for other models, all of them. Added tokens: those that are not special and not a
    [unusedN] filler (OLMo's runs of spaces are added tokens that text does produce).
    """
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    if json.loads(tokenizer.to_str())["model"].get("type") == "BPE":
        built = {a + b for a, b in bpe_merges(tokenizer)}
        vocab = {token: i for token, i in vocab.items() if len(token) == 1 or token in built}
    filler = re.compile(re.escape(UNUSED_TOKEN).replace(r"\{\}", r"\d+"))
    added = tokenizer.get_added_tokens_decoder()
    ids = {i for i in vocab.values() if i not in added}
    ids |= {i for i, t in added.items() if not t.special and not filler.fullmatch(t.content)}
    return sorted(ids)


# ---------------------------------------------------------------------------------------------
# 2. The ModernBERT-style tokenizer
# ---------------------------------------------------------------------------------------------

def round_up(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def _special_tokens() -> list[AddedToken]:
    """The five special tokens in id order; [MASK] strips the space before it."""
    return [AddedToken(token, special=True, normalized=False, lstrip=(token == "[MASK]"))
            for token in SPECIAL_TOKENS]


def _encoder_template(cls_id: int = CLS_ID, sep_id: int = SEP_ID) -> processors.TemplateProcessing:
    """[CLS] A [SEP] for one text, [CLS] A [SEP] B [SEP] for a pair (B has type id 1)."""
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def _check_training_args(vocab_size: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an int, got {vocab_size!r}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is too small: it must hold the "
                         f"{len(SPECIAL_TOKENS)} special tokens and the {BYTE_ALPHABET_SIZE} "
                         f"bytes, so at least {MIN_VOCAB_SIZE}")


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    """Yield the texts; raise ValueError if there is not a single character among them."""
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, not one string")
    chars = 0
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"texts must be strings, got {type(text).__name__}")
        chars += len(text)
        yield text
    if chars == 0:
        raise ValueError("texts is empty: there is nothing to train on")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> Tokenizer:
    """Train a byte-level BPE tokenizer set up like ModernBERT's.

    - pre-tokenizer: ByteLevel (GPT-2 regex, no space added in front of the text); decoder:
      ByteLevel, so decoding gives back the exact text; no normalizer (nothing is lowercased or
      rewritten);
    - special tokens [UNK] [CLS] [SEP] [PAD] [MASK] with ids 0..4, [MASK] strips the space
      before it;
    - post-processor: [CLS] a [SEP] and [CLS] a [SEP] b [SEP]; offsets leave out the leading
      space of a word (trim_offsets);
    - padding with [PAD] when a batch is encoded;
    - `vocab_size` is rounded up to a multiple of 64; if the data runs out of merges first, the
      vocabulary is filled up with [unusedN] entries, which BPE never produces.
    """
    _check_training_args(vocab_size)
    target = round_up(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(_special_tokens())  # ids 0..4, before anything else
    trainer = trainers.BpeTrainer(
        vocab_size=target,
        special_tokens=_special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    tokenizer.train_from_iterator(_non_empty(texts), trainer)
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        _encoder_template(),
    ])
    tokenizer = _fill_vocab(tokenizer, target)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")
    return tokenizer


def _fill_vocab(tokenizer: Tokenizer, size: int) -> Tokenizer:
    """Add [unusedN] entries to the BPE vocabulary until it has `size` tokens.

    They are vocabulary entries without a merge that builds them, so BPE never outputs them, and
    unlike added tokens they are not matched in the input text either.
    """
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    missing = size - tokenizer.get_vocab_size()
    for i in range(missing):
        vocab[UNUSED_TOKEN.format(i)] = len(vocab)
    return Tokenizer.from_str(json.dumps(spec)) if missing > 0 else tokenizer


def as_tokenizer(tokenizer) -> Tokenizer:
    """The `tokenizers.Tokenizer` of a tokenizer: itself, or a transformers fast tokenizer's
    (`AutoTokenizer.from_pretrained(...)`, a PreTrainedTokenizerFast), which wraps one."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return backend
    raise ValueError(f"tokenizer must be a tokenizers.Tokenizer (load_tokenizer) or a transformers "
                     f"fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True)), "
                     f"got {type(tokenizer).__name__}")


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write tokenizer.json (and a tokenizer_config.json for `transformers`) into `directory`.

    `transformers.AutoTokenizer.from_pretrained(directory)` then loads it as a fast tokenizer
    with the same ids. A transformers tokenizer saves itself (its `save_pretrained`), with its
    own settings. Returns the path of tokenizer.json.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TOKENIZER_FILE
    if not isinstance(tokenizer, Tokenizer):
        as_tokenizer(tokenizer)  # a ValueError unless it is a transformers fast tokenizer
        tokenizer.save_pretrained(directory)
        return path
    tokenizer.save(str(path))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "pad_token": "[PAD]", "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "attention_mask"],  # no token type embeddings
        "clean_up_tokenization_spaces": False,  # keep decoding exact
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # "answerdotai/ModernBERT-base"


def load_tokenizer(source: str | Path) -> Tokenizer:
    """Read a tokenizer.json: a file, a directory holding one, or a Hugging Face hub id.

    A hub id (e.g. "answerdotai/ModernBERT-base") is tried only when no local path of that name
    exists; it needs the network (or the hub cache). A missing file is a FileNotFoundError (an
    OSError), a file that is not a tokenizer a ValueError.
    """
    path = Path(source)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    elif not path.exists() and _HUB_ID.match(str(source)):
        from huggingface_hub import hf_hub_download  # only needed for the hub

        path = Path(hf_hub_download(str(source), TOKENIZER_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {source!s}: expected a {TOKENIZER_FILE} file, "
                                f"a directory holding one, or a hub id like 'owner/name'")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for bad JSON
        raise ValueError(f"{path} is not a valid {TOKENIZER_FILE}: {error}") from error


# ---------------------------------------------------------------------------------------------
# 3. ModernBERT's own tokenizer, rebuilt from OLMo's
# ---------------------------------------------------------------------------------------------

OLMO_TOKENIZER_FILE = Path(__file__).parent / "assets" / "olmo" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
OLMO_VOCAB_SIZE = 50_280  # ids 0 .. 50279 in OLMo's file
MODERNBERT_UNK_ID = OLMO_VOCAB_SIZE  # [UNK] 50280, [CLS] 50281, [SEP] 50282, [PAD] 50283, [MASK] 50284
MODERNBERT_VOCAB_SIZE = 50_368  # 787 x 64: ids 50285 .. 50367 are [unused0] .. [unused82]


def modernbert_tokenizer(olmo_file: str | Path = OLMO_TOKENIZER_FILE) -> Tokenizer:
    """ModernBERT's tokenizer, rebuilt offline from OLMo's tokenizer file.

    The paper describes ModernBERT's tokenizer as a modified OLMo tokenizer. The modification, as
    the published tokenizer.json has it: OLMo's byte-level BPE and its 50,280 ids are kept as they
    are (its NFC normalizer, pre-tokenizer, decoder, merges and added tokens), then
    - BERT's special tokens are appended: [UNK] 50280, [CLS] 50281, [SEP] 50282, [PAD] 50283 and
      [MASK] 50284, which strips the space before it;
    - [unused0] .. [unused82] fill ids 50285 .. 50367, so the vocabulary is 50,368 = 787 x 64;
    - the post-processor is BERT's template, [CLS] a [SEP] and [CLS] a [SEP] b [SEP];
    - batches are padded with [PAD].
    """
    tokenizer = load_tokenizer(olmo_file)
    if tokenizer.get_vocab_size() != OLMO_VOCAB_SIZE:
        raise ValueError(f"{olmo_file} has {tokenizer.get_vocab_size()} entries, but OLMo's "
                         f"tokenizer (allenai_gpt-neox-olmo-dolma-v1_5.json) has {OLMO_VOCAB_SIZE}")
    tokenizer.add_special_tokens(_special_tokens())  # appended: ids 50280 .. 50284
    unused = MODERNBERT_VOCAB_SIZE - tokenizer.get_vocab_size()
    tokenizer.add_tokens([AddedToken(UNUSED_TOKEN.format(i), special=False, normalized=True)
                          for i in range(unused)])  # ids 50285 .. 50367
    cls_id, sep_id, pad_id = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        _encoder_template(cls_id, sep_id),
    ])
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    return tokenizer


# ---------------------------------------------------------------------------------------------
# 4. Token efficiency: BPE versus BERT's WordPiece
# ---------------------------------------------------------------------------------------------

def train_wordpiece(texts: Iterable[str], vocab_size: int = 8192) -> Tokenizer:
    """Train a BERT-style WordPiece tokenizer (uncased) on the same kind of data, to compare.

    BERT's recipe: normalize (lowercase, strip accents, clean control characters), split on
    whitespace and punctuation, then WordPiece with "##" continuation pieces. Whitespace is
    thrown away, so unlike byte-level BPE it cannot give back code's indentation or newlines.
    Same special tokens and ids as `train_tokenizer`.
    """
    _check_training_args(vocab_size)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(_special_tokens())
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=_special_tokens(),
                                        show_progress=False)
    tokenizer.train_from_iterator(_non_empty(texts), trainer)
    tokenizer.post_processor = _encoder_template()
    return tokenizer


def count_tokens(tokenizer: Tokenizer, texts: Iterable[str], batch_size: int = 64) -> int:
    """How many tokens `texts` become, special tokens and padding left out."""
    total = 0
    texts = iter(texts)
    while batch := list(itertools.islice(texts, batch_size)):
        total += to_sequences(tokenizer, batch, special_tokens=False).num_tokens
    return total


def tokens_per_char(tokenizer: Tokenizer, texts: Iterable[str]) -> float:
    """Tokens per character over `texts`: lower means shorter sequences for the same text."""
    texts = list(texts)
    chars = sum(len(t) for t in texts)
    if chars == 0:
        raise ValueError("texts is empty: no characters to count")
    return count_tokens(tokenizer, texts) / chars


# ----------------------------------------------------------------------------- texts -> tensors
Text = str | tuple[str, str]  # one text, or a pair (GLUE's sentence1, sentence2)
OVERFLOW = ("error", "truncate", "split")  # what to_sequences does with a text over max_len


@dataclass
class Sequences:
    """Tokenized sequences, stored as one flat tensor: sequence i is tokens[offsets[i]:offsets[i+1]]."""

    tokens: torch.Tensor  # (total,) int32
    offsets: torch.Tensor  # (n + 1,) int64

    @classmethod
    def of(cls, sequences: Sequence[Sequence[int]]) -> Sequences:
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        return cls(torch.tensor([i for s in sequences for i in s], dtype=torch.int32), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self) -> list[int]:
        return self.offsets.diff().tolist()

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


def _split_evenly(ids: list[int], room: int) -> list[list[int]]:
    """Cut ids into the fewest nearly equal pieces of at most `room` each."""
    pieces = max(1, math.ceil(len(ids) / room))
    size, extra = divmod(len(ids), pieces)  # the first `extra` pieces get one more
    out, start = [], 0
    for i in range(pieces):
        stop = start + size + (i < extra)
        out.append(ids[start:stop])
        start = stop
    return out


def to_sequences(tokenizer: Tokenizer, texts: Sequence[Text], max_len: int | None = None, *,
                 overflow: str = "error", special_tokens: bool = True,
                 advice: str = "cut them (to_sequences' overflow='truncate') or allow more") -> Sequences:
    """Texts (or pairs) as token ids, each [CLS] text [SEP] as the tokenizer's template makes it.

    A text of more than `max_len` tokens (special tokens included) is, by `overflow`:
    - "error": a ValueError that names it (silently cut text gives answers about text nobody wrote);
    - "truncate": cut at the end, keeping the special tokens (a pair: the longer text first); one
      sequence per text, as a classifier reads it;
    - "split": cut into the fewest nearly equal chunks, each its own [CLS] ... [SEP], so every token
      is in exactly one sequence (pretraining documents); an empty text gives no sequence.
    special_tokens=False: the bare ids (no [CLS] or [SEP]), as counting wants them.
    advice: what the "error" message tells the caller to do (a helper names its own option).
    The tokenizer (a `tokenizers.Tokenizer` or a transformers fast tokenizer) is read through a
    copy: its own padding and truncation settings stay as they are.
    """
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow={overflow!r} is invalid: choose one of {OVERFLOW}")
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool)
                                or max_len < 1):
        raise ValueError(f"max_len={max_len!r} is invalid: must be None or a positive integer")
    plain = Tokenizer.from_str(as_tokenizer(tokenizer).to_str())  # a copy: the caller's settings stay as they were
    plain.no_padding()
    plain.no_truncation()
    if overflow == "split":
        return _split_documents(plain, texts, max_len)
    if overflow == "truncate" and max_len is not None:
        processor = plain.post_processor
        special = processor.num_special_tokens_to_add(False) if processor and special_tokens else 0
        if max_len <= special:
            raise ValueError(f"max_len={max_len} leaves no room for text next to the "
                             f"{special} special tokens")
        plain.enable_truncation(max_len)
    encodings = plain.encode_batch(list(texts), add_special_tokens=special_tokens)
    too_long = [i for i, e in enumerate(encodings) if max_len is not None and len(e.ids) > max_len]
    if too_long:
        i = too_long[0]
        raise ValueError(f"texts[{i}] is {len(encodings[i].ids)} tokens long, more than "
                         f"max_length={max_len} ({len(too_long)} of {len(texts)} texts are): {advice}")
    return Sequences.of([e.ids for e in encodings])


def _split_documents(plain: Tokenizer, texts: Sequence[str], max_len: int | None) -> Sequences:
    """Every document as [CLS] ... [SEP] chunks of at most max_len tokens (to_sequences' "split")."""
    cls_id, sep_id = plain.token_to_id("[CLS]"), plain.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer has no [CLS] or [SEP] token")
    if not (isinstance(max_len, int) and max_len >= 3):
        raise ValueError(f"max_len={max_len!r} is invalid: must be an integer >= 3 "
                         "([CLS], at least one token, [SEP])")
    chunks = []
    for encoding in plain.encode_batch(list(texts), add_special_tokens=False):
        if encoding.ids:
            chunks.extend([cls_id, *piece, sep_id] for piece in _split_evenly(encoding.ids, max_len - 2))
    return Sequences.of(chunks)
