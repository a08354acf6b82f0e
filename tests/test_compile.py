"""torch.compile traces the whole model as one graph (no syncs, no graph breaks) and keeps its
numbers and its gradients.

`backend="eager"` runs what dynamo captured with fullgraph=True (a sync or an unsupported call
would be an error), `"aot_eager"` adds AOT autograd's traced backward. Inductor's generated code
is measured in `make bench`, not here (it takes minutes to compile on 2 cores).
"""

import pytest
import torch

import modernbert_mini as mm
from test_model_reference import gradients, make_batch, max_abs_diff, tiny_config

CONFIG = tiny_config(num_hidden_layers=3, local_attention=8)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("padded", [False, True])
def test_the_model_traces_as_one_graph(padded):
    torch.manual_seed(0)
    model = mm.ModernBertForMaskedLM(CONFIG).eval()
    ids, mask = make_batch(CONFIG, [24, 15] if padded else [24, 24])
    mask = mask if padded else None
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        expected, got = model(ids, mask).logits, compiled(ids, mask).logits
    real = torch.ones_like(ids) if mask is None else mask
    assert max_abs_diff(got, expected, real) < 1e-5


def test_bad_ids_still_fail_inside_a_compiled_model():
    model = mm.ModernBertModel(CONFIG).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with pytest.raises(RuntimeError, match=r"token ids must be in \[0, 96\)"):
        compiled(torch.tensor([[5, 96, 7]]))


def test_compiled_gradients_equal_eager_ones():
    torch.manual_seed(0)
    model = mm.ModernBertForMaskedLM(CONFIG).train()
    ids, mask = make_batch(CONFIG, [24, 15])
    labels = torch.where(mask.bool(), ids, -100)
    expected = gradients(model, lambda m: m(ids, mask, labels=labels))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = gradients(model, lambda m: compiled(ids, mask, labels=labels))
    for name in expected:
        assert max_abs_diff(got[name], expected[name]) < 1e-6, name
