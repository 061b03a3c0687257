"""Linear layers with oneDNN-packed weights: bf16 the same numbers as F.linear, fp32 within rounding and
independent of the row count; no plain weights kept."""
import pytest
import torch
from torch import nn

from cotbench.backends.hf.packed_linear import PackedLinear, pack_linear_layers, packing_applies


def _bf16_model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).eval()


@pytest.fixture
def bf16_cpu(tiny_model):
    if not packing_applies(_bf16_model(tiny_model)):
        pytest.skip("this CPU's oneDNN has no bf16 matmuls")


def test_packed_linear_gives_f_linear_bit_for_bit_at_any_row_count(bf16_cpu):
    torch.manual_seed(0)
    for bias in (False, True):
        plain = nn.Linear(96, 200, bias=bias).to(torch.bfloat16)
        packed = PackedLinear(plain)
        for rows in (1, 7, 16, 128, 300):  # packed for 128 rows; other counts must give the same numbers
            x = torch.randn(rows, 96).to(torch.bfloat16)
            assert torch.equal(packed(x), plain(x))
        x = torch.randn(5, 3, 96).to(torch.bfloat16)  # (rows, tokens, features), as in prefill
        assert torch.equal(packed(x), plain(x))
        assert torch.equal(packed.dense_weight(), plain.weight)


def test_a_packed_model_keeps_its_logits_and_drops_the_plain_weights(tiny_model, bf16_cpu):
    plain, packed = _bf16_model(tiny_model), _bf16_model(tiny_model)
    n_linear = sum(type(m) is nn.Linear for m in plain.modules())
    assert pack_linear_layers(packed) == n_linear
    assert not any(type(m) is nn.Linear for m in packed.modules())
    linear_weights = sum(m.weight.numel() for m in plain.modules() if type(m) is nn.Linear)
    assert sum(p.numel() for p in packed.parameters()) == sum(p.numel() for p in plain.parameters()) - linear_weights
    ids = torch.tensor([[5, 9, 14, 30, 7], [3, 3, 8, 1, 2]])
    with torch.inference_mode():
        assert torch.equal(packed(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_the_backend_packs_bf16_and_fp32_whatever_the_cpu_vendor(tiny_model, tiny_valve):
    from cotbench.backends import HFBackend

    fp32 = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32")
    assert fp32.packed_layers == (sum(type(m) is nn.Linear for m in HFBackend(
        str(tiny_model), str(tiny_valve), dtype="float32", pack_weights=False).model.modules())
        if torch.backends.mkldnn.is_available() else 0)
    bf16 = HFBackend(str(tiny_model), str(tiny_valve), dtype="bfloat16")
    if not packing_applies(bf16.model):
        pytest.skip("this CPU's oneDNN has no bf16 matmuls")
    # every linear layer, the valve layers' stacked [W; A] included
    assert bf16.packed_layers > 0 and not any(type(m) is nn.Linear for m in bf16.model.modules())
    assert HFBackend(str(tiny_model), str(tiny_valve), dtype="bfloat16", pack_weights=False).packed_layers == 0


def test_no_engine_choice_reads_the_cpu_vendor():
    """Paths are chosen by what the CPU and torch can do, never by whose CPU it is (issue "A leaner house")."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[3] / "cotbench"
    readers = [str(p.relative_to(package)) for p in package.rglob("*.py")
               if any(word in p.read_text(encoding="utf-8") for word in ("vendor_id", "GenuineIntel", "AuthenticAMD"))]
    assert not readers, readers


@pytest.fixture
def fp32_onednn():
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")


def test_packed_fp32_rounds_like_f_linear_and_a_row_never_depends_on_its_batch(fp32_onednn):
    torch.manual_seed(0)
    for bias in (False, True):
        plain = nn.Linear(576, 200, bias=bias)
        packed = PackedLinear(plain)
        x = torch.randn(300, 576)
        alone = [packed(x[i:i + 1]) for i in range(8)]
        for rows in (1, 3, 7, 16, 128, 300):  # packed for 128 rows; any count, the same numbers per row
            out = packed(x[:rows])
            torch.testing.assert_close(out, plain(x[:rows]), rtol=1e-5, atol=1e-5)
            for i in range(min(rows, 8)):
                assert torch.equal(out[i:i + 1], alone[i])
        three_d = x[:15].view(5, 3, 576)  # (rows, tokens, features), as in prefill
        assert torch.equal(packed(three_d).view(15, -1), packed(x[:15]))
        assert torch.equal(packed.dense_weight(), plain.weight.detach())


def test_a_packed_fp32_backend_and_both_schedulers_agree(tiny_model, tiny_valve, fp32_onednn):
    """Every fp32 layer packed, and the engine's greedy outputs equal transformers' generate's, both on the
    packed layers."""
    from cotbench.backends import HFBackend
    from cotbench.records import GenerationRequest, SamplingSettings

    from reference import TransformersGenerate

    static = TransformersGenerate(HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=4))
    flowing = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=3)
    assert static.packed_layers > 0 and flowing.packed_layers == static.packed_layers
    assert not any(type(m) is nn.Linear for m in flowing.model.modules())
    assert HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", pack_weights=False).packed_layers == 0
    sampling = SamplingSettings(max_new_tokens=8)
    requests = [GenerationRequest(f"q{i}@{a}", f"<|user|>{q}</s><|assistant|>", a, sampling)
                for i, q in enumerate(["How many eggs?", "What is 3 + 4?", "x"]) for a in (0.0, 0.5, 1.0)]
    outputs = [{g.request_id: (g.text, g.n_generated_tokens) for batch in backend.generate(requests) for g in batch}
               for backend in (static, flowing)]
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(requests)


def test_an_output_layer_tied_to_the_embeddings_is_packed_as_a_copy(tiny_model, bf16_cpu):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig.from_pretrained(tiny_model)
    config.tie_word_embeddings = True
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    embeddings = model.model.embed_tokens.weight.detach().clone()
    ids = torch.tensor([[5, 9, 14, 30, 7]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    packed = pack_linear_layers(model)
    assert packed == sum(type(m) is PackedLinear for m in model.modules()) > 0
    # the output layer multiplies a packed copy; the embedding lookup keeps the plain weight, unchanged
    assert type(model.lm_head) is PackedLinear and torch.equal(model.lm_head.dense_weight(), embeddings)
    assert torch.equal(model.model.embed_tokens.weight, embeddings)
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, before)
