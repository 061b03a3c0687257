"""The few-row fp32 linear layer of AVX2 CPUs (cpu_kernels.small_linear, backends/hf/small_linear.py).

Built here for x86-64-v3 (AVX2 and FMA, no AVX-512) wherever the CPU runs that code, so the path those
machines take is exercised on any x86 machine the tests run on."""
import platform

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cotbench.backends.hf import cpu_kernels
from cotbench.backends.hf.cpu_kernels import SMALL_LINEAR_ROWS, small_linear, small_linear_applies
from cotbench.backends.hf.small_linear import small_linear_layers


def _cpu_flags() -> set[str]:
    try:
        line = next(l for l in open("/proc/cpuinfo") if l.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


@pytest.fixture(scope="module")
def avx2():
    if cpu_kernels._compiler() is None:
        from conftest import unavailable

        unavailable("COMPILER", "no C compiler here")
    if platform.machine() != "x86_64" or not {"avx2", "fma"} <= _cpu_flags():
        pytest.skip("needs an x86-64 CPU with AVX2 and FMA")
    library = cpu_kernels.build_library(march="x86-64-v3")
    assert small_linear_applies(library)
    return library


def test_only_builds_for_avx2_without_avx512_have_it():
    """MKL's own AVX-512 kernels are faster at these shapes, so an AVX-512 build declines (and bf16 never asks)."""
    if cpu_kernels._compiler() is None:
        from conftest import unavailable

        unavailable("COMPILER", "no C compiler here")
    flags = _cpu_flags()
    expected = platform.machine() == "x86_64" and {"avx2", "fma"} <= flags and "avx512f" not in flags
    assert small_linear_applies(cpu_kernels.build_library()) == expected
    assert not small_linear_applies(None)


@pytest.mark.parametrize("rows", [1, 3, 4, 8, 13, 32])
@pytest.mark.parametrize("n,k", [(1, 8), (2, 16), (7, 24), (580, 576), (96, 1536)])
def test_as_close_to_exact_as_f_linear(avx2, rows, n, k):
    """Against the float64 product: within twice F.linear's own error (only the order of the sums differs)."""
    g = torch.Generator().manual_seed(rows * 1000 + n)
    x, w = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g)
    exact = x.double() @ w.double().t()
    ours, torchs = small_linear(avx2, x, w), F.linear(x, w)
    assert ours.shape == torchs.shape and ours.dtype == torch.float32
    tolerance = 2 * float((torchs.double() - exact).abs().max()) + 1e-6 * float(exact.abs().max())
    assert float((ours.double() - exact).abs().max()) <= tolerance


def test_a_rows_result_does_not_depend_on_its_batch_mates(avx2):
    """Bit for bit: a row gives the same numbers alone, at any position, in any batch size up to the limit."""
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(SMALL_LINEAR_ROWS, 576, generator=g), torch.randn(583, 576, generator=g)  # 583: partial block
    full = small_linear(avx2, x, w)
    for start, stop in ((0, 1), (5, 6), (3, 17), (31, 32), (0, 13), (8, 32)):
        assert torch.equal(small_linear(avx2, x[start:stop], w), full[start:stop]), (start, stop)
    assert torch.equal(small_linear(avx2, x.flip(0), w), full.flip(0))


def test_rows_of_a_strided_view_and_leading_dims(avx2):
    g = torch.Generator().manual_seed(2)
    wide, w = torch.randn(6, 40, generator=g), torch.randn(9, 32, generator=g)
    view = wide[:, 4:36]  # rows 40 floats apart
    assert torch.equal(small_linear(avx2, view, w), small_linear(avx2, view.contiguous(), w))
    x = torch.randn(2, 3, 32, generator=g)
    assert torch.equal(small_linear(avx2, x, w), small_linear(avx2, x.reshape(6, 32), w).view(2, 3, 9))


def test_declines_what_it_does_not_take(avx2):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(9, 32, generator=g)
    assert small_linear(avx2, torch.randn(SMALL_LINEAR_ROWS + 1, 32), w) is None  # MKL is as fast there
    assert small_linear(avx2, torch.randn(4, 12), torch.randn(9, 12)) is None  # k not a multiple of 8
    assert small_linear(avx2, torch.randn(4, 32).bfloat16(), w.bfloat16()) is None
    assert small_linear(avx2, torch.randn(4, 32), torch.randn(32, 9).t()) is None  # weight not row-major
    assert small_linear(avx2, torch.randn(0, 32), w) is None


def test_swapped_layers_share_the_weights_and_keep_the_logits(avx2, tiny_model):
    """Every linear layer swapped, the tied output layer still tied, no weight copied; few rows give the plain
    model's logits up to the order of the sums, many rows exactly (F.linear)."""
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    swapped = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    pointers = {p.data_ptr() for p in swapped.parameters()}
    n_linear = sum(type(m) is nn.Linear for m in swapped.modules())
    assert small_linear_layers(swapped, avx2) == n_linear > 0
    assert not any(type(m) is nn.Linear for m in swapped.modules())
    assert {p.data_ptr() for p in swapped.parameters()} == pointers
    if plain.config.tie_word_embeddings:
        assert swapped.lm_head.weight is swapped.model.embed_tokens.weight
    with torch.inference_mode():
        few = torch.tensor([[5, 9, 14, 30, 7], [3, 3, 8, 1, 2]])  # 10 rows per layer
        torch.testing.assert_close(swapped(input_ids=few).logits, plain(input_ids=few).logits, rtol=1e-5, atol=1e-5)
        many = torch.randint(0, plain.config.vocab_size, (4, 12))  # 48 rows: F.linear's own numbers
        assert torch.equal(swapped(input_ids=many).logits, plain(input_ids=many).logits)


def test_the_backend_swaps_fp32_layers_where_the_build_has_it_and_greedy_paths_still_agree(
        avx2, tiny_model, tiny_valve, monkeypatch):
    """With this CPU's library replaced by the AVX2 build, as an Intel AVX2 machine builds it (fp32 not packed
    there): the fp32 backend swaps its layers (bf16 and pack_weights=False do not), and the continuous
    scheduler's greedy outputs still equal the static path's, both running the swapped layers."""
    from cotbench.backends import HFBackend
    from cotbench.backends.hf import packed_linear
    from cotbench.records import GenerationRequest, SamplingSettings

    monkeypatch.setattr(cpu_kernels, "load_library", lambda: avx2)
    monkeypatch.setattr(packed_linear, "fp32_packing_pays", lambda cpuinfo=None: False)
    static = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=4, scheduler="static")
    flowing = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=3)
    assert static.small_linear_layers > 0 and flowing.small_linear_layers == static.small_linear_layers
    assert HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", pack_weights=False).small_linear_layers == 0
    assert HFBackend(str(tiny_model), str(tiny_valve), dtype="bfloat16").small_linear_layers == 0
    sampling = SamplingSettings(max_new_tokens=8)
    requests = [GenerationRequest(f"q{i}@{a}", f"<|user|>{q}</s><|assistant|>", a, sampling)
                for i, q in enumerate(["How many eggs?", "What is 3 + 4?", "x"]) for a in (0.0, 0.5, 1.0)]
    outputs = []
    for backend in (static, flowing):
        outputs.append({g.request_id: (g.text, g.n_generated_tokens) for batch in backend.generate(requests) for g in batch})
    assert outputs[0] == outputs[1]
