"""Unpadding and packing (padding.py), and the model on every layout.

Checked against things worked out independently: unpad/pad by hand, each sequence run alone
(no padding, no mask at all), and the transformers reference for left-padded rows.
"""

from dataclasses import replace

import pytest
import torch

import modernbert_mini as mm
from modernbert_mini.padding import Batch, pad, unpad
from test_model_reference import load_hf_state_dict, make_batch, max_abs_diff, reference, tiny_config

CONFIG = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=2, local_attention=8)
TOL = 1e-5


# ----------------------------------------------------------------------------- padding.py
def test_unpad_by_hand():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    batch = Batch.unpad(mask)
    assert batch.cu_seqlens.tolist() == [0, 3, 7, 8] and batch.cu_seqlens.dtype == torch.int32
    assert batch.max_seqlen == 4 and batch.seqlens == (3, 4, 1)
    assert batch.indices.tolist() == [0, 1, 2, 5, 6, 7, 8, 10]
    assert batch.positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    x = torch.arange(15.0).view(3, 5)
    assert unpad(x, batch).tolist() == [0, 1, 2, 5, 6, 7, 8, 10]
    assert pad(unpad(x, batch), batch).tolist() == [[0, 1, 2, 0, 0], [5, 6, 7, 8, 0], [10, 0, 0, 0, 0]]


def test_left_padding_keeps_the_padded_positions():
    batch = Batch.unpad(torch.tensor([[0, 0, 1, 1]]))
    assert batch.positions.tolist() == [2, 3]  # as the reference's position ids


def test_packed_by_hand():
    batch = Batch.packed(torch.tensor([0, 2, 5, 6], dtype=torch.int32))
    assert batch.positions.tolist() == [0, 1, 0, 1, 2, 0] and batch.max_seqlen == 3
    assert batch.shape == (3, 3) and batch.indices.tolist() == [0, 1, 3, 4, 5, 6]
    padded = batch.as_padded()
    assert padded.padding_mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]


@pytest.mark.parametrize("cu,max_seqlen,message", [
    (torch.tensor([0, 3, 3]), None, "strictly increase"),
    (torch.tensor([1, 3]), None, "start at 0"),
    (torch.tensor([0.0, 3.0]), None, "int32"),
    (torch.tensor([[0, 3]]), None, "1-D tensor"),
    (torch.tensor([0, 3, 5]), 2, "max_seqlen=2 but the longest document .* has 3"),
])
def test_bad_cu_seqlens(cu, max_seqlen, message):
    with pytest.raises(ValueError, match=message):
        Batch.packed(cu, max_seqlen)


def test_a_row_with_no_tokens_is_an_error():
    model = mm.ModernBertModel(CONFIG).eval()
    ids = torch.randint(5, 96, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"attention_mask rows \[1\] have no tokens"):
        model(ids, mask)


# ----------------------------------------------------------------------------- the model
def alone(model, ids, mask):
    """Each row run by itself, without padding or mask: the output at its real tokens."""
    rows = []
    for row, m in zip(ids, mask.bool()):
        rows.append(model(row[m][None]).last_hidden_state[0])
    return rows


@pytest.mark.parametrize("backend", ["auto", "eager", "sdpa", "varlen", "tiled"])
def test_unpadded_batch_equals_each_sequence_alone(backend):
    torch.manual_seed(0)
    config = replace(CONFIG, attention_backend=backend)
    model = mm.ModernBertModel(config).eval()
    ids, mask = make_batch(config, [1, 5, 19, 30], left_pad_last=False)
    with torch.no_grad():
        out = model(ids, mask).last_hidden_state  # (B, S, H)
        for row, expected in enumerate(alone(model, ids, mask)):
            assert max_abs_diff(out[row, :len(expected)], expected) < TOL


def test_packed_documents_never_see_each_other():
    torch.manual_seed(0)
    model = mm.ModernBertForMaskedLM(CONFIG).eval()
    docs = [torch.randint(5, 96, (n,)) for n in (4, 23, 1, 17)]
    cu = torch.tensor([0, 4, 27, 28, 45], dtype=torch.int32)
    with torch.no_grad():
        packed = model(torch.cat(docs), cu_seqlens=cu).logits  # (T, V)
        for doc, start in zip(docs, cu.tolist()):
            single = model(doc[None]).logits[0]
            assert max_abs_diff(packed[start:start + len(doc)], single) < TOL


def test_packed_labels_and_sparse_prediction():
    torch.manual_seed(0)
    config = replace(CONFIG, sparse_prediction=True)
    model = mm.ModernBertForMaskedLM(config).eval()
    ids = torch.randint(5, 96, (30,))
    labels = torch.full((30,), -100)
    labels[[2, 9, 25]] = ids[[2, 9, 25]]
    cu = torch.tensor([0, 10, 30], dtype=torch.int32)
    with torch.no_grad():
        out = model(ids, labels=labels, cu_seqlens=cu)
        dense = mm.ModernBertForMaskedLM(CONFIG).eval()
        dense.load_state_dict(model.state_dict())
        full = dense(ids, cu_seqlens=cu).logits
    assert out.logits.shape == (3, 96)
    assert max_abs_diff(out.logits, full[[2, 9, 25]]) < TOL
    expected = torch.nn.functional.cross_entropy(full[[2, 9, 25]], ids[[2, 9, 25]])
    assert abs(out.loss.item() - expected.item()) < TOL


def test_packed_input_errors():
    model = mm.ModernBertModel(CONFIG).eval()
    ids = torch.randint(5, 96, (10,))
    with pytest.raises(ValueError, match=r"cu_seqlens covers 12 tokens, but input_ids has 10"):
        model(ids, cu_seqlens=torch.tensor([0, 12], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"1-D tensor \(total_tokens,\) with cu_seqlens"):
        model(ids[None], cu_seqlens=torch.tensor([0, 10], dtype=torch.int32))
    with pytest.raises(ValueError, match="has no padding: pass attention_mask=None"):
        model(ids, torch.ones(10), cu_seqlens=torch.tensor([0, 10], dtype=torch.int32))
    long = tiny_config(max_position_embeddings=8)
    with pytest.raises(ValueError, match="a packed document has 10 tokens, more than max_position_embeddings=8"):
        mm.ModernBertModel(long)(ids, cu_seqlens=torch.tensor([0, 10], dtype=torch.int32))


@pytest.mark.parametrize("backend", ["auto", "eager", "sdpa", "varlen", "tiled"])
def test_padding_never_changes_real_outputs(backend):
    """Each row of a padded batch (right-padded, the last row left-padded) gives what its
    tokens give alone, with no padding at all; and pad ids change nothing."""
    torch.manual_seed(0)
    config = replace(CONFIG, attention_backend=backend)
    model = mm.ModernBertForMaskedLM(config).eval()
    ids, mask = make_batch(config, [3, 17, 30, 9])
    other = torch.where(mask.bool(), ids, torch.randint(5, 96, ids.shape))
    real = mask.bool()
    with torch.no_grad():
        a, b = model(ids, mask).logits, model(other, mask).logits
        for row in range(len(ids)):
            alone = model(ids[row, real[row]][None]).logits[0]  # (n, V)
            assert max_abs_diff(a[row, real[row]], alone) < TOL, row
    assert max_abs_diff(a, b, real) == 0.0


def test_cls_pooling_of_a_left_padded_row_reads_its_first_real_token():
    """The reference reads position 0, a [PAD] on a left-padded row; we read the [CLS]."""
    config = tiny_config(classifier_pooling="cls")
    ref = reference("ModernBertForSequenceClassification", config, "sdpa", num_labels=3)
    ours = mm.ModernBertForSequenceClassification(config, num_labels=3).eval()
    load_hf_state_dict(ours, ref.state_dict())
    ids, mask = make_batch(config, [12, 5], left_pad_last=True)  # row 1: 7 pads, then its tokens
    right = ids[1, mask[1].bool()][None]  # the same tokens, no padding
    with torch.no_grad():
        left_logits = ours(ids, mask).logits[1]
        expected = ref(right).logits[0]
    assert max_abs_diff(left_logits, expected) < TOL


def test_position_ids_move_the_rope_angles():
    """Shifting every position by the same amount changes nothing: RoPE only sees distances."""
    model = mm.ModernBertModel(CONFIG).eval()
    load_hf_state_dict(model, reference("ModernBertModel", CONFIG).state_dict())  # large weights
    ids = torch.randint(5, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    shifted = torch.arange(12).expand(2, 12) + 40
    with torch.no_grad():
        a = model(ids, mask).last_hidden_state
        b = model(ids, mask, position_ids=shifted).last_hidden_state
        c = model(ids, mask, position_ids=(torch.randperm(12, generator=torch.Generator().manual_seed(0)) * 3).expand(2, 12)).last_hidden_state
    assert max_abs_diff(a, b, mask) < 1e-4
    assert max_abs_diff(a, c, mask) > 1e-2  # shuffled positions are another input


def test_encode_answers_in_the_input_shape_and_pools_alike_padded_or_packed():
    """encode gives (B, S, H) for (B, S) ids and (T, H) for packed ones, and pools each sequence
    the same way from either: [CLS] is each one's first real token, mean is over its real tokens."""
    torch.manual_seed(0)
    model = mm.ModernBertModel(CONFIG).eval()
    ids, mask = make_batch(CONFIG, [3, 17, 9])  # the last row left-padded
    real = mask.bool()
    cu_seqlens = torch.nn.functional.pad(real.sum(1).cumsum(0), (1, 0)).int()
    with torch.no_grad():
        padded = model.encode(ids, mask)
        packed = model.encode(ids[real], cu_seqlens=cu_seqlens)  # (T,): the rows back to back
    assert padded.last_hidden_state.shape == (3, 17, CONFIG.hidden_size)
    assert packed.last_hidden_state.shape == (int(real.sum()), CONFIG.hidden_size)
    assert max_abs_diff(padded.last_hidden_state[real], packed.last_hidden_state) < TOL
    by_hand = {"cls": torch.stack([padded.last_hidden_state[r, real[r]][0] for r in range(3)]),
               "mean": torch.stack([padded.last_hidden_state[r, real[r]].mean(0) for r in range(3)])}
    for how, expected in by_hand.items():
        assert max_abs_diff(padded.pool(how), expected) < TOL, how
        assert max_abs_diff(packed.pool(how), expected) < TOL, how
