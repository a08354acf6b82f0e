"""The package as a user meets it: the top-level names, what importing it pulls in, and the
helpers of inference.py (encode, fill_mask, embed, num_parameters).

A tiny random model and the book's own tokenizer (chapter 1's byte-level BPE, trained on the
offline corpus and cached); every expected value is worked out by hand from the model's own
forward, the tokenizer's own encoding, or transformers.
"""

import subprocess
import sys

import pytest
import torch
import transformers as tf

import modernbert_mini as mm
from modernbert_mini import data

TEXTS = ["def add(a, b):\n    return a + b", "x", "", "The quick brown fox jumps over the lazy dog.",
         "import os\nimport sys\n\nprint(sys.argv)"]


@pytest.fixture(scope="module")
def tokenizer():
    return data.corpus_tokenizer()  # the book's tokenizer: [CLS]=1 [SEP]=2 [PAD]=3 [MASK]=4


def tiny(tokenizer, cls=mm.ModernBertForMaskedLM, seed=0, **fields):
    config = mm.ModernBertConfig.mini(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                                      intermediate_size=48, num_hidden_layers=3,
                                      num_attention_heads=2, local_attention=4, **fields)
    torch.manual_seed(seed)
    return cls(config).eval()


# ----------------------------------------------------------------------------- the package
def test_import_does_not_pull_in_notebook_libraries():
    code = ("import sys, modernbert_mini; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'ipywidgets', 'IPython'}); "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_all_names_the_public_api():
    assert set(mm.__all__) <= set(dir(mm))
    for name in ("ModernBertConfig", "ModernBertModel", "ModernBertForMaskedLM",
                 "ModernBertForSequenceClassification", "ModernBertForTokenClassification",
                 "encode", "fill_mask", "embed", "num_parameters", "load_tokenizer"):
        assert name in mm.__all__, name
    namespace = {}
    exec("from modernbert_mini import *", namespace)
    assert {name for name in namespace if not name.startswith("__")} == \
           {name for name in mm.__all__ if not name.startswith("__")}


# ----------------------------------------------------------------------------- encode
def test_encode_is_the_tokenizer_padded_on_the_right(tokenizer):
    batch = mm.encode(tokenizer, TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    expected = [tokenizer.encode(text).ids for text in TEXTS]  # one by one: nothing padded
    assert ids.dtype == mask.dtype == torch.long
    assert ids.shape == mask.shape == (len(TEXTS), max(map(len, expected)))
    for row, want in enumerate(expected):
        n = len(want)
        assert ids[row, :n].tolist() == want and want[0] == 1 and want[-1] == 2  # [CLS] ... [SEP]
        assert mask[row].tolist() == [1] * n + [0] * (ids.shape[1] - n)
        assert (ids[row, n:] == 3).all()  # [PAD]
    one = mm.encode(tokenizer, TEXTS[0])  # a single string is a batch of one
    assert one["input_ids"].tolist() == [expected[0]]


def test_encode_refuses_to_cut_unless_asked(tokenizer):
    long = "word " * 40
    n = len(tokenizer.encode(long).ids)
    with pytest.raises(ValueError, match=rf"texts\[1\] is {n} tokens long, more than "
                                         r"max_length=16.*truncation=True"):
        mm.encode(tokenizer, ["short", long], max_length=16)
    cut = mm.encode(tokenizer, ["short", long], max_length=16, truncation=True)
    assert cut["input_ids"].shape == (2, 16)
    row = cut["input_ids"][1].tolist()
    assert row == tokenizer.encode(long).ids[:15] + [2]  # the text cut, [SEP] kept
    assert mm.encode(tokenizer, ["short"], max_length=16)["input_ids"].tolist() == \
           [tokenizer.encode("short").ids]  # fits: nothing changes
    with pytest.raises(ValueError, match="no room for text"):
        mm.encode(tokenizer, long, max_length=2, truncation=True)


def test_encode_leaves_the_tokenizer_as_it_was(tokenizer):
    padding, truncation = tokenizer.padding, tokenizer.truncation
    tokenizer.enable_truncation(max_length=5)
    try:
        ids = mm.encode(tokenizer, "word " * 20)["input_ids"]  # its own truncation does not cut
        assert ids.shape[1] > 5
        assert tokenizer.truncation["max_length"] == 5 and tokenizer.padding == padding
    finally:
        tokenizer.no_truncation()
    assert tokenizer.truncation == truncation


@pytest.mark.parametrize("texts,kwargs,message", [
    ([], {}, "non-empty list"),
    (["a", 3], {}, r"texts\[1\] is int"),
    (None, {}, "non-empty list"),
    ("a", {"max_length": 0}, "max_length=0 is invalid"),
])
def test_encode_bad_input(tokenizer, texts, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mm.encode(tokenizer, texts, **kwargs)


# ----------------------------------------------------------------------------- fill_mask
def test_fill_mask_is_the_softmax_at_each_mask(tokenizer):
    model = tiny(tokenizer)
    with torch.no_grad():  # a random decoder bias: a peaked distribution, no near-ties to sort
        model.decoder.bias.normal_(0.0, 3.0)
    text = "import [MASK] as np\nx = np.[MASK](3)"
    ids = tokenizer.encode(text).ids
    where = [i for i, t in enumerate(ids) if t == tokenizer.token_to_id("[MASK]")]
    assert len(where) == 2
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()  # (S, V), by hand
    predictions = mm.fill_mask(model, tokenizer, text, top_k=7)
    assert len(predictions) == 2
    for position, guesses in zip(where, predictions):
        exp = (logits[position] - logits[position].max()).exp()
        probabilities = exp / exp.sum()  # softmax, written out
        best = probabilities.topk(7)
        assert [g.token_id for g in guesses] == best.indices.tolist()
        assert [g.probability for g in guesses] == pytest.approx(best.values.tolist(), rel=1e-5)
        assert [g.probability for g in guesses] == sorted((g.probability for g in guesses), reverse=True)
        for guess in guesses:
            assert guess.token == tokenizer.decode([guess.token_id], skip_special_tokens=False)
    assert predictions[0][0].probability > 0.01  # not the flat distribution of a random model


def test_fill_mask_runs_in_eval_and_gives_the_mode_back(tokenizer):
    model = tiny(tokenizer, attention_dropout=0.5, mlp_dropout=0.5, embedding_dropout=0.5).train()
    first = mm.fill_mask(model, tokenizer, "a [MASK] b", top_k=3)
    assert model.training  # set back
    assert first == mm.fill_mask(model, tokenizer, "a [MASK] b", top_k=3)  # no dropout: same


def test_fill_mask_bad_input(tokenizer):
    model = tiny(tokenizer)
    with pytest.raises(ValueError, match=r"no \[MASK\] token to fill"):
        mm.fill_mask(model, tokenizer, "nothing to fill")
    with pytest.raises(ValueError, match="top_k=0 is invalid"):
        mm.fill_mask(model, tokenizer, "a [MASK]", top_k=0)
    with pytest.raises(ValueError, match="needs a ModernBertForMaskedLM"):
        mm.fill_mask(model.model, tokenizer, "a [MASK]")
    other = tiny(tokenizer, mask_token_id=5)
    with pytest.raises(ValueError, match=r"\[MASK\] is id 4, but the model's config says mask_token_id=5"):
        mm.fill_mask(other, tokenizer, "a [MASK]")


# ----------------------------------------------------------------------------- embed
def test_embed_is_the_mean_over_real_tokens(tokenizer):
    model = tiny(tokenizer, cls=mm.ModernBertModel)
    vectors = mm.embed(model, tokenizer, TEXTS, batch_size=2)  # batches mix lengths: padding
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == torch.float32
    for text, vector in zip(TEXTS, vectors):
        ids = torch.tensor([tokenizer.encode(text).ids])  # alone: no padding at all
        with torch.no_grad():
            expected = model(ids).last_hidden_state[0].mean(dim=0)  # (H,)
        torch.testing.assert_close(vector, expected, atol=1e-5, rtol=1e-5)
    unit = mm.embed(model, tokenizer, TEXTS, batch_size=3, normalize=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(unit, vectors / vectors.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-5)


def test_embed_reads_the_encoder_inside_a_model_with_a_head(tokenizer):
    mlm = tiny(tokenizer)
    vectors = mm.embed(mlm, tokenizer, TEXTS, batch_size=2)
    for text, vector in zip(TEXTS, vectors):  # the MLM's own forward, one text alone
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            expected = mlm(ids, output_hidden_states=True).hidden_states[-1][0].mean(dim=0)  # (H,)
        torch.testing.assert_close(vector, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs a ModernBertModel"):
        mm.embed(torch.nn.Linear(2, 2), tokenizer, TEXTS)
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        mm.embed(mlm, tokenizer, TEXTS, batch_size=0)


# ----------------------------------------------------------------------------- num_parameters
def test_num_parameters_are_the_published_counts():
    """DESIGN's table; built on the meta device, so no memory and no init."""
    with torch.device("meta"):
        base_encoder = mm.ModernBertModel(mm.ModernBertConfig.base())
        base_mlm = mm.ModernBertForMaskedLM(mm.ModernBertConfig.base())
        large_encoder = mm.ModernBertModel(mm.ModernBertConfig.large())
        large_mlm = mm.ModernBertForMaskedLM(mm.ModernBertConfig.large())
    assert mm.num_parameters(base_encoder) == 149_014_272
    assert mm.num_parameters(base_mlm) == 149_655_232  # decoder tied: counted once, + its bias
    assert mm.num_parameters(large_encoder) == 394_781_696
    assert mm.num_parameters(large_mlm) == 395_881_664
    assert mm.num_parameters(base_encoder, exclude_embeddings=True) == 149_014_272 - 50368 * 768


@pytest.mark.parametrize("class_name", ["ModernBertModel", "ModernBertForMaskedLM",
                                        "ModernBertForSequenceClassification"])
def test_num_parameters_agrees_with_transformers(class_name):
    config = mm.ModernBertConfig.mini(vocab_size=128, hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=3, num_attention_heads=2)
    ours = getattr(mm, class_name)(config)
    theirs = getattr(tf, class_name)(tf.ModernBertConfig(**config.to_hf_dict()))
    for exclude in (False, True):
        assert mm.num_parameters(ours, exclude_embeddings=exclude) == \
               theirs.num_parameters(exclude_embeddings=exclude)


def test_fill_mask_agrees_with_transformers_pipeline(tokenizer, tmp_path):
    """The same checkpoint and tokenizer through transformers' fill-mask pipeline."""
    from modernbert_mini.tokenizer import save_tokenizer

    model = tiny(tokenizer)
    with torch.no_grad():
        model.decoder.bias.normal_(0.0, 3.0)
    model.save_pretrained(tmp_path)
    save_tokenizer(tokenizer, tmp_path)
    fill = tf.pipeline("fill-mask", model=str(tmp_path), tokenizer=str(tmp_path), device="cpu")
    text = "for key, value in [MASK].items():"
    theirs = fill(text, top_k=5)
    ours = mm.fill_mask(model, tokenizer, text, top_k=5)[0]
    assert [g.token_id for g in ours] == [t["token"] for t in theirs]
    assert [g.probability for g in ours] == pytest.approx([t["score"] for t in theirs], rel=1e-4)


def test_the_published_tokenizer_works_too():
    """ModernBERT's own tokenizer (rebuilt offline): its [PAD] and [MASK] are 50283 and 50284."""
    from modernbert_mini.tokenizer import modernbert_tokenizer

    published = modernbert_tokenizer()
    batch = mm.encode(published, ["Hello world", "The capital of France is [MASK]."])
    assert batch["input_ids"][0, 0] == 50281 and batch["input_ids"][0, -1] == 50283  # [CLS] ... [PAD]
    config = mm.ModernBertConfig.base(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                      num_attention_heads=2)
    torch.manual_seed(0)
    model = mm.ModernBertForMaskedLM(config).eval()
    (guesses,) = mm.fill_mask(model, published, "The capital of France is [MASK].", top_k=3)
    assert len(guesses) == 3 and all(0 < g.probability < 1 for g in guesses)


def test_flash_attn_is_no_extra():
    """flash-attn builds only without pip's build isolation: as an extra, its failure would abort
    the package's own install (README: it is its own step)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    needs = [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    assert not [r for r in needs + project["dependencies"] if r.lower().startswith("flash")]
    assert "pip install flash-attn --no-build-isolation" in (root / "README.md").read_text()
