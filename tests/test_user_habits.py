"""What a transformers or sentence-transformers user does, done with the package (issue 30).

Each habit is checked against the library it comes from: the folder save_pretrained writes is
loaded by transformers (AutoTokenizer, AutoModel*, pipeline), the one save_sentence_transformers
writes by sentence-transformers, and their outputs are compared with the package's. The shipped
mini checkpoint is the model; nothing reaches the network.
"""

import json
import os
import shutil
import socket

import pytest
import torch
import transformers as tf
from sentence_transformers import SentenceTransformer, util

import modernbert_mini as mm
from modernbert_mini import hub
from modernbert_mini.checkpoint import PRETRAINED_DIR, load_pretrained
from modernbert_mini.finetune import BiEncoder

TEXTS = ["def f(x):\n    return x", "Return the number of items in the list.", "import os",
         "for i in range(len(items)):\n    print(items[i])"]
MASKED = "for i in [MASK](len(items)):"
TOL = 1e-5


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to reach the network: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def mini():
    model, tokenizer, _ = load_pretrained()
    return model, tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer():
    return tf.AutoTokenizer.from_pretrained(PRETRAINED_DIR)


def files(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in files(directory) if (directory / name).is_file()}


# ----------------------------------------------------------------------------- the tokenizer travels
def test_a_loaded_model_saves_its_tokenizer_and_transformers_runs_the_folder(mini, tmp_path):
    model, tokenizer = mini
    assert isinstance(model.tokenizer, type(tokenizer))  # from the checkpoint's folder
    model.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(files(tmp_path))
    theirs = tf.AutoTokenizer.from_pretrained(tmp_path)
    assert theirs(TEXTS[0])["input_ids"] == tokenizer.encode(TEXTS[0]).ids
    assert type(tf.AutoModelForMaskedLM.from_pretrained(tmp_path)).__name__ == "ModernBertForMaskedLM"
    fill = tf.pipeline("fill-mask", model=str(tmp_path), device="cpu", top_k=5)
    ours = mm.fill_mask(model, tokenizer, MASKED, top_k=5)[0]
    assert [guess["token"] for guess in fill(MASKED)] == [guess.token_id for guess in ours]


def test_save_pretrained_takes_a_tokenizer(mini, tmp_path):
    model, tokenizer = mini
    fresh = mm.ModernBertForMaskedLM(model.config)
    fresh.save_pretrained(tmp_path / "bare")
    assert "tokenizer.json" not in files(tmp_path / "bare")  # no tokenizer: none written
    fresh.save_pretrained(tmp_path / "with", tokenizer=tokenizer)
    assert tf.AutoTokenizer.from_pretrained(tmp_path / "with")(TEXTS[2])["input_ids"] == tokenizer.encode(TEXTS[2]).ids


def test_a_transformers_tokenizer_saves_itself(mini, hf_tokenizer, tmp_path):
    model, _ = mini
    model.save_pretrained(tmp_path, tokenizer=hf_tokenizer)
    assert tf.AutoTokenizer.from_pretrained(tmp_path)(TEXTS[1])["input_ids"] == hf_tokenizer(TEXTS[1])["input_ids"]


# ----------------------------------------------------------------------------- transformers' tokenizer
def test_helpers_take_a_transformers_tokenizer(mini, hf_tokenizer):
    model, tokenizer = mini
    ours = mm.encode(tokenizer, TEXTS)
    theirs = mm.encode(hf_tokenizer, TEXTS)
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    batch = hf_tokenizer(TEXTS, padding=True, return_tensors="pt")  # transformers' own encoding
    assert torch.equal(theirs["input_ids"], batch["input_ids"])
    assert torch.equal(theirs["attention_mask"], batch["attention_mask"])
    assert mm.fill_mask(model, hf_tokenizer, MASKED) == mm.fill_mask(model, tokenizer, MASKED)
    assert torch.equal(mm.embed(model, hf_tokenizer, TEXTS), mm.embed(model, tokenizer, TEXTS))


def test_something_else_as_a_tokenizer_says_what_is_allowed(mini):
    model, _ = mini
    with pytest.raises(ValueError, match=r"tokenizers\.Tokenizer .*transformers fast tokenizer.*got dict"):
        mm.embed(model, {"vocab": 1}, TEXTS)


# ----------------------------------------------------------------------------- attn_implementation
@pytest.mark.filterwarnings("ignore:some weights")  # an MLM checkpoint into a bare encoder
@pytest.mark.parametrize("name, backend", [("eager", "eager"), ("sdpa", "sdpa"),
                                           ("flash_attention_2", "flash_attn")])
def test_attn_implementation_names_a_backend(name, backend):
    model = mm.ModernBertModel.from_pretrained(PRETRAINED_DIR, attn_implementation=name)
    assert model.config.attention_backend == backend
    assert all(layer.attn.backend == backend for layer in model.layers)


def test_attn_implementation_takes_transformers_names():
    for name in ("eager", "sdpa"):  # transformers accepts them for ModernBERT, as we do
        theirs = tf.AutoModel.from_pretrained(PRETRAINED_DIR, attn_implementation=name)
        assert theirs.config._attn_implementation == name


def test_an_unknown_attn_implementation_names_the_package_option():
    with pytest.raises(ValueError, match=r"attn_implementation='flex_attention'.*attention_backend="):
        mm.ModernBertModel.from_pretrained(PRETRAINED_DIR, attn_implementation="flex_attention")
    with pytest.raises(ValueError, match=r"disagree"):
        mm.ModernBertModel.from_pretrained(PRETRAINED_DIR, attn_implementation="sdpa",
                                           attention_backend="eager")


# ----------------------------------------------------------------------------- nothing half-written
def test_a_model_on_meta_writes_nothing(mini, tmp_path):
    with torch.device("meta"), hub.init_skips_meta():  # shapes only, as from_pretrained starts
        model = mm.ModernBertForMaskedLM(mini[0].config)
    with pytest.raises(ValueError, match=r"meta device.*from_pretrained"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists() or files(tmp_path / "out") == []


def test_a_failed_save_leaves_the_folder_as_it_was(mini, tmp_path):
    model, tokenizer = mini
    model.save_pretrained(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="tokenizer must be"):
        mm.ModernBertForMaskedLM(model.config).save_pretrained(tmp_path, tokenizer="not a tokenizer")
    assert snapshot(tmp_path) == before  # config.json and the weights untouched, no temporary left


def test_saving_over_a_sharded_checkpoint_removes_its_shards(mini, tmp_path):
    theirs = tf.AutoModelForMaskedLM.from_pretrained(PRETRAINED_DIR)
    theirs.save_pretrained(tmp_path, max_shard_size="2MB")  # transformers' shards and index
    assert "model.safetensors.index.json" in files(tmp_path)
    torch.manual_seed(0)
    ours = mm.ModernBertForMaskedLM(mini[0].config)  # other weights than the shards hold
    ours.save_pretrained(tmp_path)
    assert [name for name in files(tmp_path) if "safetensors" in name] == ["model.safetensors"]
    reloaded = tf.AutoModelForMaskedLM.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(reloaded[key], tensor) for key, tensor in ours.state_dict().items())


# ----------------------------------------------------------------------------- errors that name the file
def test_a_damaged_file_is_named(tmp_path):
    shutil.copytree(PRETRAINED_DIR, tmp_path / "weights")
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match=r"weights/model\.safetensors cannot be read.*save or download"):
        mm.ModernBertForMaskedLM.from_pretrained(tmp_path / "weights")
    shutil.copytree(PRETRAINED_DIR, tmp_path / "config")
    (tmp_path / "config" / "config.json").write_text('{"hidden_size": 256,')
    with pytest.raises(ValueError, match=r"config/config\.json cannot be read \(JSONDecodeError"):
        mm.ModernBertForMaskedLM.from_pretrained(tmp_path / "config")


def test_a_missing_checkpoint_folder_says_what_it_should_hold(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained(tmp_path)
    message = str(error.value)
    assert "config.json" in message and "model.safetensors" in message and "tokenizer.json" in message
    assert not message.split(":")[1].strip().startswith("run")  # make is the repository's route only


def test_too_long_texts_name_the_helpers_own_option(mini):
    model, tokenizer = mini
    long = "x = 1\n" * 2000  # far more than the mini model's 1,024 positions
    with pytest.raises(ValueError, match=r"embed\(\.\.\., truncation=True\)") as error:
        mm.embed(model, tokenizer, [long])
    assert "encode" not in str(error.value)
    assert mm.embed(model, tokenizer, [long], truncation=True).shape == (1, model.config.hidden_size)
    with pytest.raises(ValueError, match=r"fill_mask reads the whole text: shorten it to at most 1024"):
        mm.fill_mask(model, tokenizer, long + "[MASK]")


@pytest.mark.parametrize("call", ["encode", "embed", "fill_mask"])
def test_bytes_are_named_as_bytes(mini, call):
    model, tokenizer = mini
    run = {"encode": lambda t: mm.encode(tokenizer, t), "embed": lambda t: mm.embed(model, tokenizer, t),
           "fill_mask": lambda t: mm.fill_mask(model, tokenizer, t)}[call]
    with pytest.raises(ValueError, match=r"is bytes; decode it first"):
        run(b"import [MASK]")
    if call != "fill_mask":
        with pytest.raises(ValueError, match=r"texts\[1\] is bytes; decode it first"):
            run(["import os", b"import [MASK]"])


def test_cuda_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda' asks for a CUDA GPU.*device='cpu'"):
        mm.ModernBertModel.from_pretrained(PRETRAINED_DIR, device="cuda")


def test_exclude_embeddings_as_transformers_names_it(mini):
    model, _ = mini
    theirs = tf.AutoModelForMaskedLM.from_pretrained(PRETRAINED_DIR)
    assert mm.num_parameters(model, exclude_embeddings=True) == theirs.num_parameters(exclude_embeddings=True)
    with pytest.warns(FutureWarning, match="exclude_embeddings"):
        assert mm.num_parameters(model, non_embedding=True) == theirs.num_parameters(exclude_embeddings=True)


# ----------------------------------------------------------------------------- sentence-transformers
@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("mean", False), ("cls", False)])
def test_sentence_transformers_loads_the_folder_and_embeds_the_same(mini, tmp_path, pooling, normalize):
    model, tokenizer = mini
    mm.save_sentence_transformers(model, tmp_path, pooling=pooling, normalize=normalize)
    loaded = SentenceTransformer(str(tmp_path), device="cpu")
    theirs = loaded.encode(TEXTS, convert_to_tensor=True)
    ours = mm.embed(model, tokenizer, TEXTS, pooling=pooling, normalize=normalize)
    assert (theirs - ours).abs().max() < TOL
    assert (loaded.similarity(theirs, theirs) - mm.similarity(ours, ours)).abs().max() < TOL


def test_pooling_choices_differ(mini):
    model, tokenizer = mini  # so that the test above would notice a pooling mix-up
    mean, cls = (mm.embed(model, tokenizer, TEXTS, pooling=p) for p in ("mean", "cls"))
    assert (mean - cls).abs().max() > 0.1
    with pytest.raises(ValueError, match=r"pooling='max' is invalid: choose one of \('mean', 'cls'\)"):
        mm.embed(model, tokenizer, TEXTS, pooling="max")


@pytest.mark.filterwarnings("ignore:some weights")  # an MLM checkpoint into a bare encoder
def test_the_bi_encoder_saves_for_sentence_transformers(mini, tmp_path):
    model, tokenizer = mini
    encoder = BiEncoder(mm.ModernBertModel.from_pretrained(PRETRAINED_DIR))
    encoder.save_sentence_transformers(tmp_path, tokenizer)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"].rpartition(".")[2] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    theirs = SentenceTransformer(str(tmp_path), device="cpu").encode(TEXTS, convert_to_tensor=True)
    ours = mm.embed(encoder.encoder, tokenizer, TEXTS, normalize=True)
    assert (theirs - ours).abs().max() < TOL
    assert theirs.norm(dim=-1).sub(1).abs().max() < TOL


def test_similarity_is_cosine_as_sentence_transformers_computes_it():
    torch.manual_seed(0)
    a, b = torch.randn(3, 8), torch.randn(5, 8)
    assert mm.similarity(a, b).shape == (3, 5)
    assert (mm.similarity(a, b) - util.cos_sim(a, b)).abs().max() < 1e-6
    assert (mm.similarity(a[0], b) - util.cos_sim(a[:1], b)).abs().max() < 1e-6
    with pytest.raises(ValueError, match=r"same H"):
        mm.similarity(a, torch.randn(2, 4))


def test_saving_for_sentence_transformers_needs_a_tokenizer(tmp_path):
    model = mm.ModernBertModel(mm.ModernBertConfig.from_pretrained(PRETRAINED_DIR))
    with pytest.raises(ValueError, match="pass tokenizer="):
        mm.save_sentence_transformers(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path) == []
