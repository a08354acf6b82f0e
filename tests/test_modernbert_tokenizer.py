"""ModernBERT's tokenizer rebuilt offline from OLMo's (tokenizer.modernbert_tokenizer).

The expected ids are those of the published answerdotai/ModernBERT-base tokenizer.json:
[UNK] 50280, [CLS] 50281, [SEP] 50282, [PAD] 50283, [MASK] 50284, [unused0..82] 50285..50367.
"""

import json

import pytest
from tokenizers import Tokenizer

from modernbert_mini import tokenizer as tok

PUBLISHED_IDS = {"[UNK]": 50280, "[CLS]": 50281, "[SEP]": 50282, "[PAD]": 50283, "[MASK]": 50284,
                 "[unused0]": 50285, "[unused82]": 50367}


@pytest.fixture(scope="module")
def modernbert():
    return tok.modernbert_tokenizer()


@pytest.fixture(scope="module")
def olmo():
    return Tokenizer.from_file(str(tok.OLMO_TOKENIZER_FILE))


def test_the_vendored_file_is_olmos_tokenizer(olmo):
    assert tok.OLMO_TOKENIZER_FILE.is_file()
    assert (tok.OLMO_TOKENIZER_FILE.parent / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert olmo.get_vocab_size() == 50280
    assert olmo.token_to_id("<|endoftext|>") == 50279 and olmo.token_to_id("<|padding|>") == 1
    assert json.loads(olmo.to_str())["model"]["type"] == "BPE"


def test_special_and_unused_ids_are_the_published_ones(modernbert):
    assert modernbert.get_vocab_size() == 50368 == 787 * 64
    for token, expected in PUBLISHED_IDS.items():
        assert modernbert.token_to_id(token) == expected, token
    assert [modernbert.id_to_token(i) for i in range(50285, 50368)] == [
        f"[unused{i}]" for i in range(83)]


def test_olmos_ids_are_kept(modernbert, olmo):
    text = "def f(x):\n    return x  # naïve café 🐍\n\nThe capital of France is Paris."
    assert modernbert.encode(text, add_special_tokens=False).ids == olmo.encode(text).ids


def test_bert_templates(modernbert):
    single = modernbert.encode("Hello world.")
    assert single.ids[0] == 50281 and single.ids[-1] == 50282
    assert single.ids[1:-1] == modernbert.encode("Hello world.", add_special_tokens=False).ids
    pair = modernbert.encode("Is it?", "Yes.")
    assert pair.tokens[0] == "[CLS]" and pair.tokens.count("[SEP]") == 2
    first_sep = pair.tokens.index("[SEP]")
    assert set(pair.type_ids[:first_sep + 1]) == {0} and set(pair.type_ids[first_sep + 1:]) == {1}


def test_mask_strips_the_space_before_it(modernbert):
    plain = modernbert.encode("The capital of France is Paris.").ids
    masked = modernbert.encode("The capital of France is [MASK].").ids
    assert len(masked) == len(plain)  # " Paris" -> one [MASK], no lone space token
    assert masked.count(50284) == 1 and plain[masked.index(50284)] == modernbert.token_to_id("ĠParis")


def test_batches_pad_with_pad_and_text_round_trips(modernbert):
    texts = ["short", "a longer text\twith a tab and 数据"]
    batch = modernbert.encode_batch(texts)
    assert len(batch[0].ids) == len(batch[1].ids) and batch[0].ids[-1] == 50283
    for text, encoding in zip(texts, batch):
        assert modernbert.decode(encoding.ids, skip_special_tokens=True) == text


def test_a_file_that_is_not_olmos_is_refused(tmp_path):
    small = tok.train_tokenizer(["some text to train on, a little of it"] * 4, vocab_size=320)
    path = tok.save_tokenizer(small, tmp_path)
    with pytest.raises(ValueError, match="50280"):
        tok.modernbert_tokenizer(path)
