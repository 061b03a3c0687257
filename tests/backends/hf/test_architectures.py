"""The lean decode step on each architecture it claims, on tiny random models built here (no download): a
tiny Llama, a tiny Qwen2 (attention bias, untied output layer) and a tiny Qwen3 (q/k norms). Over a 32-token
greedy decode, cotbench's fp32 logits stay within 1e-4 of transformers' forward at every step, and the tokens
are transformers' greedy tokens."""
import pytest
import torch

from cotbench.backends import HFBackend
from cotbench.backends.hf.lean_decode import LeanDecoder, why_not_lean
from cotbench.records import GenerationRequest, SamplingSettings

STEPS = 32
PROMPT = "<|user|>Natalia sold clips to 48 of her friends. How many?</s><|assistant|>"


def _tiny(path, arch: str):
    from conftest import _tiny_tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    tokenizer = _tiny_tokenizer()
    # room for tokens an architecture's tokenizer class adds on loading (Qwen2's: <|endoftext|>)
    shapes = dict(vocab_size=len(tokenizer) + 16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=1,
                  eos_token_id=2, pad_token_id=2, tie_word_embeddings=False)
    config = {"llama": lambda: LlamaConfig(**shapes),
              "qwen2": lambda: Qwen2Config(**shapes, use_sliding_window=False),  # q/k/v with bias
              "qwen3": lambda: Qwen3Config(**shapes, head_dim=16, attention_bias=False)}[arch]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # norms away from ones, so a norm applied wrongly (or not at all) shows
                param.mul_(1 + 0.5 * torch.rand_like(param))
            if name.endswith("bias"):
                param.normal_(0, 0.5)
        model.lm_head.weight[config.eos_token_id].zero_()  # never the argmax: 32 tokens every time
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_lean_decode_follows_transformers_forward_for_32_greedy_tokens(arch, tmp_path, monkeypatch, capsys):
    path = _tiny(tmp_path / arch, arch)
    backend = HFBackend(str(path), dtype="float32", batch_size=4)
    assert why_not_lean(backend.model) is None  # this architecture takes the lean path, and the run says so
    assert f"decode: cotbench's lean step ({arch} layout)" in capsys.readouterr().err
    assert backend.stats()["decode_path"].startswith("cotbench's lean step")
    if arch == "qwen2":
        projection = backend.model.model.layers[0].self_attn.q_proj
        assert projection.bias is not None
        assert not backend.model.config.tie_word_embeddings
    if arch == "qwen3":
        assert hasattr(backend.model.model.layers[0].self_attn, "q_norm")
    steps = []
    real = LeanDecoder.__call__
    monkeypatch.setattr(LeanDecoder, "__call__", lambda self, *a, **k: steps.append(real(self, *a, **k)) or steps[-1])
    request = GenerationRequest("q", PROMPT, None, SamplingSettings(max_new_tokens=STEPS))
    (generation,) = [g for batch in backend.generate([request]) for g in batch]
    assert generation.n_generated_tokens == STEPS and len(steps) == STEPS - 1  # the first token comes from prefill

    model = backend.model
    prompt = backend.tokenizer(PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = model.generate(prompt, max_new_tokens=STEPS, do_sample=False, pad_token_id=2)[0, prompt.shape[1]:]
        full = torch.cat([prompt[0], expected])[None]
        reference = model(full).logits[0, prompt.shape[1]:-1]  # the logits that picked tokens 2..32
    assert list(generation.token_ids) == expected.tolist()
    for step, (ours, theirs) in enumerate(zip(steps, reference)):
        assert (ours[0].float() - theirs.float()).abs().max().item() <= 1e-4, (arch, step)
