"""A valve is a PEFT LoRA adapter Δθ; the model at valve strength α is θ + α·Δθ.

α multiplies PEFT's own ``lora_alpha / r`` scaling, so α = 0 is exactly the base model and α = 1 exactly
the adapter as trained; any real α works (negative and > 1 extrapolate). Switching α changes one float
per LoRA layer: the base weights are never reloaded or re-merged.
"""
from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cotbench.errors import ValveError

ADAPTER_NAME = "valve"
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def valve_fingerprint(valve_dir: str | Path) -> str:
    """12 hex digits of the adapter's config and weights: results are keyed by it, so an edited valve
    never silently reuses old samples."""
    folder = Path(valve_dir)
    digest = hashlib.sha256()
    for name in ("adapter_config.json", *_WEIGHT_FILES):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:12]


def read_valve_config(valve_dir: str | Path):
    from peft import LoraConfig, PeftConfig

    folder = Path(valve_dir)
    if not folder.is_dir():
        raise ValveError(f"valve directory {folder} does not exist. Pass a PEFT LoRA adapter directory "
                         "(holding adapter_config.json and adapter_model.safetensors).")
    if not (folder / "adapter_config.json").is_file():
        raise ValveError(f"{folder} has no adapter_config.json: it is not a PEFT adapter directory.")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise ValveError(f"{folder} has adapter_config.json but no adapter_model.safetensors (or .bin).")
    try:
        config = PeftConfig.from_pretrained(str(folder))
    except Exception as exc:
        raise ValveError(f"{folder}/adapter_config.json cannot be read by PEFT: {exc}") from None
    if not isinstance(config, LoraConfig):
        raise ValveError(f"{folder} is a {config.peft_type} adapter; a valve must be a LoRA adapter.")
    if getattr(config, "use_dora", False):
        raise ValveError(f"{folder} is a DoRA adapter: its update is not linear in the adapter scale, so "
                         "θ + α·Δθ is not defined for it. Train a plain LoRA valve.")
    return config


def attach_valve(model, valve_dir: str | Path):
    """Wrap ``model`` with the valve at α = 1. Raises ValveError if the adapter does not fit the model."""
    from peft import get_peft_model, load_peft_weights, set_peft_model_state_dict

    config = read_valve_config(valve_dir)
    config.inference_mode = True
    try:
        with warnings.catch_warnings():  # transformers deprecation noise from inside peft, not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, config, adapter_name=ADAPTER_NAME)
    except ValueError as exc:  # e.g. "Target modules {...} not found in the base model"
        raise ValveError(f"valve {valve_dir} does not fit the base model: {exc} "
                         "Was it trained on a different architecture?") from None
    weights = load_peft_weights(str(valve_dir), device="cpu")
    try:
        result = set_peft_model_state_dict(peft_model, weights, adapter_name=ADAPTER_NAME)
    except RuntimeError as exc:  # "size mismatch for ...lora_A.weight"
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:300])
        raise ValveError(f"valve {valve_dir} does not fit the base model ({first}). "
                         "It was trained on a model with different layer shapes.") from None
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValveError(f"valve {valve_dir} has {len(unexpected)} weights for modules the base model lacks, "
                         f"e.g. {unexpected[0]}. It was trained on a different architecture.")
    return peft_model.eval()


def _lora_layers(peft_model) -> Iterator:
    from peft.tuners.lora import LoraLayer

    return (m for m in peft_model.modules() if isinstance(m, LoraLayer))


@contextmanager
def valve_strength(peft_model, alpha: float):
    """Run the wrapped model as θ + α·Δθ inside the block; back to α = 1 afterwards, even on error."""
    layers = list(_lora_layers(peft_model))
    try:
        for layer in layers:
            for name in list(layer.scaling):
                layer.set_scale(name, float(alpha))
        yield peft_model
    finally:
        for layer in layers:
            for name in list(layer.scaling):
                layer.set_scale(name, 1.0)


def describe_valve(valve_dir: str | Path) -> dict:
    config = read_valve_config(valve_dir)
    return {"path": str(valve_dir), "fingerprint": valve_fingerprint(valve_dir), "r": config.r,
            "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules or []),
            "base_model_name_or_path": config.base_model_name_or_path}

