"""cotbench's C kernels: built here with the system compiler, checked against fp32 arithmetic."""
import os

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from cotbench.backends.hf import cpu_kernels
from cotbench.backends.hf.cpu_kernels import attention_applies, decode_attention, load_library, lora_up

ROWS, CAPACITY = 7, 40
HEADS, KV_HEADS, DIM = 6, 2, 16  # the portable loop
# (heads, kv_heads, dim): the portable loop, and the AVX512-BF16 path's head sizes (where the CPU has it)
SHAPES = [(6, 2, 16), (9, 3, 64), (8, 2, 128), (4, 4, 64)]


def _attention_module(heads, kv_heads):  # what sdpa_attention_forward reads off a transformers attention module
    return type("Attention", (), {"num_key_value_groups": heads // kv_heads, "is_causal": True})


@pytest.fixture
def kernel():
    """The built kernels. Skipped only where no C compiler exists: any other failure to build fails the tests."""
    if cpu_kernels._compiler() is None:
        from conftest import unavailable

        unavailable("COMPILER", "no C compiler here")
    return cpu_kernels.build_library()


def _inputs(lengths, heads=HEADS, kv_heads=KV_HEADS, dim=DIM):
    torch.manual_seed(0)
    query = torch.randn(ROWS, heads, 1, dim, dtype=torch.bfloat16)
    # a slot cache: (slots, kv_heads, capacity, dim), read as a view of its first ROWS slots up to the width
    keys = torch.randn(ROWS + 3, kv_heads, CAPACITY, dim, dtype=torch.bfloat16)
    values = torch.randn(ROWS + 3, kv_heads, CAPACITY, dim, dtype=torch.bfloat16)
    width = max(lengths)
    return query, keys[:ROWS, :, :width], values[:ROWS, :, :width], torch.tensor(lengths, dtype=torch.int32)


def _reference(query, key, value, lengths, dtype):
    mask = (torch.arange(key.shape[2])[None, :] < lengths.clamp(min=1)[:, None].long())[:, None, None, :]
    module = _attention_module(query.shape[1], key.shape[1])
    return sdpa_attention_forward(module, query.to(dtype), key.to(dtype), value.to(dtype), mask,
                                  scaling=query.shape[-1] ** -0.5)[0]


@pytest.mark.parametrize("heads,kv_heads,dim", SHAPES)
def test_kernel_is_as_close_to_fp32_attention_as_sdpa_in_bf16(kernel, heads, kv_heads, dim):
    lengths = [1, 40, 17, 0, 33, 2, 16]  # 0: an idle slot, which attends to column 0 as the mask makes SDPA do
    query, key, value, lengths = _inputs(lengths, heads, kv_heads, dim)
    assert attention_applies(query, key)
    got = decode_attention(kernel, query, key, value, lengths, dim ** -0.5)
    exact = _reference(query, key, value, lengths, torch.float32)
    sdpa = _reference(query, key, value, lengths, torch.bfloat16)
    assert got.shape == sdpa.shape == (ROWS, 1, heads, dim)
    kernel_error = (got.float() - exact).abs().max().item()
    sdpa_error = (sdpa.float() - exact).abs().max().item()
    assert kernel_error <= max(1.5 * sdpa_error, 1e-2)


def _check_fp32_attention(library, heads, kv_heads, dim):
    lengths = [1, 40, 17, 0, 33, 2, 16]
    query, key, value, lengths = (t.float() if t.is_floating_point() else t for t in _inputs(lengths, heads, kv_heads, dim))
    got = decode_attention(library, query, key, value, lengths, dim ** -0.5)
    assert got is not None and got.dtype == torch.float32
    # SDPA's fp32 numbers, up to the order of the fp32 sums
    torch.testing.assert_close(got, _reference(query, key, value, lengths, torch.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("heads,kv_heads,dim", SHAPES)
def test_fp32_kernel_gives_sdpas_fp32_attention(kernel, heads, kv_heads, dim):
    _check_fp32_attention(kernel, heads, kv_heads, dim)


def test_an_avx2_build_gives_the_same_fp32_attention(fresh_cache):
    """The instruction set of CPUs without AVX-512 (x86-64-v3: AVX2, FMA), built and run here, so the code
    those machines compile from -march=native is exercised wherever the tests run on x86."""
    import platform

    flags = open("/proc/cpuinfo").read()
    if platform.machine() != "x86_64" or " avx2 " not in flags or " fma " not in flags:
        pytest.skip("needs an x86-64 CPU with AVX2 and FMA")
    library = cpu_kernels.build_library(march="x86-64-v3")
    assert cpu_kernels.library_path("x86-64-v3") != cpu_kernels.library_path()
    for heads, kv_heads, dim in SHAPES:
        _check_fp32_attention(library, heads, kv_heads, dim)
    logits = torch.randn(5, 999)
    assert cpu_kernels.argmax(library, logits) == logits.argmax(-1).tolist()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("heads,kv_heads,dim", SHAPES)
def test_columns_past_a_rows_length_are_never_read(kernel, heads, kv_heads, dim, dtype):
    lengths = [5, 40, 17, 3, 33, 2, 25]  # none a multiple of the fast path's 16-key blocks but 40's neighbours
    query, key, value, lengths_t = _inputs(lengths, heads, kv_heads, dim)
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    clean = decode_attention(kernel, query, key, value, lengths_t, dim ** -0.5)
    for row, n in enumerate(lengths):  # poison what lies beyond each row's length
        key[row, :, n:] = float("nan")
        value[row, :, n:] = float("nan")
    assert torch.equal(decode_attention(kernel, query, key, value, lengths_t, dim ** -0.5), clean)


@pytest.mark.parametrize("scale_per", ["row", "batch", "prompt"])
@pytest.mark.parametrize("rank", [1, 4, 5, 8, 16])  # 1, 4, 8: the unrolled rows; 5, 16: the blocked loop
def test_lora_up_adds_the_scaled_up_projection_rounding_once(kernel, scale_per, rank):
    torch.manual_seed(0)
    rows, n = 12, 700  # 700 columns: the blocked loop's 512-column blocks and a partial one
    both = torch.randn(rows, n + rank).to(torch.bfloat16)  # one GEMM's output: base columns, then rank-r ones
    base, low = both.split([n, rank], dim=-1)
    up = torch.randn(n, rank).to(torch.bfloat16)
    scale = torch.rand({"row": rows, "batch": 1, "prompt": 3}[scale_per])  # prompt: 3 prompts of 4 tokens
    got = lora_up(kernel, base, low, scale, up.t().float().contiguous())
    per_row = scale.repeat_interleave(rows // scale.numel())
    exact = base.float() + per_row[:, None] * (low.float() @ up.t().float())
    assert got.is_contiguous() and got.dtype == torch.bfloat16
    # one rounding to bf16 (half an ulp: 2^-9 relative); a wrong scale or row grouping is off by far more
    torch.testing.assert_close(got.float(), exact, rtol=2 ** -8, atol=1e-6)
    fp32 = lora_up(kernel, base.float(), low.float(), scale, up.t().float().contiguous())
    assert fp32.dtype == torch.float32
    torch.testing.assert_close(fp32, exact, rtol=1e-6, atol=1e-6)


def test_lora_up_declines_what_it_does_not_take(kernel):
    base, low = torch.zeros(6, 8, dtype=torch.bfloat16), torch.zeros(6, 2, dtype=torch.bfloat16)
    up_t = torch.zeros(2, 8)
    assert lora_up(kernel, base.float(), low, torch.ones(6), up_t) is None  # two dtypes
    assert lora_up(kernel, base, low, torch.ones(4), up_t) is None  # 6 rows do not split into 4 groups
    assert lora_up(kernel, base, low, torch.ones(6), up_t.t()) is None  # not contiguous
    assert lora_up(kernel, base, low, torch.ones(6), up_t) is not None


def test_odd_layouts_and_mixed_dtypes_are_left_to_sdpa():
    query, key, _, _ = _inputs([4] * ROWS)
    assert attention_applies(query, key) and attention_applies(query.float(), key.float())
    assert not attention_applies(query, key.transpose(-1, -2))
    assert not attention_applies(query.float(), key)
    assert not attention_applies(query.half(), key.half())


def test_a_failed_build_warns_and_attention_stays_on_sdpa(monkeypatch, tmp_path):
    monkeypatch.setenv("COTBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "FLAGS", [*cpu_kernels.FLAGS, "-fno-such-flag-for-any-compiler"])
    cpu_kernels._load.cache_clear()
    try:
        if cpu_kernels._compiler() is None:
            with pytest.warns(UserWarning, match="no C compiler"):
                assert load_library() is None
        else:
            with pytest.warns(UserWarning, match="could not build"):
                assert load_library() is None
        assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-built left behind
    finally:
        cpu_kernels._load.cache_clear()


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(cpu_kernels.DISABLE_ENV, "0")
    cpu_kernels._load.cache_clear()
    try:
        assert load_library() is None
    finally:
        cpu_kernels._load.cache_clear()


def test_loading_the_kernel_leaves_denormals_alone(kernel):
    """A -ffast-math shared library linked by GCC < 13 switches the whole process to flush-to-zero."""
    tiny = torch.tensor([1e-39])  # a float32 denormal
    assert (tiny * 1.0).item() != 0.0


def test_add_rms_norm_rounds_as_transformers_does(kernel):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from cotbench.backends.hf.cpu_kernels import add_rms_norm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(96, eps=1e-5).to(torch.bfloat16)
    norm.weight.data = torch.randn(96).to(torch.bfloat16)
    residual, delta = torch.randn(9, 1, 96).to(torch.bfloat16), torch.randn(9, 1, 96).to(torch.bfloat16)
    hidden, normed = add_rms_norm(kernel, residual, delta, norm.weight, norm.variance_epsilon)
    assert torch.equal(hidden, residual + delta)  # the add: bit for bit
    expected = norm(residual + delta)
    # the norm: the same roundings; only the fp32 sum of squares may add up in another order
    assert (normed == expected).float().mean() > 0.99
    torch.testing.assert_close(normed.float(), expected.float(), rtol=2 ** -7, atol=0)
    same, only_norm = add_rms_norm(kernel, residual, None, norm.weight, norm.variance_epsilon)
    assert same is residual and torch.equal(only_norm, add_rms_norm(kernel, residual, None, norm.weight, 1e-5)[1])
    assert add_rms_norm(kernel, residual.float(), delta, norm.weight, 1e-5) is None  # two dtypes
    norm32 = norm.float()
    hidden32, normed32 = add_rms_norm(kernel, residual.float(), delta.float(), norm32.weight, 1e-5)
    assert torch.equal(hidden32, residual.float() + delta.float())
    torch.testing.assert_close(normed32, norm32(residual.float() + delta.float()), rtol=1e-6, atol=1e-6)


def test_argmax_picks_what_torch_picks(kernel):
    from cotbench.backends.hf.cpu_kernels import argmax

    torch.manual_seed(0)
    logits = torch.randn(6, 1000).to(torch.bfloat16)
    logits[1, 10] = logits[1, 900] = 50.0  # a tie: the first index
    logits[2, 333] = float("nan")  # NaN beats every number, as in torch
    logits[3] = -1e30  # all equal
    logits[4, 999] = 80.0  # the last column
    assert argmax(kernel, logits) == logits.argmax(dim=-1).tolist() == logits.float().argmax(dim=-1).tolist()
    assert argmax(kernel, logits.float()) == logits.float().argmax(dim=-1).tolist()
    masked = torch.full((2, 50), float("-inf"))  # fp32 rows that are all -inf, or -inf but one
    masked[1, 7] = 0.0
    assert argmax(kernel, masked) == masked.argmax(dim=-1).tolist() == [0, 7]
    assert argmax(kernel, logits.half()) is None


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    if cpu_kernels._compiler() is None:
        from conftest import unavailable

        unavailable("COMPILER", "no C compiler here")
    monkeypatch.setenv("COTBENCH_CACHE_DIR", str(tmp_path))
    cpu_kernels._load.cache_clear()
    yield tmp_path
    cpu_kernels._load.cache_clear()


def test_a_damaged_cached_library_is_rebuilt_not_disabled(fresh_cache):
    path = cpu_kernels.library_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")  # a build cut off by a full disk, say
    library = cpu_kernels.build_library()
    assert library.cotbench_argmax_bf16 is not None and path.stat().st_size > 1000


def test_an_abi_mismatch_is_refused(fresh_cache, monkeypatch):
    cpu_kernels.build_library()  # a good build in the cache
    changed = dict(cpu_kernels.SIGNATURES, argmax_bf16=[cpu_kernels._P, cpu_kernels._P, cpu_kernels._Q])
    monkeypatch.setattr(cpu_kernels, "SIGNATURES", changed)  # the Python side edited without the C side
    with pytest.raises(cpu_kernels.KernelBuildError, match="ABI"):
        cpu_kernels.build_library()
    with pytest.warns(UserWarning, match="ABI"):
        assert load_library() is None


def test_only_one_openmp_runtime_beside_torch(kernel):
    runtimes = cpu_kernels.openmp_runtimes()
    assert len(runtimes) == 1, runtimes


def test_a_missing_source_file_warns_and_falls_back(fresh_cache, monkeypatch, tmp_path):
    """An install that left the header out of the wheel: one warning naming the file, no crash."""
    gone = tmp_path / "cpu_kernels_typed.h"
    monkeypatch.setattr(cpu_kernels, "SOURCES", (cpu_kernels.SOURCE, gone))
    with pytest.warns(UserWarning, match="missing from the installed cotbench"):
        assert load_library() is None
    assert "cpu_kernels_typed.h" in cpu_kernels.kernel_status()


def test_a_loader_error_warns_and_falls_back(fresh_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("cannot map the library")

    monkeypatch.setattr(cpu_kernels.ctypes, "CDLL", refuse)
    with pytest.warns(UserWarning, match="did not load"):
        assert load_library() is None


def test_required_kernels_that_do_not_load_are_an_error(fresh_cache, monkeypatch):
    from cotbench.errors import CotbenchError

    monkeypatch.setenv(cpu_kernels.DISABLE_ENV, "1")
    monkeypatch.setattr(cpu_kernels, "FLAGS", [*cpu_kernels.FLAGS, "-fno-such-flag-for-any-compiler"])
    with pytest.raises(CotbenchError, match="required"):
        load_library()


def test_a_cache_writable_by_others_is_never_loaded_from(fresh_cache):
    kernels = fresh_cache / "kernels"
    kernels.mkdir(mode=0o777)
    kernels.chmod(0o777)  # the umask may have narrowed mkdir's mode
    with pytest.warns(UserWarning, match="writable by other users"):
        assert load_library() is None
    assert not list(kernels.glob("*.so"))  # nothing built there either


def test_a_library_writable_by_others_is_not_loaded(fresh_cache):
    path = cpu_kernels.build_library() and cpu_kernels.library_path()
    path.chmod(0o666)
    with pytest.raises(cpu_kernels.KernelBuildError, match="writable by other users"):
        cpu_kernels.build_library()


def test_a_library_owned_by_another_user_is_not_loaded(fresh_cache):
    if not hasattr(os, "getuid") or os.getuid() != 0:
        from conftest import unavailable

        unavailable("ROOT", "giving a file to another user needs root")
    path = cpu_kernels.build_library() and cpu_kernels.library_path()
    os.chown(path, 12345, 12345)
    with pytest.raises(cpu_kernels.KernelBuildError, match="belongs to another user"):
        cpu_kernels.build_library()


def test_a_build_leaves_a_private_cache(fresh_cache):
    cpu_kernels.build_library()
    kernels = fresh_cache / "kernels"
    assert kernels.stat().st_mode & 0o077 == 0  # made for this user only
    assert [p.name for p in kernels.iterdir()] == [cpu_kernels.library_path().name]  # no staging left behind
    assert cpu_kernels.library_path().stat().st_mode & 0o022 == 0
