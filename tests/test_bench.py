"""bench.py's pieces that are not timings: the cases and the FLOP count, worked out by hand."""

import json
import math
from dataclasses import replace

import pytest
import torch

from modernbert_mini import bench, runtime
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


def test_peak_memory_is_nan_where_the_peak_cannot_be_reset(monkeypatch):
    """Not Linux, or /proc read-only: the call still runs, and no number is made up."""
    real_open, ran = open, []

    def no_clear_refs(path, *args, **kwargs):
        if str(path) == "/proc/self/clear_refs":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_clear_refs)
    assert math.isnan(bench.peak_memory(lambda: ran.append(1)))
    assert ran == [1]


def test_run_writes_after_every_case_and_times_each_first_call(tmp_path, monkeypatch):
    """A tiny run on the CPU: rows per case, each with its own first call, MFU over the peak of
    its dtype, and the files rewritten after each case (a run cut short keeps what it did)."""
    monkeypatch.setattr(bench, "peak_matmul_flops",
                        lambda size=2048, repeats=5, device="cpu", dtype=torch.float32:
                        {"blas": 1e9, "peak": {torch.float32: 1e9}[dtype]})
    seen = []

    def on_case(rows):
        seen.append([r["case"] for r in rows])
        bench.write(rows, tmp_path, "cpu")
        assert json.loads((tmp_path / "bench.json").read_text()) == rows

    rows = bench.run(["full", "varlen"], repeats=1, model="mini", on_case=on_case)
    assert seen == [["full"] * 3, ["full"] * 3 + ["varlen"] * 3]
    assert [r["impl"] for r in rows] == ["transformers", "modernbert_mini",
                                         "modernbert_mini, BLAS products"] * 2
    config = ModernBertConfig.mini()
    for r in rows:
        assert r["dtype"] == "float32" and r["reference"] == "transformers"
        assert r["first_call_seconds"] > 0  # its own, not another implementation's
        lengths = [512] * 8 if r["case"] == "full" else [512, 64, 320, 128, 448, 192, 256, 128]
        assert r["mfu"] == pytest.approx(bench.model_flops(config, lengths) / r["seconds"] / 1e9)
        assert r["max_abs_diff"] < 1e-3
    text = (tmp_path / "bench.md").read_text()
    assert "| full | modernbert_mini |" in text and (tmp_path / "bench.png").stat().st_size > 0


def test_on_a_gpu_eager_stands_beside_every_fast_backend(monkeypatch):
    """What a GPU run measures, per dtype (fp32, and bf16 where it is native): transformers'
    SDPA, ours with eager and every other backend that runs, each against its own dtype's row."""
    config = ModernBertConfig.mini(num_hidden_layers=1)
    ours = bench.ModernBertModel(config).eval()
    ref = bench.reference_model(config, ours)
    rt = runtime.detect()
    for bf16, half in ((True, "bfloat16"), (False, "float16")):
        monkeypatch.setattr(runtime, "detect", lambda bf16=bf16: replace(rt, bf16=bf16))
        monkeypatch.setattr(bench.backends, "available",
                            lambda device, dtype: ("eager", "sdpa", "local", "triton"))
        ids, mask = bench.make_case("full", config)
        impls = bench.implementations(config, ours, ref, ids, mask, "cuda", False, "full")
        for dtype in ("float32", half):
            expected = [f"transformers, {dtype} sdpa"] + [
                f"modernbert_mini, {dtype} {b}" for b in ("eager", "sdpa", "triton", "auto")]
            assert [n for n in impls if dtype in n] == expected
            for name in expected:
                assert impls[name].reference == f"transformers, {dtype} sdpa"
                assert str(impls[name].dtype) == f"torch.{dtype}"


def test_the_blas_row_runs_without_reordered_weights():
    """The second column of the comparison: ours with every product through the BLAS, as the
    reference's, whatever this CPU's default."""
    from modernbert_mini import linear
    layer, x = linear.Linear(768, 768, bias=False), torch.ones(4096, 768)
    with torch.no_grad(), linear.reordering(True):
        assert bench.with_blas(lambda: layer.reorders(x))() is False
        assert layer.reorders(x) is linear.ONEDNN  # reordered outside it
