"""finetune.py: a training step lowers the loss, the contrastive loss and the fusion give the
values worked out by hand, and no test example reaches the fine-tuning data."""

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from modernbert_mini import data, results, tasks
from modernbert_mini import experiment as ex
from modernbert_mini import finetune as ft
from modernbert_mini.checkpoint import load_encoder_checkpoint
from modernbert_mini.config import ModernBertConfig
from modernbert_mini.data import corpus_tokenizer
from modernbert_mini.model import ModernBertForSequenceClassification, ModernBertModel
from modernbert_mini.optim import OptimConfig
from modernbert_mini.tokenizer import to_sequences


def constant_lr(lr):
    """Fine-tuning's settings with a constant learning rate (no warmup, no decay)."""
    return ft.FinetuneConfig(optim=replace(ft.FINETUNE_OPTIM, lr=lr, warmup_steps=0, decay_steps=0),
                             progress=False)


def tiny_config(**fields):
    return ModernBertConfig.mini(num_hidden_layers=2, hidden_size=32, intermediate_size=48,
                                 num_attention_heads=2, attention_backend="eager", **fields)


@pytest.fixture(scope="module")
def tokenizer():
    return corpus_tokenizer()


TEXTS = ["def add(a, b):\n    return a + b\n", "import asyncio\nloop = asyncio.new_event_loop()",
         "class Handler(logging.Handler):\n    pass", "def close(self):\n    self.sock.close()"]


# --- tokenizing and batching ------------------------------------------------------------------

def test_tokenize_cuts_long_texts_and_keeps_the_special_tokens(tokenizer):
    long = "x = 1\n" * 200
    sequences = to_sequences(tokenizer, [TEXTS[0], long], 16, overflow="truncate")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    short = tokenizer.encode(TEXTS[0]).ids  # the tokenizer's own [CLS] ... [SEP]
    assert sequences[0].tolist() == short
    assert len(sequences[1]) == 16
    assert sequences[1][0] == cls_id and sequences[1][-1] == sep_id
    assert tokenizer.padding is not None  # the caller's tokenizer keeps its own settings


def test_length_grouped_batches_cover_every_index_once():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]
    batches = ft.length_grouped_batches(lengths, 3, torch.Generator().manual_seed(0), group=2)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert sorted(len(b) for b in batches) == [1, 3, 3, 3]
    # unshuffled: sorted by length within each span of group * batch_size = 6 indices
    # lengths 5 1 9 3 7 2 -> 1 5 3 0 4 2; then 8 4 6 10 -> 7 8 6 9
    assert ft.length_grouped_batches(lengths, 3, group=2) == [[1, 5, 3], [0, 4, 2], [7, 8, 6], [9]]


# --- training ---------------------------------------------------------------------------------

def test_one_classifier_step_lowers_the_loss_on_a_tiny_batch(tokenizer):
    torch.manual_seed(0)
    model = ModernBertForSequenceClassification(tiny_config(), num_labels=3)
    labels = torch.tensor([0, 1, 2, 1])
    batch = ft.collate(to_sequences(tokenizer, TEXTS, 32, overflow="truncate"), range(4))
    model.eval()
    with torch.no_grad():
        before = ft.classifier_batch_loss(model, batch, labels).item()
    cfg = constant_lr(1e-4)
    losses = ft.fit(model, [0], lambda _: ft.classifier_batch_loss(model, batch, labels), cfg)
    with torch.no_grad():
        after = ft.classifier_batch_loss(model, batch, labels).item()
    assert losses == pytest.approx([before], rel=1e-5)  # no dropout: fit saw the same loss
    assert after < before - 0.01  # 1.103 -> 1.074 when this was written


def test_fit_trains_in_train_mode_and_leaves_eval_mode(tokenizer):
    """Dropout acts while fine-tuning: every module is in train mode at every step."""
    torch.manual_seed(0)
    model = ModernBertForSequenceClassification(tiny_config(classifier_dropout=0.5), num_labels=3)
    batch = ft.collate(to_sequences(tokenizer, TEXTS, 32, overflow="truncate"), range(4))
    labels = torch.tensor([0, 1, 2, 1])
    modes = []

    def loss_of(_):
        modes.append({m.training for m in model.modules()})
        return ft.classifier_batch_loss(model, batch, labels)
    model.eval()
    cfg = constant_lr(1e-4)
    ft.fit(model, [0, 1], loss_of, cfg)
    assert modes == [{True}, {True}]
    assert not model.training  # ready to predict


def test_one_biencoder_step_lowers_the_contrastive_loss(tokenizer):
    torch.manual_seed(0)
    model = ft.BiEncoder(ModernBertModel(tiny_config()))
    queries = ft.collate(to_sequences(tokenizer, ["add two numbers", "a new event loop",
                                                     "a logging handler", "close the socket"], 16, overflow="truncate"),
                             range(4))
    documents = ft.collate(to_sequences(tokenizer, TEXTS, 32, overflow="truncate"), range(4))

    def loss():
        return ft.contrastive_loss(model(queries), model(documents), temperature=0.05)
    with torch.no_grad():
        before = loss().item()
    cfg = constant_lr(1e-4)
    ft.fit(model, [0], lambda _: loss(), cfg)
    with torch.no_grad():
        assert loss().item() < before - 0.01


def test_train_classifier_learns_a_separable_task(tokenizer):
    """A few epochs on two kinds of text: the tiny model tells them apart afterwards."""
    torch.manual_seed(0)
    texts = [f"def f{i}(self):\n    return {i}" for i in range(8)] + \
            [f"The {w} is described here." for w in "cat dog sun moon tree lake rock bird".split()]
    labels = [0] * 8 + [1] * 8
    model = ModernBertForSequenceClassification(tiny_config(), num_labels=2)
    cfg = ft.FinetuneConfig(batch_size=4, epochs=6, optim=replace(ft.FINETUNE_OPTIM, lr=3e-3),
                            progress=False)
    losses = ft.train_classifier(model, tokenizer, texts, labels, cfg)
    assert len(losses) == 6 * 4
    predicted = ft.predict(model, tokenizer, texts, cfg.max_len).argmax(-1).tolist()
    assert predicted == labels


def test_biencoder_vectors_are_unit_mean_pooled_states(tokenizer):
    """BiEncoder on a packed batch == the mean of the padded model's states over real tokens."""
    torch.manual_seed(0)
    encoder = ModernBertModel(tiny_config()).eval()
    sequences = to_sequences(tokenizer, TEXTS, 32, overflow="truncate")
    with torch.no_grad():
        vectors = ft.BiEncoder(encoder)(ft.collate(sequences, range(4)))
        for i in range(4):
            states = encoder(sequences[i][None].long()).last_hidden_state[0]  # (S, H), one text
            expected = torch.nn.functional.normalize(states.mean(0), dim=-1)
            torch.testing.assert_close(vectors[i], expected, atol=1e-5, rtol=1e-5)


# --- the loss and the fusion by hand ----------------------------------------------------------

def test_contrastive_loss_by_hand():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    documents = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # S = Q D^T / t = [[0.6, 0], [0.8, 1]] / 0.5 = [[1.2, 0], [1.6, 2]]; targets 0, 1
    queries_to_documents = (-math.log(math.exp(1.2) / (math.exp(1.2) + 1))  # rows of S
                            - math.log(math.exp(2) / (math.exp(1.6) + math.exp(2)))) / 2
    documents_to_queries = (-math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))  # columns
                            - math.log(math.exp(2) / (1 + math.exp(2)))) / 2
    expected = (queries_to_documents + documents_to_queries) / 2
    assert ft.contrastive_loss(queries, documents, 0.5).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        ft.contrastive_loss(queries, documents[:1], 0.5)


def test_mean_cosine_by_hand():
    same_way = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert tasks.mean_cosine(same_way) == pytest.approx(1.0)
    # (1,0), (0,1), (-1,0): cosines 0, -1, 0 over the three pairs
    assert tasks.mean_cosine(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])) == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="N >= 2"):
        tasks.mean_cosine(torch.ones(1, 4))


def test_score_fusion_by_hand():
    """Per-query z-scores: dense [1, 2, 3] -> [-1, 0, 1]; lexical [10, 40, 10] -> [-0.577,
    1.155, -0.577]; at weight 0.5 document 1 wins, at 1.0 document 2, at 0.0 document 1."""
    dense, lexical = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 40.0, 10.0]])
    fused = tasks.fuse_scores(dense, lexical, 0.5)
    torch.testing.assert_close(fused, 0.5 * torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64)
                               + 0.5 * torch.tensor([[-1, 2, -1]], dtype=torch.float64) / 3 ** 0.5)
    assert tasks.top_k(tasks.fuse_scores(dense, lexical, 1.0), 1) == [[2]]
    assert tasks.top_k(fused, 1) == tasks.top_k(tasks.fuse_scores(dense, lexical, 0.0), 1) == [[1]]
    weight, tried = tasks.choose_fusion_weight(dense, lexical, lambda ranked: float(ranked[0][0] == 2))
    # document 2 beats document 1 when w - (1-w)/sqrt(3) > 2(1-w)/sqrt(3): w > 0.634
    assert weight == 0.7 and tried[1.0] == 1.0 and tried[0.6] == 0.0  # the first weight that wins
    with pytest.raises(ValueError, match="weight"):
        tasks.fuse_scores(dense, lexical, 1.5)


def test_min_steps_adds_epochs_for_small_training_sets():
    cfg = ft.FinetuneConfig(batch_size=4, epochs=2, min_steps=11, progress=False)
    batches = ft.epoch_batches([5] * 10, cfg)  # 3 batches an epoch: 4 epochs for 11 steps
    assert len(batches) == 12 and sorted(i for b in batches for i in b) == sorted(list(range(10)) * 4)
    assert len(ft.epoch_batches([5] * 10, ft.FinetuneConfig(batch_size=4, epochs=2))) == 6
    assert ft.epochs_for(10, cfg) == 4 and ft.epochs_for(100, cfg) == 2  # 25 batches an epoch


def test_the_curve_takes_the_least_steps_best_on_validation(monkeypatch):
    """choose_curve_steps: per model and size, the grid value of the best validation accuracy,
    the smaller on a tie; two values that give the same epochs are one run; the choice logged."""
    accuracy = {("pretrained", 100, 50): 0.30, ("pretrained", 100, 90): 0.35,
                ("random", 100, 50): 0.20, ("random", 100, 90): 0.20,  # a tie: the smaller
                ("pretrained", 1000, 50): 0.50, ("random", 1000, 50): 0.40}
    calls = []

    def fake_run(on, init, n, seed, min_steps):
        calls.append((init, n, min_steps))
        return {"accuracy": accuracy[(init, n, min_steps)]}
    monkeypatch.setattr(ex, "curve_run", fake_run)
    study = SimpleNamespace(cfg=ft.FinetuneConfig(batch_size=32, epochs=3), log={})
    chosen = ex.choose_curve_steps("validation study", study, [100, 1000], [50, 90], seed=0,
                                   inits=("pretrained", "random"))
    assert chosen == {ex.PRETRAINED: {100: 90, 1000: 50}, ex.RANDOM: {100: 50, 1000: 50}}
    # 1,000 examples are 32 batches an epoch: 50 and 90 steps both leave the 3 epochs, one run
    assert ("pretrained", 1000, 90) not in calls and len(calls) == 6
    logged = study.log["curve_choice"][ex.PRETRAINED]["100"]
    assert logged == {"validation_accuracy": {"50": 0.30, "90": 0.35}, "chosen": 90}
    assert ex.choose_curve_steps(None, study, [100], [50], 0, ("random",)) == {ex.RANDOM: {100: 50}}


def test_reference_encoder_pads_packed_sequences_as_bert_reads_them(tokenizer):
    """PaddedEncoder on packed ids == a BertModel run on the padded batch with its mask; the
    classifier pools the same states."""
    from transformers import BertConfig, BertModel

    from modernbert_mini import reference

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                                num_hidden_layers=2, num_attention_heads=2, intermediate_size=48),
                     add_pooling_layer=False).eval()
    encoder = reference.PaddedEncoder(bert, pad_id=0)
    sequences = to_sequences(tokenizer, TEXTS, 32, overflow="truncate")
    batch = ft.collate(sequences, range(4))
    with torch.no_grad():
        pooled = encoder.encode(batch.input_ids, cu_seqlens=batch.cu_seqlens,
                                max_seqlen=batch.max_seqlen).pool("mean")  # (4, 32)
        for i in range(4):
            alone = bert(sequences[i][None].long()).last_hidden_state[0].mean(0)
            torch.testing.assert_close(pooled[i], alone, atol=1e-5, rtol=1e-5)
        classifier = reference.MeanPoolClassifier(encoder, num_labels=3)
        out = classifier(**ft.to_device(batch, torch.device("cpu")), labels=torch.tensor([0, 1, 2, 0]))
        torch.testing.assert_close(out.logits, classifier.classifier(pooled))
        assert out.loss > 0


def test_reciprocal_rank_fusion_by_hand():
    dense = [[2, 0, 1], [0, 1]]
    bm25 = [[0, 3], [1, 0]]
    fused = tasks.reciprocal_rank_fusion([dense, bm25], k=1)
    # query 0, k=1: doc 0: 1/(1+2) + 1/(1+1) = 0.833; doc 2: 1/2; doc 3: 1/3; doc 1: 1/4
    # query 1: docs 0 and 1 both 1/2 + 1/3: a tie, the smaller index first
    assert fused == [[0, 2, 3, 1], [0, 1]]
    assert tasks.reciprocal_rank_fusion([dense, bm25], k=1, depth=2) == [[0, 2], [0, 1]]
    # with RRF's usual k=60 the one ranking that has doc 2 first still loses to doc 0,
    # which both rankings place high: 1/62 + 1/61 > 1/61
    assert tasks.reciprocal_rank_fusion([dense, bm25])[0][:2] == [0, 2]
    with pytest.raises(ValueError, match="different numbers of queries"):
        tasks.reciprocal_rank_fusion([dense, bm25[:1]])


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="batch_size"):
        ft.FinetuneConfig(batch_size=1)
    with pytest.raises(ValueError, match="warmup_steps \\+ decay_steps"):
        OptimConfig(warmup_steps=0.6, decay_steps=0.6)
    with pytest.raises(ValueError, match="warmup_steps=2.5"):
        OptimConfig(warmup_steps=2.5)
    with pytest.raises(ValueError, match="init="):
        load_encoder_checkpoint("nowhere", "scratch", num_labels=2, seed=0)


# --- no test example in the fine-tuning data --------------------------------------------------

@pytest.fixture(scope="module")
def datasets(tokenizer):
    cut = ft.FinetuneConfig().max_len
    return {"test": tasks.finetuning_data(tokenizer, cut, validation=False),
            "validation": tasks.finetuning_data(tokenizer, cut, validation=True)}


@pytest.mark.parametrize("split", ["test", "validation"])
def test_no_scored_example_in_the_finetuning_data(datasets, tokenizer, split):
    """Neither the texts of the scored split nor what the model sees of them (cut at max_len
    tokens) occur in the fine-tuning data, and no file is on both sides."""
    classification, search = datasets[split]
    cut = ft.FinetuneConfig().max_len
    for train, scored in ((classification.train, classification.test), (search.train, search.test)):
        assert {e.path for e in train}.isdisjoint(e.path for e in scored)
        seen = {t for e in train for t in tasks.example_texts(e)}
        assert not any(t in seen for e in scored for t in tasks.example_texts(e))
        seen = {tuple(s.tolist()) for s in to_sequences(
            tokenizer, [t for e in train for t in tasks.example_texts(e)], cut, overflow="truncate")}
        scored_sequences = to_sequences(tokenizer, [t for e in scored for t in tasks.example_texts(e)], cut, overflow="truncate")
        assert not any(tuple(s.tolist()) in seen for s in scored_sequences)
    if split == "test":  # the task's own test split, which the baselines score too
        whole = tasks.package_classification()
        assert classification.test == whole.test
        held = [e for e in whole.train if data.is_heldout(e.path, salt="validation:", percent=tasks.VALIDATION_PERCENT)]
        assert classification.validation == tuple(held) and 0.1 < len(held) / len(whole.train) < 0.2
        kept = len(whole.train) - len(held)
        assert 0 <= kept - len(classification.train) < 10  # the validation files, the cut-equal ones


def test_glue_offline_says_it_needs_the_network(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")
    monkeypatch.setattr(ft, "load_tokenizer", offline)
    with pytest.raises(RuntimeError, match="needs the network"):
        ft.finetune_glue("sst2")
    with pytest.raises(ValueError, match="not supported"):
        ft.finetune_glue("squad")


def test_drop_overlap_by_hand(tokenizer):
    """Two texts that differ only after the cut are one example to the model: out of training."""
    head = "def link(self, objects, output_dir=None):\n"
    test = (tasks.LabelledText(head + "    return 1\n", 0, "a/test.py", "link"),)
    train = (tasks.LabelledText(head + "    return 2\n", 0, "a/one.py", "link"),  # same first 8
             tasks.LabelledText("def other():\n    pass\n", 1, "a/two.py", "other"))
    task = tasks.ClassificationTask(("a", "b"), train, test)
    assert len(tokenizer.encode(head).ids) > 8  # the head alone fills the cut below
    assert tasks.drop_overlap(task, tokenizer, max_len=8).train == train[1:]
    assert tasks.drop_overlap(task, tokenizer, max_len=64).train == train  # apart when read whole


def test_mean_and_spread_and_the_table_by_hand():
    runs = [{"accuracy": 0.5, "seconds": 10.0, "name": "x"}, {"accuracy": 0.7, "seconds": 12.0}]
    spread = results.mean_and_spread(runs)  # sample standard deviation: sqrt(((-0.1)^2 + 0.1^2) / 1)
    assert list(spread) == ["accuracy", "seconds"]  # numbers only
    assert spread["accuracy"] == pytest.approx((0.6, math.sqrt(0.02)))
    assert spread["seconds"] == pytest.approx((11.0, math.sqrt(2)))
    table = results.markdown_table({"TF-IDF": {"accuracy": (0.625, None)},
                               "mini": {"accuracy": spread["accuracy"], "mrr@10": (0.3, 0.01)}})
    assert table.splitlines()[2] == "| TF-IDF | 0.625 | — | — | — | — | — | — |"
    assert table.splitlines()[3] == "| mini | 0.600 ± 0.141 | — | 0.300 ± 0.010 | — | — | — | — |"
    curve = results.markdown_table({"mini": {100: (0.4, 0.02), 300: (0.5, 0.01)}},
                              [(100, "100"), (300, "300")], first="labelled examples")
    assert curve.splitlines() == ["| labelled examples | 100 | 300 |", "|---|---:|---:|",
                                  "| mini | 0.400 ± 0.020 | 0.500 ± 0.010 |"]


def test_the_command_line_comes_from_the_config_types():
    """The same generator as train.py's: flags typed from the annotations, only given ones set."""
    import argparse

    from modernbert_mini import cli

    parser = argparse.ArgumentParser()
    cli.add_fields(parser, ft.FinetuneConfig, skip=("seed",), unset=True)
    args = parser.parse_args(["--lr=1e-3", "--betas", "0.8", "0.9", "--no-progress", "--epochs=2"])
    given = cli.given(args, ft.FinetuneConfig)
    assert given == {"lr": 1e-3, "betas": (0.8, 0.9), "progress": False, "epochs": 2}
    cfg = cli.build(ft.FinetuneConfig(), given)  # each value in the dataclass that holds it
    assert cfg == replace(ft.FinetuneConfig(), progress=False, epochs=2,
                          optim=replace(ft.FINETUNE_OPTIM, lr=1e-3, betas=(0.8, 0.9)))
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed=1"])  # skipped: the experiment's --seeds sets it


def test_run_cache_reruns_only_what_changed(tmp_path):
    cache, calls = results.RunCache(tmp_path), []

    def run(value):
        calls.append(value)
        return {"accuracy": value}
    what = {"kind": "classification", "model": "mini", "cfg": {"lr": 1e-3, "progress": True}}
    assert cache.get(what, lambda: run(0.5)) == {"accuracy": 0.5}
    again = {**what, "cfg": {"lr": 1e-3, "progress": False}}  # a progress bar changes nothing
    assert cache.get(again, lambda: run(0.9)) == {"accuracy": 0.5} and calls == [0.5]
    changed = {**what, "cfg": {"lr": 2e-3, "progress": True}}
    assert cache.get(changed, lambda: run(0.7)) == {"accuracy": 0.7} and calls == [0.5, 0.7]
    assert len(list(tmp_path.glob("classification-*.json"))) == 2
    assert results.RunCache(None).get(what, lambda: run(0.1)) == {"accuracy": 0.1}  # no cache


def test_compare_refuses_unknown_parts(tmp_path):
    with pytest.raises(ValueError, match="only="):
        ex.compare(tmp_path, tmp_path, only=["everything"])
    with pytest.raises(ValueError, match="cache=True"):
        ex.compare(tmp_path, tmp_path, only=["curve"], cache=False)


def test_fit_hands_the_config_and_its_schedule_to_the_optimizer(tokenizer):
    """Ten steps of `fit`, read back from the optimizer as it steps (a global step pre-hook):
    settings that differ from every default, and the learning rate of each step worked out by
    hand (warmup 20% = 2 steps: 1/2, 1; stable 4 steps; decay 40% = 4 steps: 1 - sqrt(k/4)).
    With grad_clip the gradients it gets have at most that norm. Fails if fit drops its decay or
    warmup, or the config's betas, eps, weight decay, decouple_lr or grad_clip."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    torch.manual_seed(0)
    model = ModernBertForSequenceClassification(tiny_config(), num_labels=3)
    batch = ft.collate(to_sequences(tokenizer, TEXTS, 32, overflow="truncate"), range(4))
    labels = torch.tensor([0, 1, 2, 1])
    seen = []

    def record(optimizer, args, kwargs):
        grads = [p.grad.flatten() for g in optimizer.param_groups for p in g["params"]]
        seen.append(([{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
                     float(torch.cat(grads).norm())))
    optim = OptimConfig(lr=2e-3, betas=(0.7, 0.9), eps=1e-5, weight_decay=0.2, decouple_lr=True,
                        grad_clip=1e-3, warmup_steps=0.2, decay_steps=0.4)
    cfg = ft.FinetuneConfig(optim=optim, progress=False)
    handle = register_optimizer_step_pre_hook(record)
    try:
        ft.fit(model, range(10), lambda _: ft.classifier_batch_loss(model, batch, labels), cfg)
    finally:
        handle.remove()
    factors = [0.5, 1, 1, 1, 1, 1, 1, 1 - math.sqrt(1 / 4), 1 - math.sqrt(2 / 4), 1 - math.sqrt(3 / 4)]
    assert len(seen) == 10
    for (groups, grad_norm), factor in zip(seen, factors):
        assert [g["weight_decay"] for g in groups] == [0.2, 0.0]  # none on norms and biases
        for g in groups:
            assert (g["betas"], g["eps"], g["decouple_lr"], g["max_lr"]) == ((0.7, 0.9), 1e-5, True, 2e-3)
            assert g["lr"] == pytest.approx(2e-3 * factor, rel=1e-12)
        assert grad_norm == pytest.approx(1e-3, rel=1e-3)  # clipped: the loss's gradient is larger
