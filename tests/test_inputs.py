"""Bad inputs are clear ValueErrors, raised before the model runs; good ones in every form work."""

import pytest
import torch

import modernbert_mini as mm
from test_model_reference import tiny_config

CONFIG = tiny_config(max_position_embeddings=64)  # vocab 96
IDS = torch.randint(5, 96, (2, 10))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return (mm.ModernBertModel(CONFIG).eval(), mm.ModernBertForMaskedLM(CONFIG).eval(),
            mm.ModernBertForSequenceClassification(CONFIG).eval())


BAD = [  # (input_ids, attention_mask, what the message must say)
    (torch.tensor([[5, -1, 7]]), None, r"token id -1 is outside the vocab.*\[0, 96\)"),
    (torch.tensor([[5, 96, 7]]), None, r"token id 96 is outside the vocab.*\[0, 96\)"),
    (torch.tensor([[5, 10**6]]), None, r"token id 1000000 is outside the vocab"),
    (IDS.float(), None, "integer token ids.*got dtype torch.float32"),
    (IDS.bool(), None, r"integer token ids \(int64 or int32\), got dtype torch.bool"),
    (IDS.to(torch.uint8), None, "integer token ids.*got dtype torch.uint8"),
    (IDS[0], None, r"2-D tensor \(batch, seq_len\), got \(10,\)"),
    (IDS[None], None, r"2-D tensor \(batch, seq_len\), got \(1, 2, 10\)"),
    ([[5, 6, 7]], None, "2-D tensor.*got list"),
    (torch.zeros(0, 5, dtype=torch.long), None, r"empty batch.*\(0, 5\)"),
    (torch.zeros(2, 0, dtype=torch.long), None, r"empty batch.*\(2, 0\)"),
    (torch.randint(5, 96, (1, 65)), None, "sequence length 65 is longer than max_position_embeddings=64"),
    (IDS, torch.ones(2, 9, dtype=torch.long), r"attention_mask has shape \(2, 9\), but input_ids has \(2, 10\)"),
    (IDS, torch.ones(10, dtype=torch.long), r"attention_mask has shape \(10,\)"),
    (IDS, [[1] * 10] * 2, "attention_mask has shape list"),
    (IDS, torch.ones(2, 10), "bool or integer 0/1, got dtype torch.float32"),
    (IDS, torch.full((2, 10), 2), r"only 0 \(padding\) and 1 \(token\)"),
    (IDS, torch.full((2, 10), -1), r"only 0 \(padding\) and 1 \(token\)"),
]


@pytest.mark.parametrize("ids,mask,message", BAD, ids=[m[:30] for _, _, m in BAD])
def test_bad_input_is_a_clear_error(models, ids, mask, message):
    for model in models:
        with pytest.raises(ValueError, match=message):
            model(ids, mask)


def test_mlm_labels_must_match_the_ids(models):
    with pytest.raises(ValueError, match=r"labels has shape \(2, 9\), but input_ids has \(2, 10\)"):
        models[1](IDS, labels=torch.zeros(2, 9, dtype=torch.long))


def test_num_labels_must_be_positive():
    with pytest.raises(ValueError, match="num_labels=0 is invalid"):
        mm.ModernBertForSequenceClassification(CONFIG, num_labels=0)


def test_good_inputs_in_every_form(models):
    model = models[0]
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        reference = model(IDS, mask).last_hidden_state
        for ids, m in [(IDS.int(), mask), (IDS, mask.bool()), (IDS, mask.int()), (IDS, mask.to(torch.uint8))]:
            torch.testing.assert_close(model(ids, m).last_hidden_state, reference, rtol=0, atol=0)
        assert model(torch.tensor([[1]])).last_hidden_state.shape == (1, 1, 32)
        assert model(torch.randint(5, 96, (1, 64))).last_hidden_state.shape == (1, 64, 32)
