"""tokenizer.py: ModernBERT's byte-level BPE and BPE from scratch, checked against `tokenizers`,
`transformers` and merges worked out by hand."""

import json
import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from modernbert_mini import data
from modernbert_mini import tokenizer as tok

NASTY = [
    "",
    " ",
    "   leading and trailing   ",
    "def f(x):\n\treturn x  # tab, then two spaces\n",
    "if a:\n        b = {'k': [1, 2.5e-3]}\r\n    else: pass\n\n\n",
    "\t\t\t \n\n \x0b\x0c\r",
    "naïve café, Ærøskøbing, Straße, İstanbul, ﬁ ligature",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "emoji 🤗🚀 and a family 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "combining: e\u0301 a\u0308 \u200b zero width \u200d joiner, RTL: שלום مرحبا",
    "control \x00\x01\x1f\x7f characters",
    "lambda: x ** 2 >= 0 and y != z or not w; print(f'{x!r:>10}')",
    "the   word   with   runs   of   spaces",
    "'s 're 've 'll 'd — the GPT-2 contractions",
]


def random_texts(n=200, seed=0):
    """Random strings over every Unicode plane (no surrogates) and a few hand-picked ranges."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0x09, 0x0D), (0xA0, 0x24F), (0x4E00, 0x9FFF), (0x1F300, 0x1F6FF),
              (0x0300, 0x036F), (0x0590, 0x06FF), (0x0, 0x10FFFF)]

    def char():
        lo, hi = rng.choice(ranges)
        code = rng.randint(lo, hi)
        return " " if 0xD800 <= code <= 0xDFFF else chr(code)

    return ["".join(char() for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def train_texts():
    return data.corpus_texts("train")[:60]  # a small slice: fast


@pytest.fixture(scope="module")
def bpe(train_texts):
    return tok.train_tokenizer(train_texts, vocab_size=1000)


# --- special tokens and post-processing -------------------------------------------------------

def test_special_tokens_have_fixed_small_ids(bpe):
    assert [bpe.token_to_id(t) for t in tok.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.UNK_ID, tok.CLS_ID, tok.SEP_ID, tok.PAD_ID, tok.MASK_ID) == (0, 1, 2, 3, 4)
    assert tok.SPECIAL_TOKENS[tok.MASK_ID] == "[MASK]"


def test_single_text_is_cls_text_sep(bpe):
    ids = bpe.encode("x = 1").ids
    assert ids[0] == tok.CLS_ID and ids[-1] == tok.SEP_ID
    assert ids[1:-1] == bpe.encode("x = 1", add_special_tokens=False).ids


def test_pair_is_cls_a_sep_b_sep(bpe):
    a = bpe.encode("first", add_special_tokens=False).ids
    b = bpe.encode("second", add_special_tokens=False).ids
    encoding = bpe.encode("first", "second")
    assert encoding.ids == [tok.CLS_ID, *a, tok.SEP_ID, *b, tok.SEP_ID]
    assert encoding.type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_mask_strips_the_space_before_it(bpe):
    with_space = bpe.encode("return [MASK]", add_special_tokens=False).ids
    assert with_space == bpe.encode("return[MASK]", add_special_tokens=False).ids
    assert with_space[-1] == tok.MASK_ID
    # the other special tokens keep the space as text
    assert bpe.encode("return [PAD]", add_special_tokens=False).ids != \
        bpe.encode("return[PAD]", add_special_tokens=False).ids


def test_offsets_leave_out_the_leading_space(bpe):
    encoding = bpe.encode("a return", add_special_tokens=False)
    assert encoding.tokens[-1] == "Ġreturn"
    assert encoding.offsets[-1] == (2, 8)


def test_batches_are_padded_with_pad(bpe):
    short, long = bpe.encode_batch(["x", "x = y + z"])
    assert len(short.ids) == len(long.ids)
    assert short.ids[-1] == tok.PAD_ID and short.attention_mask[-1] == 0
    assert all(long.attention_mask)


# --- vocabulary size --------------------------------------------------------------------------

@pytest.mark.parametrize("asked, expected", [(261, 320), (1000, 1024), (1024, 1024)])
def test_vocab_is_rounded_up_to_a_multiple_of_64(train_texts, asked, expected):
    trained = tok.train_tokenizer(train_texts[:20], vocab_size=asked)
    assert trained.get_vocab_size() == expected


def test_vocab_is_filled_when_the_data_runs_out_of_merges():
    trained = tok.train_tokenizer(["tiny corpus, tiny corpus"], vocab_size=1000)
    assert trained.get_vocab_size() == 1024
    assert trained.token_to_id("[unused0]") is not None
    unused = {trained.token_to_id(f"[unused{i}]") for i in range(10)}
    produced = {i for text in NASTY + random_texts(50) for i in trained.encode(text).ids}
    assert not unused & produced  # BPE never outputs them, even for the literal text "[unused0]"
    assert trained.decode(trained.encode("[unused0] tiny").ids) == "[unused0] tiny"


def test_round_up():
    assert [tok.round_up(n) for n in (1, 64, 65, 50280)] == [64, 64, 128, 50304]


# --- exact round trips ------------------------------------------------------------------------

@pytest.mark.parametrize("text", NASTY)
def test_nasty_strings_round_trip(bpe, text):
    assert bpe.decode(bpe.encode(text).ids, skip_special_tokens=True) == text
    assert bpe.decode(bpe.encode(text, add_special_tokens=False).ids) == text


def test_random_unicode_round_trips(bpe):
    for text in random_texts():
        assert bpe.decode(bpe.encode(text).ids, skip_special_tokens=True) == text, repr(text)


def test_corpus_documents_round_trip(bpe):
    for text in data.corpus_texts("validation")[:40]:
        assert bpe.decode(bpe.encode(text).ids) == text


def test_no_byte_is_unknown(bpe):
    ids = bpe.encode("".join(map(chr, range(256))) + "🤗", add_special_tokens=False).ids
    assert tok.UNK_ID not in ids


# --- saving and loading -----------------------------------------------------------------------

def test_save_then_load_from_dir_or_file(bpe, tmp_path):
    path = tok.save_tokenizer(bpe, tmp_path / "tok")
    for source in (tmp_path / "tok", path, str(path)):
        loaded = tok.load_tokenizer(source)
        assert loaded.encode("a [MASK] b", "c").ids == bpe.encode("a [MASK] b", "c").ids
        assert loaded.get_vocab_size() == bpe.get_vocab_size()


def test_transformers_loads_the_saved_tokenizer(bpe, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save_tokenizer(bpe, tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.mask_token_id) == (1, 2, 3, 4)
    for text in NASTY:
        ids = hf(text)["input_ids"]
        assert ids == bpe.encode(text).ids
        assert hf.decode(ids, skip_special_tokens=True) == text


def test_a_hub_id_is_read_through_huggingface_hub(bpe, tmp_path, monkeypatch):
    import huggingface_hub

    saved = tok.save_tokenizer(bpe, tmp_path / "downloaded")
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename: asked.append((repo_id, filename)) or str(saved))
    monkeypatch.chdir(tmp_path)  # no local "owner/model" here
    assert tok.load_tokenizer("owner/model").encode("x").ids == bpe.encode("x").ids
    assert asked == [("owner/model", "tokenizer.json")]


def test_missing_tokenizer_is_an_os_error(tmp_path):
    with pytest.raises(OSError, match="no tokenizer"):
        tok.load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(OSError, match="no tokenizer"):
        tok.load_tokenizer(tmp_path)  # a directory without tokenizer.json


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": "1.0", "model": 3}), ""])
def test_corrupt_tokenizer_is_a_value_error(tmp_path, content):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        tok.load_tokenizer(tmp_path)


@pytest.mark.parametrize("texts, vocab_size, message", [
    (["some text"], 100, "too small"),
    (["some text"], 260, "too small"),
    (["some text"], 1000.0, "must be an int"),
    ([], 1000, "empty"),
    (["", ""], 1000, "empty"),
    ("a string, not a list", 1000, "not one string"),
    ([b"bytes"], 1000, "must be strings"),
])
def test_bad_training_arguments(texts, vocab_size, message):
    for train in (tok.train_tokenizer, tok.train_wordpiece):
        with pytest.raises(ValueError, match=message):
            train(texts, vocab_size)


# --- BPE from scratch -------------------------------------------------------------------------

def test_toy_bpe_by_hand():
    # "aaabdaaabac": pairs aa=4 -> merge (a, a). Then (aa, a) and (a, b) both count 2: the tie
    # goes to the pair of older symbols, (a, b). Then (aa, ab) counts 2 and wins.
    assert tok.toy_bpe_train("aaabdaaabac", 3) == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert tok.toy_bpe_encode("aaabdaaabac", [("a", "a"), ("a", "b"), ("aa", "ab")]) == \
        ["aaab", "d", "aaab", "a", "c"]


def library_bpe(text, pre_tokenizer, num_merges):
    """The `tokenizers` BpeTrainer on `text`, asked for its alphabet plus `num_merges` tokens."""
    words = [word for word, _ in pre_tokenizer.pre_tokenize_str(text)]
    alphabet = {char for word in words for char in word}
    library = Tokenizer(models.BPE())
    library.pre_tokenizer = pre_tokenizer
    library.train_from_iterator([text], trainers.BpeTrainer(vocab_size=len(alphabet) + num_merges,
                                                            show_progress=False))
    return library, words


TOY_CORPUS = ("low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3 + "ab cd ef ab cd ef "
              + "hug pug pun bun hugs " * 4 + "aaaa aaa bbbb abab")


def test_toy_bpe_learns_the_same_merges_as_tokenizers():
    # WhitespaceSplit is the toy's own pre-tokenization, text.split()
    library, words = library_bpe(TOY_CORPUS, pre_tokenizers.WhitespaceSplit(), 40)
    expected = tok.bpe_merges(library)
    assert len(expected) == 28  # every word is whole: both stop when no pair is left
    assert tok.toy_bpe_train(TOY_CORPUS, 40) == expected
    for word in set(words):
        assert tok.toy_bpe_encode(word, expected) == library.encode(word).tokens


def test_toy_bpe_matches_tokenizers_on_byte_level_words_of_real_text(train_texts):
    text = train_texts[0][:20_000]
    library, words = library_bpe(text, pre_tokenizers.ByteLevel(add_prefix_space=False), 150)
    assert words == tok.byte_level_words(text)
    expected = tok.bpe_merges(library)
    assert tok.toy_bpe_train(words, 150) == expected[:150]
    sample = text[:3000]
    assert [t for w in tok.byte_level_words(sample) for t in tok.toy_bpe_encode(w, expected)] == \
        library.encode(sample).tokens


def test_byte_level_words_keep_the_space_in_front():
    assert tok.byte_level_words("def f(x):\n    return x") == \
        ["def", "Ġf", "(", "x", "):", "ĊĠĠĠ", "Ġreturn", "Ġx"]


def test_toy_bpe_rejects_negative_merges():
    with pytest.raises(ValueError, match="num_merges"):
        tok.toy_bpe_train("a b", -1)


# --- WordPiece and tokens per character -------------------------------------------------------

def test_wordpiece_is_bert_style(train_texts):
    wordpiece = tok.train_wordpiece(train_texts, vocab_size=1000)
    assert [wordpiece.token_to_id(t) for t in tok.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    encoding = wordpiece.encode("Return   The\n\tValue")
    assert encoding.ids[0] == tok.CLS_ID and encoding.ids[-1] == tok.SEP_ID
    assert wordpiece.decode(encoding.ids) == "return the value"  # lowercased, whitespace lost
    assert any(t.startswith("##") for t in wordpiece.get_vocab())


def test_tokens_per_char_counts_tokens_not_padding(bpe):
    texts = ["x", "def f(x):\n    return x", "🤗"]
    by_hand = sum(len(bpe.encode(t, add_special_tokens=False).ids) for t in texts)
    assert tok.count_tokens(bpe, texts, batch_size=2) == by_hand
    assert tok.tokens_per_char(bpe, texts) == pytest.approx(by_hand / sum(map(len, texts)))
    assert bpe.padding is not None  # counting did not change the tokenizer it was given
    with pytest.raises(ValueError, match="empty"):
        tok.tokens_per_char(bpe, [""])


def test_bpe_merges_rejects_other_models(train_texts):
    with pytest.raises(ValueError, match="not a BPE"):
        tok.bpe_merges(tok.train_wordpiece(train_texts[:5], 300))


def test_to_sequences_splits_cuts_or_refuses_and_never_changes_the_tokenizer(bpe):
    """The one way from texts to ids: each mode against the tokenizer's own encoding."""
    before = bpe.to_str()
    bpe.enable_truncation(max_length=4)  # the caller's own setting: to_sequences ignores it
    try:
        long, short = "def add(a, b):\n    return a + b\n" * 6, "x = 1"
        ids = tok.Tokenizer.from_str(before).encode(long, add_special_tokens=False).ids
        split = tok.to_sequences(bpe, [long, "", short], 16, overflow="split")
        pieces = [s.tolist() for s in split]
        assert [i for p in pieces[:-1] for i in p[1:-1]] == ids  # every token once, in order
        assert all(p[0] == tok.CLS_ID and p[-1] == tok.SEP_ID and len(p) <= 16 for p in pieces)
        assert len(pieces) == -(-len(ids) // 14) + 1  # the fewest chunks; the empty text: none
        cut = tok.to_sequences(bpe, [long, short], 16, overflow="truncate")
        assert cut[0].tolist() == [tok.CLS_ID, *ids[:14], tok.SEP_ID] and len(cut[1]) < 16
        with pytest.raises(ValueError, match=r"texts\[0\] is \d+ tokens long, more than max_length=16"):
            tok.to_sequences(bpe, [long, short], 16)
        bare = tok.to_sequences(bpe, [long], special_tokens=False)
        assert bare[0].tolist() == ids and tok.count_tokens(bpe, [long, short]) == bare.num_tokens + len(
            tok.to_sequences(bpe, [short], special_tokens=False)[0])
        assert bpe.truncation["max_length"] == 4
    finally:
        bpe.no_truncation()
    assert bpe.to_str() == before
