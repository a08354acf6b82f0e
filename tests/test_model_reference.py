"""The oracle: transformers' ModernBERT. Helpers the model tests share, and the single pieces
(RoPE, the sliding window, GeGLU, the attention backends) checked against the reference's own.

Everything runs on the CPU in float32 with tiny configs; nothing is downloaded.
"""

from dataclasses import replace

import pytest
import torch
import transformers as tf
from transformers.masking_utils import sliding_window_bidirectional_overlay
from transformers.models.modernbert import modeling_modernbert as ref_modeling

from modernbert_mini.attention import eager_attention, make_attention_mask, sdpa_attention, sliding_window_mask
from modernbert_mini.config import ModernBertConfig
from modernbert_mini.hub import load_hf_state_dict
from modernbert_mini.mlp import GeGLU
from modernbert_mini.rope import apply_rope, apply_rope_, rope_cos_sin, rope_frequencies, rotate_half

TOL = 1e-5  # absolute, float32


# ----------------------------------------------------------------------------- helpers
def tiny_config(**fields) -> ModernBertConfig:
    """A few-thousand-parameter ModernBERT; special ids as the book's tokenizer gives them."""
    defaults = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                    num_attention_heads=2, max_position_embeddings=512, local_attention=8,
                    cls_token_id=1, sep_token_id=2, pad_token_id=3, mask_token_id=4)
    return ModernBertConfig(**{**defaults, **fields})


def reference(class_name: str, config: ModernBertConfig, backend: str = "eager", seed: int = 0,
              **hf_fields):
    """A transformers ModernBERT of the same config, with random weights all over (norms too)."""
    hf_config = tf.ModernBertConfig(**config.to_hf_dict(), **hf_fields)
    hf_config._attn_implementation = backend
    torch.manual_seed(seed)
    model = getattr(tf, class_name)(hf_config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return model.eval()


def ours_like(cls, ref, config: ModernBertConfig, backend: str = "eager", **kwargs):
    """Our model of class `cls`, with the reference's state dict copied in by name (strict)."""
    model = cls(replace(config, attention_backend=backend), **kwargs).eval()
    load_hf_state_dict(model, ref.state_dict(), strict=True)
    return model


def make_batch(config: ModernBertConfig, lengths: list[int], seed: int = 0, left_pad_last: bool = True):
    """Random ids (B, S) with right padding, and the last row left-padded; the (B, S) 0/1 mask."""
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    ids = torch.randint(5, config.vocab_size, (len(lengths), S), generator=g)
    mask = torch.zeros(len(lengths), S, dtype=torch.long)
    for row, n in enumerate(lengths):
        if left_pad_last and row == len(lengths) - 1:
            mask[row, S - n:] = 1
        else:
            mask[row, :n] = 1
    ids[mask == 0] = config.pad_token_id
    ids[:, 0] = torch.where(mask[:, 0] == 1, config.cls_token_id, ids[:, 0])
    return ids, mask


def gradients(model, run) -> dict[str, torch.Tensor]:
    """Each parameter's gradient after run(model).loss.backward(), from zero."""
    model.zero_grad()
    run(model).loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return grads


def max_abs_diff(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Largest |a - b|, over the positions where `where` is true (e.g. the non-pad tokens)."""
    if where is not None:
        a, b = a[where.bool()], b[where.bool()]
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


# ----------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("head_dim,theta", [(64, 160_000.0), (64, 10_000.0), (8, 500.0), (16, 1e6)])
def test_rope_cos_sin_equal_reference(head_dim, theta):
    hf = tf.ModernBertConfig(hidden_size=head_dim * 2, num_attention_heads=2, num_hidden_layers=2,
                             global_attn_every_n_layers=2, global_rope_theta=theta, local_rope_theta=theta)
    rotary = ref_modeling.ModernBertRotaryEmbedding(hf)
    positions = torch.arange(300)
    x = torch.zeros(1, 300, head_dim)
    for kind in ("full_attention", "sliding_attention"):
        cos_ref, sin_ref = rotary(x, positions[None], kind)
        cos, sin = rope_cos_sin(positions, head_dim, theta)
        assert torch.equal(cos, cos_ref[0]) and torch.equal(sin, sin_ref[0])


def test_rope_frequencies_by_hand():
    freqs = rope_frequencies(8, 10_000.0)
    expected = torch.tensor([10_000.0 ** (-i / 8) for i in (0, 2, 4, 6)])
    torch.testing.assert_close(freqs, expected)


def test_apply_rope_equals_reference():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 17, 16), torch.randn(2, 3, 17, 16)
    cos, sin = rope_cos_sin(torch.arange(17), 16, 10_000.0)
    assert torch.equal(rotate_half(q), ref_modeling.rotate_half(q))
    ours = apply_rope(q, k, cos, sin)
    ref = ref_modeling.apply_rotary_pos_emb(q, k, cos[None], sin[None], unsqueeze_dim=1)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_in_place_rope_equals_apply_rope_bit_for_bit(dtype):
    """The layers' in-place rotation, on q and k inside a Wqkv output, gives apply_rope's bits,
    and gradients through it flow back to the projection's input."""
    torch.manual_seed(0)
    x = torch.randn(2, 17, 48, dtype=dtype, requires_grad=True)
    w = torch.randn(3 * 48, 48, dtype=dtype) * 0.1
    cos, sin = rope_cos_sin(torch.arange(17), 16, 10_000.0)
    qkv = (x @ w.T).unflatten(-1, (3, 3, 16))  # (B, S, 3, nh, hd)
    q, k, v = qkv.detach().unbind(-3)
    expected = apply_rope(q, k, cos[:, None], sin[:, None])
    apply_rope_(qkv[..., :2, :, :], cos[:, None, None], sin[:, None, None])
    assert torch.equal(qkv[..., 0, :, :], expected[0]) and torch.equal(qkv[..., 1, :, :], expected[1])
    qkv.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    q, k, v = (x2 @ w.T).unflatten(-1, (3, 3, 16)).unbind(-3)
    (sum(t.sum() for t in apply_rope(q, k, cos[:, None], sin[:, None])) + v.sum()).backward()
    assert torch.equal(x.grad, x2.grad)


def test_rope_scores_depend_only_on_distance():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32).expand(1, 1, 50, 32), torch.randn(1, 1, 1, 32).expand(1, 1, 50, 32)
    cos, sin = rope_cos_sin(torch.arange(50), 32, 10_000.0)
    q, k = apply_rope(q, k, cos, sin)
    scores = (q @ k.transpose(-2, -1))[0, 0]  # (50, 50): the same q and k at every position
    for d in (-7, 0, 3, 20):
        diagonal = torch.diagonal(scores, offset=d)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- the window
@pytest.mark.parametrize("seq_len,window", [(1, 4), (10, 4), (40, 16), (300, 128), (9, 6)])
def test_sliding_window_mask_equals_reference(seq_len, window):
    half_window = tf.ModernBertConfig(local_attention=window).sliding_window  # local_attention // 2
    allowed = sliding_window_bidirectional_overlay(half_window)
    i = torch.arange(seq_len)
    ref = allowed(0, 0, i[:, None], i[None, :])
    assert torch.equal(sliding_window_mask(seq_len, window), ref)


def test_sliding_window_by_hand():
    # window 4 = two keys on each side and the token itself
    expected = torch.tensor([[1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 1, 0],
                             [0, 1, 1, 1, 1, 1],
                             [0, 0, 1, 1, 1, 1],
                             [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(sliding_window_mask(6, 4), expected)


def test_attention_mask_combines_padding_and_window():
    padding = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert make_attention_mask(None, 6, None) is None
    global_mask = make_attention_mask(padding, 6, None)
    assert global_mask.shape == (2, 1, 1, 6) and torch.equal(global_mask[:, 0, 0], padding)
    local = make_attention_mask(padding, 6, 4)  # (2, 1, 6, 6)
    assert torch.equal(local[1, 0], sliding_window_mask(6, 4))
    assert torch.equal(local[0, 0], sliding_window_mask(6, 4) & padding[0][None, :])


# ----------------------------------------------------------------------------- GeGLU
def test_geglu_equals_reference_mlp():
    hf = tf.ModernBertConfig(hidden_size=24, intermediate_size=40)
    ref = ref_modeling.ModernBertMLP(hf).eval()
    ours = GeGLU(24, 40).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 24)
    assert torch.equal(ours(x), ref(x))


def test_geglu_by_hand():
    mlp = GeGLU(4, 3)
    x = torch.randn(2, 4)
    a, g = x @ mlp.Wi.weight[:3].T, x @ mlp.Wi.weight[3:].T
    gelu = 0.5 * a * (1 + torch.erf(a / 2 ** 0.5))  # exact GELU
    torch.testing.assert_close(mlp(x), (gelu * g) @ mlp.Wo.weight.T)


# ----------------------------------------------------------------------------- backends
def test_eager_and_sdpa_agree_and_stay_finite():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 8) for _ in range(3))
    padding = torch.ones(2, 20, dtype=torch.bool)
    padding[1, 5:] = False  # pad queries whose whole window is padding have no key at all
    mask = make_attention_mask(padding, 20, 4)
    eager, sdpa = eager_attention(q, k, v, mask), sdpa_attention(q, k, v, mask)
    assert torch.isfinite(eager).all() and torch.isfinite(sdpa).all()
    real = padding[:, None, :, None].expand_as(eager)
    assert max_abs_diff(eager, sdpa, real) < TOL
