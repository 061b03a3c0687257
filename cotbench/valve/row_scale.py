"""Valve strength per batch row: one forward pass can run rows at different α.

PEFT's LoRA layer applies one scale to the whole batch. For a sweep we want row i at θ + α_i·Δθ, so each
LoRA layer is swapped for :class:`RowScaledLoRALinear`: ``base(x) + lora_B(lora_A(x) · s_i)`` with
s_i = α_i · lora_alpha / r. The scale multiplies the rank-r activations rather than the output (PEFT's
order). The base weight W and the down-projection A share one tensor [W; A], so a single GEMM gives
both the base output and the rank-r activations: a separate GEMM with only r output columns still costs
~25 µs of call overhead on CPU, seven per layer. The base columns of that GEMM
are the plain base GEMM's, bit for bit (tested); at α = 0 for every row only W is used. The result equals
PEFT's up to float rounding (tested to 1e-5). The adapter is still loaded and checked by PEFT
(:func:`cotbench.valve.apply.attach_valve`); only the forward of its layers changes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cotbench.errors import ValveError
from cotbench.valve.apply import ADAPTER_NAME


class RowStrengths:
    """The α of each row of the next forward pass; shared by every layer of one model."""

    def __init__(self):
        self._alphas: torch.Tensor | None = None  # (rows, 1), float64 so scale·α rounds once
        self._by_scaling: dict[float, torch.Tensor | None] = {}

    def set(self, alphas: Sequence[float], dtype: torch.dtype, device) -> None:
        self._by_scaling = {}
        self._dtype, self._device = dtype, device
        self._alphas = None if not any(alphas) else torch.tensor(alphas, dtype=torch.float64).view(-1, 1)

    def scale(self, scaling: float) -> torch.Tensor | None:
        """(rows, 1) multipliers for a layer whose PEFT scaling is ``scaling``; None when every α is 0.
        One row broadcasts to the whole batch (the static scheduler: one α per batch)."""
        if self._alphas is None:
            return None
        if scaling not in self._by_scaling:
            self._by_scaling[scaling] = (self._alphas * scaling).to(self._dtype).to(self._device)
        return self._by_scaling[scaling]


class RowScaledLoRALinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, lora_A: nn.Linear, lora_B: nn.Linear, scaling: float,
                 strengths: RowStrengths):
        super().__init__()
        self.base_layer, self.lora_A, self.lora_B = base_layer, lora_A, lora_B
        self.scaling, self.strengths = float(scaling), strengths
        # base_layer's and lora_A's weights become views of one [W; A] tensor: no extra memory
        stacked = torch.cat([base_layer.weight.detach(), lora_A.weight.detach()])
        base_layer.weight = nn.Parameter(stacked[:base_layer.out_features], requires_grad=False)
        lora_A.weight = nn.Parameter(stacked[base_layer.out_features:], requires_grad=False)
        self.register_buffer("stacked_weight", stacked, persistent=False)
        self.register_buffer("stacked_bias", None if base_layer.bias is None else torch.cat(
            [base_layer.bias.detach(), base_layer.bias.new_zeros(lora_A.out_features)]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.strengths.scale(self.scaling)
        if scale is None:  # every row at α = 0: exactly the base model, and no LoRA work
            return self.base_layer(x)
        out_features = self.base_layer.out_features
        result, low_rank = nn.functional.linear(x, self.stacked_weight, self.stacked_bias).split(
            [out_features, self.lora_A.out_features], dim=-1)
        low_rank = low_rank * scale.view(-1, *[1] * (low_rank.dim() - 1))
        result = torch.addmm(result.reshape(-1, out_features), low_rank.reshape(-1, low_rank.shape[-1]),
                             self.lora_B.weight.t())
        return result.view(*x.shape[:-1], out_features)


def row_scaled(peft_model) -> tuple[nn.Module, RowStrengths]:
    """Turn a model wrapped by ``attach_valve`` into the plain base model whose LoRA layers take a per-row α.

    Returns the base model (a transformers model again: ``generate`` and friends unchanged) and the
    :class:`RowStrengths` to set before each forward pass."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    # Both schedulers use these layers, so an adapter they cannot take is refused up front, with a way out.
    way_out = ("cotbench valves are plain LoRA on linear layers. Retrain with target_modules naming linear "
               "projections only, or write θ + α·Δθ checkpoints with `cotbench valve export --valve VALVE --alphas ... "
               "--out DIR --merged --base MODEL` and evaluate each as a plain model (--valve none).")
    strengths = RowStrengths()
    base = peft_model.get_base_model()
    for name, module in list(base.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module, LoraLinear) or ADAPTER_NAME in getattr(module, "lora_variant", {}):
            raise ValveError(f"valve layer {name} is a {type(module).__name__}, not a linear LoRA layer. {way_out}")
        if module.lora_B[ADAPTER_NAME].bias is not None:
            raise ValveError(f"valve layer {name} has a LoRA bias, which α cannot scale per row. {way_out}")
        base_layer = module.get_base_layer()
        if not isinstance(base_layer, nn.Linear):  # quantised or otherwise wrapped: no plain weight to stack
            raise ValveError(f"valve layer {name} wraps a {type(base_layer).__name__}, not a plain torch Linear. "
                             f"Load the base model unquantised. {way_out}")
        # PEFT keeps adapters in fp32; the model's dtype keeps every matmul of a bf16 model in bf16.
        lora_A, lora_B = (m.to(base_layer.weight.dtype) for m in (module.lora_A[ADAPTER_NAME], module.lora_B[ADAPTER_NAME]))
        replacement = RowScaledLoRALinear(base_layer, lora_A, lora_B, module.scaling[ADAPTER_NAME], strengths)
        parent_name, _, child = name.rpartition(".")
        setattr(base.get_submodule(parent_name) if parent_name else base, child, replacement)
    return base.eval(), strengths
