"""The lean decode step: transformers' numbers, bit for bit, with less Python around them."""
from types import SimpleNamespace

import pytest
import torch

from cotbench.backends import HFBackend
from cotbench.backends.hf.continuous import ContinuousBatcher
from cotbench.backends.hf.lean_decode import LeanDecoder, why_not_lean
from cotbench.backends.hf.slot_attention import slot_groups
from cotbench.backends.hf.slot_cache import SlotCache

PROMPTS = [[5, 9, 14, 30, 7], [3, 3, 8, 1, 2, 40, 41, 42, 43], [6, 7, 8], [20, 21, 22, 23, 24, 25, 26]]
ALPHAS = [0.0, 0.5, 1.0, -0.5]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """Head size 64, so bf16 decode runs the C kernel's vector path where the CPU has one."""
    from conftest import make_tiny_model, make_valve

    model = make_tiny_model(tmp_path_factory.mktemp("wide_model"), hidden=256)
    return model, make_valve(model, tmp_path_factory.mktemp("wide_valve"))


def _decode_once(backend, lean: bool, kernels: bool = True):
    """Prefill PROMPTS one row each at ALPHAS, then one decode step for all rows: (logits, cache). ``kernels``
    False: no row lengths handed over, so the lean step stays on torch ops (as the batcher's decode_kernel=False)."""
    batcher = ContinuousBatcher(backend.model, backend.tokenizer, backend._eos_ids, backend._strengths, n_slots=4)
    cache = SlotCache(4, 16)
    with torch.inference_mode():
        for slot, prompt in enumerate(PROMPTS):
            batcher._forward(cache, torch.tensor([slot]), torch.tensor([prompt]), torch.arange(len(prompt))[None],
                             [ALPHAS[slot]])
        lengths = [len(p) + 1 for p in PROMPTS]
        groups = {"slot_groups": slot_groups(lengths, rows_per_group=2)}
        if kernels:
            groups["slot_lengths"] = torch.tensor(lengths, dtype=torch.int32)
        logits = batcher._forward(cache, len(PROMPTS), torch.tensor([[11], [12], [13], [14]]),
                                  torch.tensor([[len(p)] for p in PROMPTS]), ALPHAS, lean=lean, **groups)
    assert batcher._lean is not None  # the tiny Llama is laid out like Llama
    return logits, cache


def test_lean_step_gives_transformers_logits_and_cache_bit_for_bit_in_fp32(tiny_model, tiny_valve, wide_model):
    for model, valve in ((tiny_model, tiny_valve), wide_model):
        backend = HFBackend(str(model), str(valve), dtype="float32")
        (expected, expected_cache), (got, got_cache) = (_decode_once(backend, lean=False),
                                                        _decode_once(backend, lean=True, kernels=False))
        assert torch.equal(got, expected)
        assert all(torch.equal(a, b) for a, b in zip(got_cache.keys + got_cache.values,
                                                     expected_cache.keys + expected_cache.values))
        assert torch.isfinite(got).all() and not torch.equal(got[0], got[2])


def test_fp32_lean_step_in_c_is_transformers_up_to_the_order_of_sums(tiny_model, tiny_valve, wide_model, monkeypatch):
    """The C kernels in fp32 (the path of CPUs without bf16 matmuls): rounding differs only in how fp32 sums
    are ordered, so logits agree to ~1e-6 relative and every new key and value lands where transformers puts it."""
    from conftest import kernels_or_skip

    from cotbench.backends.hf import lean_decode

    kernels_or_skip()
    calls = []
    fused = lean_decode.rope_decode_attention
    monkeypatch.setattr(lean_decode, "rope_decode_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    for model, valve in ((tiny_model, tiny_valve), wide_model):
        backend = HFBackend(str(model), str(valve), dtype="float32")
        (expected, expected_cache), (got, got_cache) = _decode_once(backend, lean=False), _decode_once(backend, lean=True)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert not torch.equal(got, expected) or calls  # the C path ran (and may happen to round alike)
        for ours, theirs in zip(got_cache.keys + got_cache.values, expected_cache.keys + expected_cache.values):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        assert got.argmax(-1).tolist() == expected.argmax(-1).tolist()
    assert calls


def test_bf16_lean_step_fuses_rotary_cache_write_and_attention_in_c(tiny_model, tiny_valve, wide_model, monkeypatch):
    from cotbench.backends.hf import lean_decode
    from conftest import kernels_or_skip

    kernels_or_skip()
    calls = []
    real = lean_decode.rope_decode_attention
    monkeypatch.setattr(lean_decode, "rope_decode_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    for model, valve in ((tiny_model, tiny_valve), wide_model):  # the portable loop, then head size 64
        exact, exact_cache = _decode_once(HFBackend(str(model), str(valve), dtype="float32"), lean=False)
        backend = HFBackend(str(model), str(valve), dtype="bfloat16")
        (expected, expected_cache), n_before = _decode_once(backend, lean=False), len(calls)
        got, got_cache = _decode_once(backend, lean=True)
        assert len(calls) > n_before  # one call a layer
        # as close to fp32 as transformers' own bf16 step; a key in the wrong column would be far off
        assert (got - exact).abs().max() <= max(1.5 * (expected - exact).abs().max(), 1e-2)
        for ours, theirs, reference in zip(got_cache.keys + got_cache.values, expected_cache.keys + expected_cache.values,
                                           exact_cache.keys + exact_cache.values):
            written = slice(0, -1)  # the last column is transformers' scratch for padding, which we never write
            torch.testing.assert_close(ours[:, :, written].float(), reference[:, :, written], rtol=2 ** -6, atol=2 ** -6)
            torch.testing.assert_close(theirs[:, :, written].float(), reference[:, :, written], rtol=2 ** -6, atol=2 ** -6)


def test_decode_steps_of_a_sweep_take_the_lean_path(tiny_model, tiny_valve, monkeypatch):
    from cotbench.records import GenerationRequest, SamplingSettings

    calls = []
    real = LeanDecoder.__call__
    monkeypatch.setattr(LeanDecoder, "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    backend = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=3)
    requests = [GenerationRequest(f"q{i}", f"<|user|>{i} + {i}?</s><|assistant|>", 0.5, SamplingSettings(max_new_tokens=6))
                for i in range(4)]
    assert sum(len(batch) for batch in backend.generate(requests)) == 4
    assert len(calls) == backend.last_stats.decode_steps > 0


def _model(model_type, **config):
    return SimpleNamespace(config=SimpleNamespace(model_type=model_type, **config))


def test_models_not_laid_out_like_llama_keep_transformers_forward():
    assert "not one of llama" in why_not_lean(_model("gpt2"))
    assert "sliding-window" in why_not_lean(_model("mistral", sliding_window=4096))
    assert "sliding-window" in why_not_lean(_model("qwen2", use_sliding_window=False,
                                                  layer_types=["full_attention", "sliding_attention"]))
    assert "module names" in why_not_lean(_model("llama"))  # no .model.layers to run


def test_lean_prefill_follows_transformers_prefill_in_fp32(tiny_model, tiny_valve, wide_model):
    """Prefill through the lean layers (attention in cotbench's decode loop, issue 39): each row's last-column
    logits and every key and value it writes within rounding of fp32 sums of transformers' own prefill, rows
    of different lengths left-padded in one pass."""
    for model, valve in ((tiny_model, tiny_valve), wide_model):
        backend = HFBackend(str(model), str(valve), dtype="float32")
        batcher = ContinuousBatcher(backend.model, backend.tokenizer, backend._eos_ids, backend._strengths, n_slots=4)
        width = max(len(p) for p in PROMPTS)
        ids = torch.full((len(PROMPTS), width), 2)
        positions = torch.full((len(PROMPTS), width), -1)
        for i, prompt in enumerate(PROMPTS):
            ids[i, width - len(prompt):], positions[i, width - len(prompt):] = torch.tensor(prompt), torch.arange(len(prompt))
        outputs = []
        for prefill in (False, True):
            cache = SlotCache(4, 16)
            with torch.inference_mode():
                logits = batcher._forward(cache, torch.arange(4), ids, positions, ALPHAS, prefill=prefill)
            outputs.append((logits, cache))
        (expected, expected_cache), (got, got_cache) = outputs
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
        for a, b in zip(got_cache.keys + got_cache.values, expected_cache.keys + expected_cache.values):
            written = b[:, :, :width].abs().sum(-1) > 0  # the columns prefill wrote (scratch excluded)
            assert torch.equal(a[:, :, :width].abs().sum(-1) > 0, written)
            assert (a[:, :, :width] - b[:, :, :width]).abs().max() <= 1e-4 * b.abs().max()
