"""Same command, same tokens (issue 39): a row's output is a function of its prompt, α, the model and the settings
alone, on one machine and dtype.

Op by op first (each product a row goes through, checked bit for bit against the same row computed alone, at other
row counts, beside other rows and at 1 and 2 threads), then the engine: one reference run, and one run per factor
that may not change a token (batch size and batch mates, thread count, the thread count changing mid-run, the
scheduler, a run killed and resumed), each compared with the reference token for token, in fp32 and bf16. The
model is the tiny random Llama with head size 64 (a real model's), where PyTorch's SDPA prefill sums in blocks that
move with the batch's width; on CPUs without bf16 matrix products bf16 runs PyTorch's portable bf16 path.
Two Ray workers against one process: tests/test_ray.py.
"""
import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model, make_valve
from cotbench.backends import HFBackend
from cotbench.backends.hf.cpu_kernels import (KERNEL_DTYPES, add_rms_norm, argmax, decode_attention, load_library,
                                              lora_up, prefill_attention)
from cotbench.backends.hf.packed_linear import PackedLinear, packing_applies
from cotbench.records import GenerationRequest, SamplingSettings

DTYPES = ("float32", "bfloat16")
# openings that differ from the first word: the shared prefix is short and most of each prompt is prefilled
# beside other prompts of other lengths (padding)
WORDS = ["How", "What", "A", "Tom", "x", "Seven", "If", "The", "Each", "Sum", "Why", "Two"]
QUESTIONS = [f"{w} {i} plus {3 * i} is what?" + " Explain step by step." * (i % 4) for i, w in
             enumerate(WORDS * 2)]
ALPHAS = (0.0, 0.5, 1.0)
TOKENS = 20


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    root = tmp_path_factory.mktemp("head64")
    model = make_tiny_model(root / "model", hidden=256)  # 4 heads of 64, 2 key/value heads
    return model, make_valve(model, root / "valve")


def _requests(indices, sampling=SamplingSettings(max_new_tokens=TOKENS)):
    return [GenerationRequest(f"q{i}@{a}", f"<|user|>{QUESTIONS[i]}</s><|assistant|>", a, sampling)
            for i in indices for a in ALPHAS]


def _tokens(backend, requests) -> dict:
    return {g.request_id: g.token_ids for batch in backend.generate(requests) for g in batch}


def _backend(model64, dtype, **settings):
    model, valve = model64
    return HFBackend(str(model), str(valve), dtype=dtype, **{"batch_size": 64, "threads": 2, **settings})


@pytest.fixture(scope="module", params=DTYPES)
def reference(request, model64):
    """Every prompt at every α: batch 64, 2 threads, the continuous scheduler."""
    backend = _backend(model64, request.param)
    assert backend.why_not_deterministic() is None
    return request.param, _tokens(backend, _requests(range(len(QUESTIONS))))


def _same(reference_tokens, got):
    differ = sorted(k for k in got if got[k] != reference_tokens[k])
    assert not differ, f"{len(differ)} of {len(got)} token sequences differ from the reference: {differ[:6]}"
    assert len(got) > 0


# -- op by op ---------------------------------------------------------------------------------------------------

def _rows_alone_and_together(fn, x, counts=(1, 3, 5, 8, 64, 256)):
    """Row r of ``fn`` over x[a:a + m] for several m and offsets a, at 2 and 1 threads, each against row r of
    the first call that computed it."""
    first, threads = {}, torch.get_num_threads()
    try:
        for n_threads in (2, 1):
            torch.set_num_threads(n_threads)
            for m in counts:
                for offset in (0, 2):
                    out = fn(x[offset:offset + m])
                    for r in range(m):
                        seen = first.setdefault(offset + r, out[r].clone())
                        assert torch.equal(seen, out[r]), (n_threads, m, offset, r)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_linear_layers_the_engine_runs_give_a_row_the_same_bits_at_any_row_count_and_thread_count(dtype):
    """What the engine multiplies with: weights packed for oneDNN where it packs them (fp32 everywhere, bf16 on
    CPUs with bf16 matmuls), else PyTorch's linear (bf16 elsewhere). MKL's fp32 sgemm is not row-invariant;
    the engine packs fp32 for that reason too."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 1536).to(dtype)
    layer = PackedLinear(linear) if packing_applies(linear) else linear
    _rows_alone_and_together(layer, torch.randn(300, 576).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_attention_does_not_depend_on_padding_batch_mates_or_threads(dtype):
    """Each prompt token's attention is decode's loop over its own row to its own position: the same bits
    beside a longer row (a wider pass, padding in front), at 1 and 2 threads, and the same as decoding that
    token; within rounding of fp32 SDPA."""
    library = load_library()
    assert library is not None
    torch.manual_seed(1)
    heads, kv_heads, dim, length = 6, 2, 64, 37
    q = torch.randn(1, heads, length, dim).to(dtype)
    k, v = (torch.randn(1, kv_heads, length, dim).to(dtype) for _ in range(2))
    alone = prefill_attention(library, q, k, v, torch.arange(1, length + 1).view(1, -1), dim ** -0.5)
    expected = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(3, 1),
                                              v.float().repeat_interleave(3, 1), is_causal=True).transpose(1, 2)
    assert (alone.float() - expected).abs().max() < (1e-5 if dtype == torch.float32 else 2e-2)
    width, pad = length + 11, 11
    keys = torch.randn(2, kv_heads, width + 5, dim).to(dtype)
    values = torch.randn(2, kv_heads, width + 5, dim).to(dtype)
    keys[1, :, :length], values[1, :, :length] = k[0], v[0]
    queries = torch.randn(2, heads, width, dim).to(dtype)
    queries[1, :, pad:] = q[0]
    lengths = torch.stack([torch.arange(1, width + 1),
                           torch.cat([torch.zeros(pad, dtype=torch.long), torch.arange(1, length + 1)])])
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            together = prefill_attention(library, queries, keys, values, lengths, dim ** -0.5)
            assert torch.equal(together[1, pad:], alone[0])
    finally:
        torch.set_num_threads(threads)
    decoded = decode_attention(library, q[:, :, -1:], k, v, torch.tensor([length]), dim ** -0.5)
    assert torch.equal(decoded[0, 0], alone[0, -1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_norm_lora_and_argmax_kernels_compute_each_row_alone(dtype):
    library = load_library()
    torch.manual_seed(2)
    weight = torch.randn(256).to(dtype)
    pairs = torch.randn(300, 2, 256).to(dtype)  # (residual, delta) of each row, kept together
    _rows_alone_and_together(lambda rows: torch.cat(add_rms_norm(library, rows[:, 0].contiguous(),
                                                                 rows[:, 1].contiguous(), weight, 1e-6), 1), pairs)
    up_t = torch.randn(4, 256)
    with_low = torch.randn(300, 260).to(dtype)  # base (256 columns) and the low-rank part (4), as one GEMM gives
    _rows_alone_and_together(lambda rows: lora_up(library, rows[:, :256], rows[:, 256:],
                                                  torch.full((len(rows),), 0.7), up_t), with_low)
    tied = torch.zeros(3, 50, dtype=dtype)
    tied[:, 7] = tied[:, 31] = 1.0  # a tie: the first index, as torch.argmax, whatever the rows beside it
    assert argmax(library, tied) == [7, 7, 7] == argmax(library, tied[:1]) * 3


# -- the engine, one factor at a time ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size, indices", [(1, range(0, 24, 6)), (5, range(0, 24, 2)), (64, range(3, 17, 2))])
def test_batch_size_and_batch_mates_change_no_token(reference, model64, batch_size, indices):
    dtype, expected = reference
    _same(expected, _tokens(_backend(model64, dtype, batch_size=batch_size), _requests(indices)))


def test_the_thread_count_changes_no_token(reference, model64):
    dtype, expected = reference
    _same(expected, _tokens(_backend(model64, dtype, threads=1), _requests(range(24))))


def test_threads_changing_between_steps_change_no_token(reference, model64, monkeypatch):
    """As the thread governor does when other programs take CPUs: 1 and 2 threads by turns, step by step."""
    from cotbench.backends.hf import continuous

    dtype, expected = reference
    turns = iter(int(i % 3 == 0) + 1 for i in range(10 ** 6))
    real_forward = continuous.ContinuousBatcher._forward

    def forward(self, *args, **kwargs):
        torch.set_num_threads(next(turns))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(continuous.ContinuousBatcher, "_forward", forward)
    _same(expected, _tokens(_backend(model64, dtype, threads=2), _requests(range(24))))


def test_the_static_scheduler_gives_the_continuous_schedulers_tokens(reference, model64):
    dtype, expected = reference
    _same(expected, _tokens(_backend(model64, dtype, scheduler="static", batch_size=16), _requests(range(24))))


def test_without_a_shared_prefix_the_tokens_are_the_same(reference, model64):
    """Where the shared prefix ends depends on the run's prompts: computing every prompt whole changes nothing."""
    dtype, expected = reference
    backend = _backend(model64, dtype)
    backend.share_prefix = False
    _same(expected, _tokens(backend, _requests(range(24))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_seeded_sampled_run_reproduces_at_another_batch_size_and_thread_count(model64, dtype):
    sampling = SamplingSettings(max_new_tokens=TOKENS, temperature=0.8, top_p=0.95, seed=11)
    first = _tokens(_backend(model64, dtype), _requests(range(24), sampling))
    _same(first, _tokens(_backend(model64, dtype, batch_size=5, threads=1), _requests(range(0, 24, 4), sampling)))
    greedy = _tokens(_backend(model64, dtype), _requests(range(24)))
    assert any(first[k] != greedy[k] for k in first)  # it really sampled


class _Killed(Exception):
    pass


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_run_killed_and_resumed_stores_the_uninterrupted_runs_responses(model64, dtype, tmp_path):
    from cotbench.config import RunConfig
    from cotbench.report.samples_file import read_records
    from cotbench.runner import run_sweep

    model, valve = model64

    def config(out, batch_size):
        return RunConfig(model=str(model), valve=str(valve), tasks=("arithmetic",), n_generated=6,
                         alphas=ALPHAS, max_new_tokens=TOKENS, dtype=dtype, batch_size=batch_size,
                         grade_workers=0, out=str(out))

    run_sweep(config(tmp_path / "whole", 64), progress=False)
    cut = config(tmp_path / "cut", 4)
    backend = HFBackend(str(model), str(valve), dtype=dtype, batch_size=4)
    real_generate = backend.generate

    def dies_after_two_batches(requests):
        iterator = real_generate(requests)
        yield next(iterator)
        yield next(iterator)
        raise _Killed

    backend.generate = dies_after_two_batches
    with pytest.raises(_Killed):
        run_sweep(cut, backend=backend, progress=False)
    resumed = run_sweep(config(tmp_path / "cut", 4), progress=False)
    assert 0 < resumed.n_generated < 18
    whole, parts = ({r["key"]: (r["response"], r["n_generated_tokens"]) for r in read_records(tmp_path / name)}
                    for name in ("whole", "cut"))
    assert whole == parts and len(whole) == 18


def test_the_engine_says_when_it_is_not_deterministic(model64, monkeypatch):
    backend = _backend(model64, "float32")
    assert backend.numerics()["deterministic"] is True and "batch_size" not in backend.numerics()
    backend.lean_prefill = False
    assert backend.why_not_deterministic() == "switched off: lean_prefill"
    record = backend.numerics()
    assert record["deterministic"] is False and record["batch_size"] == 64 and record["because"]
    assert set(KERNEL_DTYPES) == {torch.float32, torch.bfloat16}
    backend.lean_prefill = True
    attention = backend.model.model.layers[0].self_attn
    monkeypatch.setattr(attention, "head_dim", 512)  # beyond the kernels: attention would run on SDPA
    assert "beyond cotbench's kernels" in backend.why_not_deterministic()
    monkeypatch.setattr(attention, "head_dim", 64)
    unpacked = _backend(model64, "float32", pack_weights=False)
    assert unpacked.packed_layers == 0 and "not packed" in unpacked.why_not_deterministic()
