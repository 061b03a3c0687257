"""The C decode-attention kernel: built here with the system compiler, checked against fp32 attention."""
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from cotbench.backends import decode_kernel
from cotbench.backends.decode_kernel import decode_attention, kernel_applies, load_kernel

ROWS, HEADS, KV_HEADS, CAPACITY, DIM = 7, 6, 2, 40, 16


class _Attention:  # what sdpa_attention_forward reads off a transformers attention module
    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


@pytest.fixture
def kernel():
    function = load_kernel()
    if function is None:
        pytest.skip("no C compiler here")
    return function


def _inputs(lengths):
    torch.manual_seed(0)
    query = torch.randn(ROWS, HEADS, 1, DIM, dtype=torch.bfloat16)
    # a slot cache: (slots, kv_heads, capacity, dim), read as a view of its first ROWS slots up to the width
    keys = torch.randn(ROWS + 3, KV_HEADS, CAPACITY, DIM, dtype=torch.bfloat16)
    values = torch.randn(ROWS + 3, KV_HEADS, CAPACITY, DIM, dtype=torch.bfloat16)
    width = max(lengths)
    return query, keys[:ROWS, :, :width], values[:ROWS, :, :width], torch.tensor(lengths, dtype=torch.int32)


def _reference(query, key, value, lengths, dtype):
    mask = (torch.arange(key.shape[2])[None, :] < lengths.clamp(min=1)[:, None].long())[:, None, None, :]
    return sdpa_attention_forward(_Attention, query.to(dtype), key.to(dtype), value.to(dtype), mask,
                                  scaling=DIM ** -0.5)[0]


def test_kernel_is_as_close_to_fp32_attention_as_sdpa_in_bf16(kernel):
    lengths = [1, 40, 17, 0, 33, 2, 25]  # 0: an idle slot, which attends to column 0 as the mask makes SDPA do
    query, key, value, lengths = _inputs(lengths)
    assert kernel_applies(query, key)
    got = decode_attention(kernel, query, key, value, lengths, DIM ** -0.5)
    exact = _reference(query, key, value, lengths, torch.float32)
    sdpa = _reference(query, key, value, lengths, torch.bfloat16)
    assert got.shape == sdpa.shape == (ROWS, 1, HEADS, DIM)
    kernel_error = (got.float() - exact).abs().max().item()
    sdpa_error = (sdpa.float() - exact).abs().max().item()
    assert kernel_error <= max(1.5 * sdpa_error, 1e-2)


def test_columns_past_a_rows_length_are_never_read(kernel):
    lengths = [5, 40, 17, 3, 33, 2, 25]
    query, key, value, lengths_t = _inputs(lengths)
    clean = decode_attention(kernel, query, key, value, lengths_t, DIM ** -0.5)
    for row, n in enumerate(lengths):  # poison what lies beyond each row's length
        key[row, :, n:] = float("nan")
        value[row, :, n:] = float("nan")
    assert torch.equal(decode_attention(kernel, query, key, value, lengths_t, DIM ** -0.5), clean)


def test_fp32_and_odd_layouts_are_left_to_sdpa():
    query, key, _, _ = _inputs([4] * ROWS)
    assert not kernel_applies(query.float(), key.float())
    assert not kernel_applies(query, key.transpose(-1, -2))


def test_a_failed_build_warns_and_attention_stays_on_sdpa(monkeypatch, tmp_path):
    monkeypatch.setenv("COTBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(decode_kernel, "FLAGS", [*decode_kernel.FLAGS, "-fno-such-flag-for-any-compiler"])
    load_kernel.cache_clear()
    try:
        if decode_kernel._compiler() is None:
            with pytest.warns(UserWarning, match="no C compiler"):
                assert load_kernel() is None
        else:
            with pytest.warns(UserWarning, match="could not build"):
                assert load_kernel() is None
        assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-built left behind
    finally:
        load_kernel.cache_clear()


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(decode_kernel.DISABLE_ENV, "0")
    load_kernel.cache_clear()
    try:
        assert load_kernel() is None
    finally:
        load_kernel.cache_clear()


def test_loading_the_kernel_leaves_denormals_alone(kernel):
    """A -ffast-math shared library linked by GCC < 13 switches the whole process to flush-to-zero."""
    tiny = torch.tensor([1e-39])  # a float32 denormal
    assert (tiny * 1.0).item() != 0.0
