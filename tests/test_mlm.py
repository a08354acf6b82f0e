"""Masking (rates, special tokens, labels, reproducibility) and packing (nothing dropped, budgets,
cu_seqlens, epochs, resumable state), checked against counts and the tokenizer itself."""

import math

import pytest
import torch

from modernbert_mini.config import ModernBertConfig
from modernbert_mini.data import load_corpus
from modernbert_mini.mlm import (evaluate, loss_by_position, mask_tokens, masking_args,
                                 step_generator, tokenize_documents, unigram_baseline)
from modernbert_mini.packing import (PackedBatch, PackedLoader, collate, pad_fraction,
                                     sequence_positions)
from modernbert_mini.model import IGNORE_INDEX
from modernbert_mini.tokenizer import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID, Sequences,
                                       train_tokenizer)

SPECIAL = (UNK_ID, CLS_ID, SEP_ID, PAD_ID, MASK_ID)
V = 8192


def sample_ids(n=400_000, seed=1234):
    """Ordinary ids with [CLS]/[SEP]/[PAD] sprinkled in, about 10% of them.

    (Its seed is not one the masking uses: the same seed would give the same random stream.)
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), V, (n,), generator=gen)
    where = torch.rand(n, generator=gen) < 0.1
    ids[where] = torch.tensor([CLS_ID, SEP_ID, PAD_ID])[torch.randint(3, (int(where.sum()),), generator=gen)]
    return ids


def masked(ids, seed=0, **kwargs):
    return mask_tokens(ids, mask_id=MASK_ID, vocab_size=V, special_ids=SPECIAL,
                       generator=torch.Generator().manual_seed(seed), **kwargs)


def test_rates_are_30_percent_then_80_10_10():
    ids = sample_ids()
    inputs, labels = masked(ids)
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != IGNORE_INDEX
    n_ordinary, n_chosen = int(ordinary.sum()), int(chosen.sum())
    # binomial standard deviations here are ~0.0008 (chosen) and ~0.0012 (80%): 5 sigma or so
    assert n_chosen / n_ordinary == pytest.approx(0.30, abs=0.004)
    as_mask = (inputs[chosen] == MASK_ID).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    random = 1 - as_mask - kept
    # a random replacement equals the original with probability 1 / (V - 5): counted as kept
    assert as_mask == pytest.approx(0.8, abs=0.006)
    assert random == pytest.approx(0.1 * (1 - 1 / (V - 5)), abs=0.005)
    assert kept == pytest.approx(0.1 + 0.1 / (V - 5), abs=0.005)
    assert masked(ids, rate=0.15)[1].ne(IGNORE_INDEX).sum() / n_ordinary == pytest.approx(0.15, abs=0.004)


def test_specials_never_chosen_labels_elsewhere_ignored():
    ids = sample_ids(50_000)
    inputs, labels = masked(ids)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != IGNORE_INDEX
    assert not (chosen & special).any()
    assert torch.equal(inputs[special], ids[special])  # specials stay as they are
    assert torch.equal(labels[chosen], ids[chosen])  # the target is the original token
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    assert inputs.shape == labels.shape == ids.shape and inputs.dtype == ids.dtype
    # a (B, S) batch of int32 works the same way
    inputs2d, labels2d = masked(ids[:1000].view(10, 100).int())
    assert inputs2d.shape == (10, 100) and inputs2d.dtype == torch.int32


def test_random_replacements_are_never_special_tokens():
    """A vocabulary of 5 specials and 2 ordinary ids: a replacement drawn from the whole vocab
    would be special 5 times in 7; ~150 draws here, so no seed passes by luck."""
    ids = torch.tensor([CLS_ID, 5, 6, SEP_ID] * 2500)
    for seed in range(3):
        inputs, labels = mask_tokens(ids, mask_id=MASK_ID, vocab_size=7, special_ids=SPECIAL,
                                     generator=torch.Generator().manual_seed(seed))
        replaced = (labels != IGNORE_INDEX) & (inputs != MASK_ID) & (inputs != ids)
        assert int(replaced.sum()) > 50  # half the draws give the original id back: ~75 here
        assert torch.isin(inputs[replaced], torch.tensor([5, 6])).all()


def test_random_replacements_come_only_from_replacement_ids():
    """replacement_ids=[6]: every random replacement is 6, never the other ordinary id 5."""
    ids = torch.tensor([CLS_ID, 5, 5, SEP_ID] * 2500)
    inputs, labels = mask_tokens(ids, mask_id=MASK_ID, vocab_size=7, special_ids=SPECIAL,
                                 replacement_ids=[6], generator=torch.Generator().manual_seed(0))
    replaced = (labels != IGNORE_INDEX) & (inputs != MASK_ID) & (inputs != ids)
    assert int(replaced.sum()) > 100 and (inputs[replaced] == 6).all()
    for bad in ([], [7], [MASK_ID]):
        with pytest.raises(ValueError, match="replacement_ids"):
            mask_tokens(ids, mask_id=MASK_ID, vocab_size=7, special_ids=SPECIAL, replacement_ids=bad)


def test_a_run_never_replaces_with_fillers_or_specials():
    """A tokenizer that ran out of merges has [unusedN] fillers: masking_args leaves them out,
    and the ids left are exactly those that encoding text can give."""
    tokenizer = train_tokenizer(["tiny corpus, tiny corpus"], vocab_size=320)
    config = ModernBertConfig.mini(vocab_size=tokenizer.get_vocab_size(), mask_token_id=MASK_ID)
    allowed = set(masking_args(tokenizer, config)["replacement_ids"])
    fillers = {i for token, i in tokenizer.get_vocab().items() if token.startswith("[unused")}
    assert len(fillers) > 20 and not allowed & fillers and not allowed & set(SPECIAL)
    produced = {i for text in ("tiny corpus", "x y z \u00e9", "tin") for i in
                tokenizer.encode(text, add_special_tokens=False).ids}
    assert produced <= allowed
    assert len(allowed) == tokenizer.get_vocab_size() - len(fillers) - len(SPECIAL)


def test_reproducible_with_a_generator():
    ids = sample_ids(10_000)
    a, b, c = masked(ids, seed=1), masked(ids, seed=1), masked(ids, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mask_tokens_bad_arguments():
    ids = sample_ids(100)
    with pytest.raises(ValueError, match="rate"):
        masked(ids, rate=0.0)
    with pytest.raises(ValueError, match="mask_id"):
        mask_tokens(ids, mask_id=V, vocab_size=V, special_ids=SPECIAL)
    with pytest.raises(ValueError, match="integer tensor"):
        mask_tokens(ids.float(), mask_id=MASK_ID, vocab_size=V, special_ids=SPECIAL)
    with pytest.raises(ValueError, match="special_ids"):
        mask_tokens(ids, mask_id=MASK_ID, vocab_size=V, special_ids=[V + 3])


# ----------------------------------------------------------------------------- packing
@pytest.fixture(scope="module")
def texts():
    return [doc.text for doc in load_corpus("train")[:20]]


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture(scope="module")
def sequences(texts, tokenizer):
    return tokenize_documents(texts, tokenizer, max_len=128)


def test_documents_become_cls_sep_sequences_with_nothing_dropped(texts, tokenizer, sequences):
    lengths = sequences.lengths
    assert max(lengths) <= 128 and len(sequences) > len(texts)  # long documents were cut
    inner = []
    for i in range(len(sequences)):
        seq = sequences[i].tolist()
        assert seq[0] == CLS_ID and seq[-1] == SEP_ID
        inner.extend(seq[1:-1])
    plain = [e.ids for e in [tokenizer.encode(t, add_special_tokens=False) for t in texts]]
    assert inner == [i for ids in plain for i in ids]  # every token, once, in order
    # chunks of one document are nearly equal: a 300-token document is 3 x 100, not 126+126+48
    one = tokenize_documents(["word " * 299 + "end"], tokenizer, max_len=128)
    pieces = [n - 2 for n in one.lengths]
    assert sum(pieces) == len(tokenizer.encode("word " * 299 + "end", add_special_tokens=False).ids)
    assert max(pieces) - min(pieces) <= 1
    # the template's own output for a short document is what we build
    short = tokenize_documents([texts[0][:200]], tokenizer, max_len=10_000)
    assert short[0].tolist() == tokenizer.encode(texts[0][:200]).ids


def test_packed_batches_fill_the_budget_and_cover_the_epoch(sequences):
    budget = 512
    loader = PackedLoader(sequences, seed=0)
    epoch = list(loader.batches(budget))
    assert loader.epoch == 1 and loader.position == 0
    seen = []
    for k, batch in enumerate(epoch):
        cu = batch.cu_seqlens
        assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == batch.num_tokens
        assert batch.input_ids.shape == (batch.num_tokens,) and batch.input_ids.dtype == torch.long
        lens = cu.diff().tolist()
        assert batch.max_seqlen == max(lens) and batch.num_tokens <= budget
        pieces = [batch.input_ids[a:b] for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())]
        assert all(p[0] == CLS_ID and p[-1] == SEP_ID for p in pieces)
        seen.extend(tuple(p.tolist()) for p in pieces)
        if k + 1 < len(epoch):  # full: the next sequence in line did not fit
            next_len = epoch[k + 1].cu_seqlens[1].item()
            assert batch.num_tokens + next_len > budget
    everything = sorted(tuple(sequences[i].tolist()) for i in range(len(sequences)))
    assert sorted(seen) == everything  # each sequence exactly once per epoch
    second = list(loader.batches(budget))
    assert [b.input_ids.tolist() for b in second] != [b.input_ids.tolist() for b in epoch]
    with pytest.raises(ValueError, match="budget"):
        loader.next_batch(64)


def test_batches_run_on_across_epochs_and_stay_full(sequences):
    """Without within_epoch, a batch at the end of an epoch is filled from the next one."""
    budget = 700
    loader = PackedLoader(sequences, seed=1)
    order = loader.order(0) + loader.order(1)
    consumed = []
    while loader.epoch < 2:
        batch = loader.next_batch(budget)
        cu = batch.cu_seqlens.tolist()
        consumed.extend(tuple(batch.input_ids[a:b].tolist()) for a, b in zip(cu, cu[1:]))
        if loader.epoch < 2:  # full: the next sequence in line did not fit
            assert batch.num_tokens + sequences.lengths[order[len(consumed)]] > budget
    expected = [tuple(sequences[i].tolist()) for i in order]
    assert consumed[:len(expected)] == expected[:len(consumed)]  # each once per epoch, in order
    assert len(consumed) >= len(sequences) * 2


def test_loader_state_resumes_exactly(sequences):
    loader = PackedLoader(sequences, seed=3)
    budgets = [300, 400, 512, 700] * 10
    full = [loader.next_batch(b).input_ids for b in budgets]
    first = PackedLoader(sequences, seed=3)
    for b in budgets[:13]:
        first.next_batch(b)
    state = first.state_dict()
    resumed = PackedLoader(sequences, seed=0)
    resumed.load_state_dict(state)
    rest = [resumed.next_batch(b).input_ids for b in budgets[13:]]
    assert all(torch.equal(a, b) for a, b in zip(full[13:], rest))
    with pytest.raises(ValueError, match="not the same data"):
        PackedLoader(Sequences(sequences.tokens[:10], sequences.offsets[:2]), seed=0).load_state_dict(state)


def test_select_and_collate(sequences):
    batch = collate(sequences, [3, 1, 4, 1])
    assert batch.num_sequences == 4
    part = batch.select(1, 3)
    assert torch.equal(part.input_ids, torch.cat([sequences[1], sequences[4]]).long())
    assert part.cu_seqlens.tolist() == [0, len(sequences[1]), len(sequences[1]) + len(sequences[4])]
    assert part.max_seqlen == max(len(sequences[1]), len(sequences[4]))
    with pytest.raises(ValueError, match="outside"):
        batch.select(2, 5)


def test_pad_fraction_by_hand():
    assert pad_fraction([4, 2, 2]) == pytest.approx(1 - 8 / 12)
    assert pad_fraction([4, 2, 2], pad_to=8) == pytest.approx(1 - 8 / 24)
    assert pad_fraction([5, 5]) == 0.0
    with pytest.raises(ValueError, match="pad_to"):
        pad_fraction([4, 9], pad_to=8)


# ----------------------------------------------------------------------------- in a training run
def test_each_seed_masks_its_own_way_and_each_step_too():
    """The generator a run masks step s with depends on the run's seed and on s: two seeds choose
    different tokens at the same step, and the same (seed, step) chooses the same ones. Fails if
    `step_generator` ignores the seed (e.g. `manual_seed(step)`) or the step."""
    ids = sample_ids(4_000)

    def chosen(seed, step):
        _, labels = mask_tokens(ids, mask_id=MASK_ID, vocab_size=V, special_ids=SPECIAL,
                                generator=step_generator(seed, step))
        return labels != IGNORE_INDEX

    assert torch.equal(chosen(0, 3), chosen(0, 3))
    for a, b in [((0, 3), (1, 3)), ((1, 3), (2, 3)), ((0, 3), (0, 4)), ((5, 0), (6, 0))]:
        same = (chosen(*a) == chosen(*b)).float().mean()
        assert same < 0.65, (a, b)  # independent 30% draws agree on 0.7^2 + 0.3^2 = 58%


class StubMLM(torch.nn.Module):
    """Stands in for a ModernBertForMaskedLM with sparse prediction: its logits at the masked
    tokens put 1.0 on the id in `guess` and 0 elsewhere, whatever the input; it records the mode
    it was called in."""

    def __init__(self, vocab_size, guess, mask_token_id=MASK_ID):
        super().__init__()
        self.config = type("Config", (), {"sparse_prediction": True, "mask_token_id": mask_token_id})
        self.vocab_size, self.guess, self.modes = vocab_size, guess, []

    def forward(self, input_ids, labels, cu_seqlens, max_seqlen):
        self.modes.append(self.training)
        chosen = labels != IGNORE_INDEX
        logits = torch.zeros(int(chosen.sum()), self.vocab_size)
        logits[:, self.guess] = 1.0
        loss = torch.nn.functional.cross_entropy(logits, labels[chosen])
        return type("Out", (), {"loss": loss, "logits": logits})


def stub_slice():
    """One packed batch of two sequences, four targets: two [MASK]ed (one of them token 7), one
    random, one kept."""
    ids = torch.tensor([CLS_ID, 7, 8, 7, SEP_ID, CLS_ID, 9, 7, SEP_ID])
    inputs = torch.tensor([CLS_ID, MASK_ID, MASK_ID, 12, SEP_ID, CLS_ID, 9, 7, SEP_ID])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[[1, 2, 3, 6]] = ids[[1, 2, 3, 6]]  # targets 7, 8, 7, 9
    batch = PackedBatch(ids, torch.tensor([0, 5, 9], dtype=torch.int32), 5)
    return [(batch, inputs, labels)]


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_scores_in_eval_mode_and_gives_the_mode_back(training):
    """A stub model always guessing token 7: accuracy 2/4 (targets 7, 8, 7, 9), 1/2 among the
    [MASK]ed ones, and the loss of logits (1 at 7, 0 elsewhere) worked out by hand. Fails if
    `evaluate` leaves the model in eval mode (no `model.train(was_training)`), or scores in
    train mode (dropout on)."""
    model = StubMLM(vocab_size=16, guess=7).train(training)
    scores = evaluate(model, stub_slice(), torch.device("cpu"))
    assert model.modes == [False] and model.training is training
    log_z = math.log(math.e + 15)  # logsumexp of one 1 and fifteen 0
    loss = (2 * (log_z - 1) + 2 * log_z) / 4  # the two 7s get logit 1, the 8 and the 9 get 0
    assert scores["loss"] == pytest.approx(loss, rel=1e-6)
    assert (scores["accuracy"], scores["mask_accuracy"], scores["masked_tokens"]) == (0.5, 0.5, 4)
    model.modes.clear()
    loss_by_position(model, stub_slice(), torch.device("cpu"))
    assert model.modes == [False] and model.training is training


def test_unigram_baseline_by_hand_without_special_tokens():
    """Training tokens [CLS] 7 7 [SEP] [CLS] 7 [SEP] [CLS] 8 [SEP] [CLS] 9 [SEP] in a vocabulary
    of 16: [CLS] and [SEP] are the most frequent (4 each) but never targets, so they must not
    count. Counted: 7 three times, 8 and 9 once; add-one smoothing over 16 ids, so p(7) = 4/21,
    p(8) = p(9) = 2/21, any other id 1/21. Targets 7, 8, 7, 9: the most frequent token (7) is
    right twice; the loss is the mean of -log p. Fails if special tokens are counted."""
    train_tokens = torch.tensor([CLS_ID, 7, 7, SEP_ID, CLS_ID, 7, SEP_ID, CLS_ID, 8, SEP_ID,
                                 CLS_ID, 9, SEP_ID], dtype=torch.int32)
    baseline = unigram_baseline(train_tokens, stub_slice(), 16, list(SPECIAL))
    assert baseline["token_id"] == 7
    assert baseline["accuracy"] == 0.5
    by_hand = -(2 * math.log(4 / 21) + math.log(2 / 21) + math.log(2 / 21)) / 4
    assert baseline["loss"] == pytest.approx(by_hand, rel=1e-12)


def test_sequence_positions_by_hand():
    """Three packed sequences of 3, 1 and 2 tokens: which each token is in, and where."""
    sequence, position = sequence_positions(torch.tensor([0, 3, 4, 6], dtype=torch.int32))
    assert sequence.tolist() == [0, 0, 0, 1, 2, 2]
    assert position.tolist() == [0, 1, 2, 0, 0, 1]
