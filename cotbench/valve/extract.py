"""A valve from two checkpoints of one architecture: ΔW = W_tuned − W_base per linear layer, compressed to
a PEFT LoRA adapter by truncated SVD (B = U_r·S_r, A = V_rᵀ, lora_alpha = r so PEFT's scale is 1).

Deltas outside linear layers (embeddings, norms, biases) cannot live in a LoRA adapter: they are reported
with their size, never dropped silently. At full rank, α = 1 reproduces the tuned model's linear layers.
"""
from __future__ import annotations

import json
from pathlib import Path

from cotbench.errors import ValveError
from cotbench.files import atomic_dir


def _load(spec: str):
    import torch

    from cotbench.backends.loading import load_model_and_tokenizer, resolve_model

    model, _ = load_model_and_tokenizer(resolve_model(spec), torch.float32, "cpu")
    return model


def _check_same_architecture(base, tuned, base_name: str, tuned_name: str) -> None:
    b, t = dict(base.named_parameters()), dict(tuned.named_parameters())
    if type(base) is not type(tuned):
        raise ValveError(f"{base_name} is a {type(base).__name__} but {tuned_name} is a {type(tuned).__name__}: "
                         "a valve can only be extracted between checkpoints of one architecture.")
    missing = sorted(set(b) ^ set(t))
    if missing:
        raise ValveError(f"{base_name} and {tuned_name} have different parameters (e.g. {missing[0]}): "
                         "not the same architecture.")
    for name in b:
        if b[name].shape != t[name].shape:
            raise ValveError(f"{name} has shape {tuple(b[name].shape)} in {base_name} but {tuple(t[name].shape)} in "
                             f"{tuned_name}: the checkpoints differ in size.")


def extract_valve(base_spec: str, tuned_spec: str, rank: int | str, out: str | Path, progress: bool = True) -> dict:
    """``rank``: a whole number, or "full" for each layer's own full rank (exact up to float error)."""
    out = Path(out)
    if (out / "adapter_config.json").exists():
        raise ValveError(f"{out} already holds a valve. Choose another --out, or delete that directory.")
    full = rank == "full"
    if not full and (not isinstance(rank, int) or rank < 1):
        raise ValveError(f"rank must be a whole number >= 1 or 'full', got {rank!r}")
    base, tuned = _load(base_spec), _load(tuned_spec)
    _check_same_architecture(base, tuned, base_spec, tuned_spec)
    deltas, linear = _linear_deltas(base, tuned, rank)
    if not deltas:
        raise ValveError(f"{base_spec} and {tuned_spec} have identical linear layers: there is no valve to extract.")
    other = _other_deltas(base, tuned, {f"{n}.weight" for n in linear})
    ranks = {name: min(d.shape) if full else rank for name, d in deltas.items()}
    peft_model, layers = _fit_lora(base, deltas, ranks, progress)
    report = {"base": base_spec, "tuned": tuned_spec, "rank": rank, "layers": layers,
              "not_captured_non_linear_deltas": other,
              "max_relative_error": max(v["relative_error"] for v in layers.values())}
    with atomic_dir(out) as tmp:  # whole or absent: nothing half-written looks complete
        peft_model.save_pretrained(tmp)
        (tmp / "extraction_report.json").write_text(json.dumps(report, indent=2))
    return report


def _linear_deltas(base, tuned, rank: int | str) -> tuple[dict, dict]:
    """ΔW of every linear layer that changed (a tied output layer's goes with the embedding), and all linear
    layers; refuses a rank larger than a changed layer allows."""
    import torch

    tuned_params = dict(tuned.named_parameters())
    linear = {name: m for name, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    tied_head = getattr(base.config, "tie_word_embeddings", False)
    deltas, too_small = {}, []
    for name, module in linear.items():
        if tied_head and name.endswith("lm_head"):
            continue  # tied to the embedding: its delta is reported with the embedding's
        delta = tuned_params[f"{name}.weight"].detach() - module.weight.detach()
        if torch.count_nonzero(delta) == 0:
            continue
        if rank != "full" and rank > min(delta.shape):
            too_small.append(f"{name} ({delta.shape[0]}×{delta.shape[1]}, at most {min(delta.shape)})")
        deltas[name] = delta
    if too_small:
        raise ValveError(f"rank {rank} is larger than these layers allow: {'; '.join(too_small[:5])}"
                         f"{' ...' if len(too_small) > 5 else ''}. Use --rank {min(min(d.shape) for d in deltas.values())} or less.")
    return deltas, linear


def _other_deltas(base, tuned, linear_weights: set[str]) -> dict:
    """Changes outside linear layers (embeddings, norms, biases): reported with their size, never dropped."""
    tuned_params, other = dict(tuned.named_parameters()), {}
    for name, p in base.named_parameters():
        if name not in linear_weights:
            d = (tuned_params[name].detach() - p.detach()).norm().item()
            if d > 0:
                other[name] = {"delta_norm": d, "relative": d / max(p.detach().norm().item(), 1e-12)}
    return other


def _fit_lora(base, deltas: dict, ranks: dict, progress: bool):
    """A PEFT LoRA model whose B·A is each ΔW truncated to its rank by SVD, and the per-layer fit."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    # lora_alpha = r per layer, so PEFT's scale lora_alpha / r is exactly 1 everywhere
    config = LoraConfig(r=max(ranks.values()), lora_alpha=max(ranks.values()), target_modules=sorted(deltas),
                        rank_pattern=dict(ranks), alpha_pattern=dict(ranks), lora_dropout=0.0)
    peft_model = get_peft_model(base, config)
    modules = dict(peft_model.named_modules())
    layers = {}
    for name, delta in tqdm(deltas.items(), desc="SVD per layer", disable=not progress):
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = ranks[name]
        b, a = u[:, :r] * s[:r], vh[:r]
        lora = modules[f"base_model.model.{name}"]
        with torch.no_grad():
            lora.lora_A["default"].weight.copy_(a)
            lora.lora_B["default"].weight.copy_(b)
        error = (delta - b @ a).norm() / delta.norm()
        layers[name] = {"relative_error": error.item(), "rank": r, "energy_kept": (s[:r].square().sum() / s.square().sum()).item()}
    return peft_model, layers
