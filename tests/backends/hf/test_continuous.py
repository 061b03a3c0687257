"""Continuous batching against transformers' own ``generate`` one α at a time (``reference.py``; the engine's static
scheduler until issue 39), on the tiny random model in fp32."""
import os
from pathlib import Path

import pytest
import torch

from cotbench.backends import HFBackend
from cotbench.backends.hf import continuous
from cotbench.backends.hf.slot_cache import SlotCache, attention_mask, lazy_zeros
from reference import TransformersGenerate
from cotbench.records import GenerationRequest, SamplingSettings
from cotbench.valve.apply import attach_valve, valve_strength
from cotbench.valve.row_scale import row_scaled

QUESTIONS = ["How many eggs?", "What is 3 + 4?", "A train leaves at noon. When does it arrive?",
             "Tom has 5 apples and eats 2.", "x"]
ALPHAS = (0.0, 0.5, 1.0, 1.5, -0.5)


def _requests(sampling, alphas=ALPHAS):
    return [GenerationRequest(f"q{i}@{a}", f"<|user|>{q}</s><|assistant|>", a, sampling)
            for i, q in enumerate(QUESTIONS) for a in alphas]


def _generate(backend, requests):
    out = {}
    for batch in backend.generate(requests):
        for g in batch:
            assert g.request_id not in out, "a request came back twice"
            out[g.request_id] = g
    assert set(out) == {r.request_id for r in requests}
    return out


@pytest.fixture(scope="module")
def pair(tiny_model, tiny_valve):
    static = TransformersGenerate(HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=4))
    # 3 slots for 25 requests: rows finish, slots refill, the tail shrinks
    flowing = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=3)
    return static, flowing


def _same(a, b):
    for key in a:
        assert (a[key].text, a[key].n_generated_tokens, a[key].finish_reason, a[key].n_prompt_tokens) == \
               (b[key].text, b[key].n_generated_tokens, b[key].finish_reason, b[key].n_prompt_tokens), key


def test_greedy_outputs_match_the_static_path_at_mixed_alphas(pair):
    static, flowing = pair
    sampling = SamplingSettings(max_new_tokens=14)
    expected = _generate(static, _requests(sampling))
    _same(expected, _generate(flowing, _requests(sampling)))
    assert len({g.text for g in expected.values()}) > len(QUESTIONS)  # α really changed outputs


def test_eos_and_stop_strings_end_rows_where_the_static_path_does(pair):
    static, flowing = pair
    plain = _generate(static, _requests(SamplingSettings(max_new_tokens=16)))
    text = plain["q0@0.0"].text
    stop = text[len(text) // 2:][:2]  # a string the model is known to produce
    ids = static.tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = ids[3]  # a token it is known to produce, made an end-of-sequence token for both paths
    for backend in pair:
        backend._eos_ids.add(eos)
    try:
        sampling = SamplingSettings(max_new_tokens=16, stop=(stop,))
        expected = _generate(static, _requests(sampling))
        got = _generate(flowing, _requests(sampling))
    finally:
        for backend in pair:
            backend._eos_ids.discard(eos)
    _same(expected, got)
    lengths = {g.n_generated_tokens for g in got.values()}
    assert min(lengths) < 16 and any(g.finish_reason == "stop" for g in got.values())


def test_shared_prefix_and_length_groups_give_the_same_outputs(pair, tiny_model, tiny_valve, monkeypatch):
    from cotbench.backends.hf import slot_attention

    static, _ = pair
    preamble = "<|system|>You are a careful solver. Think step by step, then answer.</s>"
    requests = [GenerationRequest(r.request_id, preamble + r.prompt, r.alpha, r.sampling)
                for r in _requests(SamplingSettings(max_new_tokens=12))]
    seen = []
    monkeypatch.setattr(slot_attention, "ROWS_PER_GROUP", 2)
    monkeypatch.setattr(continuous, "slot_groups", lambda lengths: seen.append(slot_attention.slot_groups(lengths)) or seen[-1])
    flowing = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=6)
    _same(_generate(static, requests), _generate(flowing, requests))
    prompt_tokens = sum(len(static.tokenizer(r.prompt)["input_ids"]) for r in requests)
    shared = len(static.tokenizer(preamble)["input_ids"])
    # the preamble ran once per α, not once per prompt
    assert flowing.last_stats.prompt_tokens <= prompt_tokens - (len(requests) - len(ALPHAS)) * (shared - 2)
    assert any(len({width for _, _, width in groups}) > 1 for groups in seen)  # groups read to different widths


def test_row_scaled_layers_give_pefts_logits_for_each_row(tiny_model, tiny_valve):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 9, 14, 30, 7]] * 3)
    alphas = [0.0, 0.7, 1.3]
    wrapped = attach_valve(AutoModelForCausalLM.from_pretrained(tiny_model), tiny_valve)
    expected = []
    with torch.inference_mode():
        for row, alpha in enumerate(alphas):
            with valve_strength(wrapped, alpha):
                expected.append(wrapped(input_ids=ids[row:row + 1]).logits[0])
        model, strengths = row_scaled(attach_valve(AutoModelForCausalLM.from_pretrained(tiny_model), tiny_valve))
        strengths.set(alphas, torch.float32, "cpu")
        got = model(input_ids=ids).logits
    for row in range(3):
        torch.testing.assert_close(got[row], expected[row], rtol=0, atol=1e-5)


def test_row_at_alpha_zero_in_a_mixed_batch_is_the_base_model_bit_for_bit(tiny_model, tiny_valve):
    """Base and down-projection run as one GEMM over [W; A]: the base columns must be the plain GEMM's."""
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 9, 14, 30, 7]] * 2)
    with torch.inference_mode():
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(input_ids=ids).logits[0]
        model, strengths = row_scaled(attach_valve(AutoModelForCausalLM.from_pretrained(tiny_model), tiny_valve))
        strengths.set([0.0, 0.8], torch.float32, "cpu")
        mixed = model(input_ids=ids).logits
    assert torch.equal(mixed[0], base)
    assert not torch.equal(mixed[1], base)
    from cotbench.valve.row_scale import RowScaledLoRALinear

    layers = [m for m in model.modules() if isinstance(m, RowScaledLoRALinear)]
    assert layers
    # [W; A] is the layer's only copy of W: no PEFT base layer is left holding a second one
    n_base = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
    n_lora = sum(layer.rank * (layer.stacked.in_features + layer.out_features) for layer in layers)
    assert sum(p.numel() for p in model.parameters()) + sum(layer.up_weight.numel() for layer in layers) == n_base + n_lora


def test_sampled_rows_do_not_depend_on_their_batch_mates(tiny_model, tiny_valve):
    sampling = SamplingSettings(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=3)
    small = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=2)
    large = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=7)
    a, b = _generate(small, _requests(sampling)), _generate(large, _requests(sampling))
    _same(a, b)
    reseeded = _generate(small, _requests(SamplingSettings(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=4)))
    assert any(a[k].text != reseeded[k].text for k in a)


def test_a_sampled_sweep_keeps_generators_only_for_live_rows(tiny_model, tiny_valve, monkeypatch):
    """One generator per request, freed when its row finishes: a long sampled sweep does not grow with it."""
    from cotbench.backends.hf import continuous

    samplers = []
    original = continuous.Sampler

    class Recorded(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            samplers.append(self)

    monkeypatch.setattr(continuous, "Sampler", Recorded)
    sampling = SamplingSettings(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=3)
    backend = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=2)
    requests = _requests(sampling)
    live = []
    for batch in backend.generate(requests):
        live.append(samplers[-1].n_generators)
    assert len(requests) > 2 and max(live) <= 2  # never more than the rows decoded together
    assert samplers[-1].n_generators == 0


def test_static_path_samples_the_same_whatever_the_batch_and_scheduler(tiny_model, tiny_valve, pair):
    """The static path draws from one generator per request too: batch 1, batch 4 and the continuous
    scheduler give the same sampled texts for the same seed."""
    sampling = SamplingSettings(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=3)
    static4, flowing = pair
    static1 = TransformersGenerate(static4.backend, batch_size=1)
    a = _generate(static1, _requests(sampling))
    _same(a, _generate(static4, _requests(sampling)))
    _same(a, _generate(flowing, _requests(sampling)))
    greedy = _generate(static4, _requests(SamplingSettings(max_new_tokens=10)))
    assert any(a[k].text != greedy[k].text for k in a)  # it really sampled


def test_batch_shrinks_to_what_memory_holds(tiny_model, monkeypatch):
    backend = HFBackend(str(tiny_model), dtype="float32", batch_size=64)
    monkeypatch.setattr(continuous, "_free_memory", lambda device: 1)  # room for no row at all: one at a time
    requests = _requests(SamplingSettings(max_new_tokens=5), alphas=(None,))
    assert len(_generate(backend, requests)) == len(QUESTIONS)
    assert backend.last_stats.slot_rows == backend.last_stats.decode_rows  # one slot, never idle


def test_requests_with_different_settings_each_come_back_once(pair):
    _, flowing = pair
    requests = _requests(SamplingSettings(max_new_tokens=4)) + [
        GenerationRequest(f"long-{r.request_id}", r.prompt, r.alpha, SamplingSettings(max_new_tokens=9))
        for r in _requests(SamplingSettings())]
    out = _generate(flowing, requests)
    assert {g.n_generated_tokens for k, g in out.items() if not k.startswith("long")} <= {1, 2, 3, 4}
    assert max(g.n_generated_tokens for k, g in out.items() if k.startswith("long")) == 9


def test_rows_moved_into_holes_between_refills_keep_their_outputs(pair, tiny_model, tiny_valve):
    static, _ = pair
    wide = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=32)  # all 25 rows at once
    plain = _generate(static, _requests(SamplingSettings(max_new_tokens=24)))
    ids = static.tokenizer(plain["q0@0.0"].text + plain["q2@1.0"].text, add_special_tokens=False)["input_ids"]
    eos = set(ids[2:12:3])  # tokens the model is known to produce: rows end at different steps
    for backend in (static, wide):
        backend._eos_ids.update(eos)
    try:
        sampling = SamplingSettings(max_new_tokens=24)
        expected = _generate(static, _requests(sampling))
        got = _generate(wide, _requests(sampling))
    finally:
        static._eos_ids.difference_update(eos)
    _same(expected, got)
    assert len({g.n_generated_tokens for g in got.values()}) > 3
    stats = wide.last_stats
    assert stats.hole_fills > 0 and stats.compactions == 1  # one refill (the first), holes filled after it
    assert stats.slot_rows - stats.decode_rows < 8 * stats.decode_steps  # never a whole SHAPE_STEP of holes


def test_slot_cache_writes_each_row_at_its_own_position():
    cache = SlotCache(n_slots=3, capacity=6)
    keys = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)  # 2 rows, 1 head, 3 tokens
    positions = torch.tensor([[-1, 0, 1], [0, 1, 2]])  # row 0 left-padded
    cache.bind(torch.tensor([2, 0]), positions, width=3)
    k, v = cache.update(keys, keys + 100, layer_idx=0)
    assert k.shape == (2, 1, 3, 2)
    torch.testing.assert_close(cache.keys[0][2, 0, :2], keys[0, 0, 1:])  # the pad went to scratch
    torch.testing.assert_close(cache.keys[0][0, 0, :3], keys[1, 0])
    assert cache.keys[0][1].abs().sum() == 0  # slot 1 untouched
    mask = attention_mask(positions, 3, torch.float32, additive=False)
    assert mask[0, 0].tolist() == [[True, False, False], [True, False, False], [True, True, False]]
    before = cache.keys[0].clone()
    cache.reorder([2, 0, 1])  # slot 0 takes slot 2's rows, slot 1 slot 0's, slot 2 slot 1's
    torch.testing.assert_close(cache.keys[0], before[[2, 0, 1]])
    moved = cache.keys[0].clone()
    cache.reorder([1, 0, 2], columns=2)  # only the columns that hold keys move; the rest stay where they were
    torch.testing.assert_close(cache.keys[0][:2, :, :2], moved[[1, 0], :, :2])
    torch.testing.assert_close(cache.keys[0][:, :, 2:], moved[:, :, 2:])
    cache.reorder([1, 0, 2], columns=2)
    cache.bind(2, torch.tensor([[2], [3]]), width=4)  # the first two slots, as a view
    k, _ = cache.update(torch.ones(2, 1, 1, 2), torch.ones(2, 1, 1, 2), layer_idx=0)
    assert k.shape == (2, 1, 4, 2) and k.data_ptr() == cache.keys[0].data_ptr()
    torch.testing.assert_close(k[0, 0, :2], keys[0, 0, 1:])
    assert k[0, 0, 2].tolist() == [1.0, 1.0] and k[1, 0, 3].tolist() == [1.0, 1.0]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="resident memory read from Linux's /proc")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_slot_cache_buffers_are_zeros_that_cost_memory_only_where_touched(dtype):
    def resident() -> int:  # bytes, from /proc/self/statm's second field (pages)
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    shape = (64, 4, 1024 + 1, 64)  # 34 MB in bf16, 67 MB in fp32
    before = resident()
    buffer = lazy_zeros(shape, dtype, "cpu")
    allocated = resident() - before
    assert buffer.shape == shape and buffer.dtype == dtype and buffer.is_contiguous()
    assert allocated < buffer.numel() * buffer.element_size() // 8  # not filled up front
    buffer[:, :, :10] = 1.0  # what a row writes is kept; the rest reads as zeros
    assert bool((buffer[:, :, :10] == 1).all()) and bool((buffer[:, :, 10:] == 0).all())


def test_prompts_prefilled_in_small_passes_give_the_same_outputs(pair):
    static, flowing = pair
    sampling = SamplingSettings(max_new_tokens=6)
    expected = _generate(static, _requests(sampling))
    flowing.prefill_tokens = 16  # a few rows per pass at most
    try:
        got = _generate(flowing, _requests(sampling))
    finally:
        flowing.prefill_tokens = 2048
    _same(expected, got)
    assert flowing.last_stats.prefill_passes > len(_requests(sampling)) // flowing.batch_size


def test_adapter_on_an_embedding_is_refused_with_a_way_out(tiny_model, tmp_path):
    from conftest import make_valve

    from cotbench.errors import ValveError

    valve = make_valve(tiny_model, tmp_path / "embedding_valve", targets=("embed_tokens", "q_proj"))
    with pytest.raises(ValveError, match="not a linear LoRA layer.*valve export --valve"):
        HFBackend(str(tiny_model), str(valve), dtype="float32")


def test_bf16_decode_runs_the_c_kernel_and_agrees_with_sdpa(tiny_model, tiny_valve, monkeypatch):
    from cotbench.backends.hf import slot_attention
    from conftest import kernels_or_skip

    kernels_or_skip()
    from cotbench.backends.hf import lean_decode

    calls = []
    for module, name in ((slot_attention, "decode_attention"), (lean_decode, "rope_decode_attention")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    sampling = SamplingSettings(max_new_tokens=12)
    backend = HFBackend(str(tiny_model), str(tiny_valve), dtype="bfloat16", batch_size=3)
    with_kernel = _generate(backend, _requests(sampling))
    assert calls, "bf16 decode on CPU did not reach the kernel"
    backend.decode_kernel = False
    n_calls = len(calls)
    on_sdpa = _generate(backend, _requests(sampling))
    assert len(calls) == n_calls
    same = sum(with_kernel[k].text == on_sdpa[k].text for k in on_sdpa)  # 23/25 when written
    assert same >= 0.8 * len(on_sdpa)  # bf16 rounding differs between the two; a wrong kernel agrees on ~none


def test_bf16_valve_layers_in_c_are_as_close_to_fp32_as_addmm(tiny_model, tiny_valve):
    from transformers import AutoModelForCausalLM

    from conftest import kernels_or_skip

    kernels_or_skip()
    ids = torch.tensor([[5, 9, 14, 30, 7]] * 4)
    alphas = [0.0, 0.7, 1.3, -0.4]
    logits = {}
    with torch.inference_mode():
        for dtype, kernel in ((torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)):
            model, strengths = row_scaled(attach_valve(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype), tiny_valve))
            strengths.cpu_kernel = kernel
            strengths.set(alphas, dtype, "cpu")
            logits[dtype, kernel] = model(input_ids=ids).logits.float()
    exact = logits[torch.float32, False]
    addmm_error = (logits[torch.bfloat16, False] - exact).abs().max().item()
    kernel_error = (logits[torch.bfloat16, True] - exact).abs().max().item()
    assert kernel_error <= max(1.5 * addmm_error, 1e-2)
    assert not torch.equal(logits[torch.bfloat16, True], logits[torch.bfloat16, False])  # the kernel really ran


def test_fp32_runs_use_the_cpu_kernels_and_match_the_static_path(pair, monkeypatch):
    """fp32 (the dtype of CPUs without bf16 matmuls) runs the C kernels too: every decode step's attention and
    norms, the valve layers and the greedy pick; its greedy outputs still match the static path's here."""
    from cotbench.backends.hf import cpu_kernels, lean_decode, sampling

    used = []
    for module, name in ((lean_decode, "rope_decode_attention"), (lean_decode, "add_rms_norm"), (sampling, "argmax"),
                         (cpu_kernels, "lora_up")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _n=name, _f=original, **k: used.append(_n) or _f(*a, **k))
    static, flowing = pair
    requests = _requests(SamplingSettings(max_new_tokens=6))
    _same(_generate(flowing, requests), _generate(static, requests))
    assert {"rope_decode_attention", "add_rms_norm", "argmax", "lora_up"} <= set(used)
