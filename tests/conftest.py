"""Shared fixtures: a tiny random Llama with a real tokenizer, saved to disk, and LoRA valves for it.

Nothing here downloads: the Hub is switched off for the whole test session.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("COTBENCH_DATA_DIR", str(REPO.parent / "shared" / "data"))
# converted GGUFs go to a cache of this session's own, not the user's
os.environ["COTBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="cotbench-test-cache-")
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def pytest_collection_modifyitems(config, items):
    """GPU tests skip themselves where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def unavailable(switch: str, why: str):
    """Skip a test whose tool is missing here, or fail it where ``COTBENCH_REQUIRE_<switch>=1`` says the tool must
    be there (``.ci/run`` installs each tool and sets its switch): in CI a missing tool is a failure, never a skip.
    Switches: BROWSER, CROSS, VLLM, ROOT, COMPILER, RAY."""
    if os.environ.get(f"COTBENCH_REQUIRE_{switch}") == "1":
        pytest.fail(f"COTBENCH_REQUIRE_{switch}=1, but {why}")
    pytest.skip(why)


def data_dir() -> Path:
    return Path(os.environ["COTBENCH_DATA_DIR"])


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [p.read_text(encoding="utf-8")[:20000] for p in sorted((data_dir() / "gsm8k").glob("*.jsonl"))]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<|user|>",
                                  "<|assistant|>", "<|system|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus + ["\\boxed{} 0123456789"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(path: Path, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_valve(model_dir: Path, out: Path, targets=("q_proj", "v_proj"), seed: int = 1, **lora) -> Path:
    """A real PEFT LoRA adapter with non-zero A and B, so α visibly changes the logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": list(targets), "init_lora_weights": False,
                           **lora})
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_valve(tiny_model, tmp_path_factory) -> Path:
    return make_valve(tiny_model, tmp_path_factory.mktemp("tiny_valve"))


@pytest.fixture(scope="session")
def foreign_valve(tmp_path_factory) -> Path:
    """A valve trained on a model of another width: its shapes do not fit `tiny_model`."""
    other = make_tiny_model(tmp_path_factory.mktemp("wider_model"), hidden=48)
    return make_valve(other, tmp_path_factory.mktemp("foreign_valve"))


@pytest.fixture(scope="session")
def misnamed_valve(tiny_model, tmp_path_factory) -> Path:
    """A valve whose target modules the base model does not have."""
    import json

    out = make_valve(tiny_model, tmp_path_factory.mktemp("misnamed_valve"))
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = ["attn_c_proj"]
    cfg_path.write_text(json.dumps(cfg))
    return out


def kernels_or_skip():
    """cotbench's built C kernels; the test is skipped only where no C compiler exists. A build that fails
    with a compiler present fails the test (a broken cpu_kernels.c must not turn into skips)."""
    from cotbench.backends.hf import cpu_kernels

    if cpu_kernels._compiler() is None:
        unavailable("COMPILER", "no C compiler here")
    return cpu_kernels.build_library()
