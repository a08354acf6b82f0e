"""bench.py's pieces that are not timings: the cases and the FLOP count, worked out by hand."""

import torch

from modernbert_mini import bench
from modernbert_mini.config import ModernBertConfig


def test_cases_have_the_promised_shapes():
    config = ModernBertConfig.base()
    ids, mask = bench.make_case("full", config)
    assert ids.shape == (8, 512) and mask is None
    ids, mask = bench.make_case("varlen", config)
    assert ids.shape == (8, 512) and mask.sum().item() == 8 * 256 and mask.sum(1).max() == 512
    assert (ids[mask == 0] == config.pad_token_id).all()
    ids, mask = bench.make_case("long", config)
    assert ids.shape == (1, 8192) and mask is None


def test_model_flops_by_hand():
    # 3 layers (global, local, local), hidden 4, intermediate 6, window 2, one sequence of 5
    config = ModernBertConfig(vocab_size=64, hidden_size=4, intermediate_size=6, num_hidden_layers=3,
                              num_attention_heads=1, local_attention=2, pad_token_id=0,
                              cls_token_id=1, sep_token_id=2, mask_token_id=3)
    matmuls = 2 * (4 * 12 + 4 * 4 + 4 * 12 + 6 * 4)  # Wqkv, Wo, Wi, Wo per token
    # (query, key) pairs: 25 in the global layer; with +-1 tokens, 2 + 3 + 3 + 3 + 2 = 13
    attention = 4 * 4 * (25 + 13 + 13)  # q k^T and p v, 2 * hidden FLOPs a pair each
    assert bench.model_flops(config, [5]) == 5 * (3 * matmuls) + attention


def test_peak_memory_sees_an_allocation():
    assert bench.peak_memory(lambda: torch.ones(64, 2 ** 20).sum()) > 100 * 2 ** 20
