"""A valve is a PEFT LoRA adapter Δθ; the model at valve strength α is θ + α·Δθ.

α multiplies PEFT's own ``lora_alpha / r`` scaling, so α = 0 is exactly the base model and α = 1 exactly
the adapter as trained; any real α works (negative and > 1 extrapolate). Switching α changes one float
per LoRA layer: the base weights are never reloaded or re-merged.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from contextlib import contextmanager
from pathlib import Path

from cotbench.errors import ValveError

ADAPTER_NAME = "valve"
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


# Fields of adapter_config.json that name or describe the adapter without changing what it computes.
_DESCRIPTIVE = ("base_model_name_or_path", "revision", "peft_version", "inference_mode", "auto_mapping", "task_type")


def valve_fingerprint(valve_dir: str | Path) -> str:
    """12 hex digits of the adapter's weights and of the config fields that change its output: results are
    keyed by it, so an edited valve never silently reuses old samples, while renaming its base model or
    saving it with another PEFT version keeps them."""
    folder = Path(valve_dir)
    digest = hashlib.sha256()
    config_path = folder / "adapter_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            config = {k: v for k, v in config.items() if k not in _DESCRIPTIVE}
            digest.update(b"adapter_config.json" + json.dumps(config, sort_keys=True).encode())
        except ValueError:
            digest.update(config_path.read_bytes())
    for name in _WEIGHT_FILES:
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
    variants = [why for name, why in _NOT_SCALABLE.items() if getattr(config, name, None) not in (None, False, [], {})]
    if variants:
        raise ValveError(f"{folder} uses {'; '.join(variants)}: θ + α·Δθ is not exactly its update scaled by α, so "
                         "cotbench cannot turn it as a valve. Retrain it as a plain LoRA on linear layers (rsLoRA, "
                         "rank and alpha patterns are fine), or export merged checkpoints θ + α·Δθ yourself and "
                         "evaluate them as models without --valve.")
    return config


# LoRA variants whose output is not (PEFT scale) × B·A·x, or that change weights outside the LoRA delta.
_NOT_SCALABLE = {
    "use_dora": "DoRA (a weight-normalised update, not linear in the scale)",
    "modules_to_save": "modules_to_save (fully trained copies of layers that α does not scale)",
    "trainable_token_indices": "trainable_token_indices (trained embedding rows that α does not scale)",
    "layer_replication": "layer_replication (it changes the architecture: α = 0 would not be the base model)",
    "alora_invocation_tokens": "activated LoRA (applied only after invocation tokens)",
    "use_qalora": "QA-LoRA (pooled inputs the per-row valve layers do not compute)",
    "target_parameters": "LoRA on bare parameters (target_parameters)",
    "arrow_config": "Arrow routing between adapters",
    "use_bdlora": "BD-LoRA",
    "kasa_config": "KaSA",
    "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
    "megatron_config": "Megatron-parallel LoRA layers",
}


def attach_valve(model, valve_dir: str | Path):
    """Wrap ``model`` with the valve at α = 1. Raises ValveError if the adapter does not fit the model."""
    from peft import get_peft_model, load_peft_weights, set_peft_model_state_dict

    config = read_valve_config(valve_dir)
    config.inference_mode = True
    # The valve may record any name for its base (a Hub id, another machine's folder): it is attached to this
    # model on purpose, and its shapes are checked below. Recording ours keeps PEFT from warning of a rename.
    config.base_model_name_or_path = getattr(model, "name_or_path", None) or config.base_model_name_or_path
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


@contextmanager
def valve_strength(peft_model, alpha: float):
    """Run the wrapped model as θ + α·Δθ inside the block, and exactly as before afterwards, even on error.

    PEFT's own ``rescale_adapter_scale``: it multiplies each layer's scaling as PEFT computed it (rsLoRA's
    lora_alpha/√r, rank and alpha patterns included) and restores the saved values on exit, where
    ``set_scale`` recomputes lora_alpha/r (and in older PEFT releases ignores rsLoRA)."""
    from peft.helpers import rescale_adapter_scale

    with rescale_adapter_scale(peft_model, float(alpha)):
        yield peft_model


def describe_valve(valve_dir: str | Path) -> dict:
    config = read_valve_config(valve_dir)
    return {"path": str(valve_dir), "fingerprint": valve_fingerprint(valve_dir), "r": config.r,
            "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules or []),
            "base_model_name_or_path": config.base_model_name_or_path}

