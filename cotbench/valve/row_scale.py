"""Valve strength per batch row: one forward pass can run rows at different α.

PEFT's LoRA layer applies one scale to the whole batch. For a sweep we want row i at θ + α_i·Δθ, so each
LoRA layer is swapped for :class:`RowScaledLoRALinear`: ``base(x) + lora_B(lora_A(x) · s_i)`` with
s_i = α_i · lora_alpha / r. The scale multiplies the rank-r activations rather than the output (PEFT's
order). The base weight W and the down-projection A form one linear layer [W; A], so a single GEMM gives
both the base output and the rank-r activations: a separate GEMM with only r output columns still costs
~25 µs of call overhead on CPU, seven per layer. The base columns of that GEMM are the plain base GEMM's,
bit for bit (tested), so a row at α = 0 is the base model exactly. The result equals
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

    def __init__(self, cpu_kernel: bool = True):
        self._alphas: torch.Tensor | None = None  # (rows, 1), float64 so scale·α rounds once
        self._by_scaling: dict[tuple[float, bool], torch.Tensor | None] = {}
        # on CPU (bf16, fp32): the up-projection in cotbench's C kernel (cpu_kernels.lora_up) instead of addmm
        self.cpu_kernel = cpu_kernel

    def set(self, alphas: Sequence[float], dtype: torch.dtype, device) -> None:
        self._by_scaling = {}
        self._dtype, self._device = dtype, device
        self._alphas = None if not any(alphas) else torch.tensor(alphas, dtype=torch.float64).view(-1, 1)

    def scale(self, scaling: float, fp32: bool = False) -> torch.Tensor | None:
        """(rows, 1) multipliers for a layer whose PEFT scaling is ``scaling``, in the model's dtype (``fp32``:
        in fp32, for the C kernel); None when every α is 0. One row broadcasts to the whole batch (the static
        scheduler: one α per batch)."""
        if self._alphas is None:
            return None
        if (scaling, fp32) not in self._by_scaling:
            self._by_scaling[scaling, fp32] = (self._alphas * scaling).to(torch.float32 if fp32 else self._dtype).to(self._device)
        return self._by_scaling[scaling, fp32]


class RowScaledLoRALinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, lora_A: nn.Linear, lora_B: nn.Linear, scaling: float,
                 strengths: RowStrengths):
        super().__init__()
        self.out_features, self.rank = base_layer.out_features, lora_A.out_features
        self.scaling, self.strengths = float(scaling), strengths
        # [W; A] as one linear layer (a plain nn.Linear, so the backend can pack it like any other); W and A
        # are dropped with the PEFT layer, so this costs no extra memory
        weight = base_layer.weight.detach()
        self.stacked = nn.Linear(base_layer.in_features, self.out_features + self.rank, bias=base_layer.bias is not None,
                                 device="meta", dtype=weight.dtype)
        self.stacked.weight = nn.Parameter(torch.cat([weight, lora_A.weight.detach()]), requires_grad=False)
        if base_layer.bias is not None:
            self.stacked.bias = nn.Parameter(torch.cat([base_layer.bias.detach(), base_layer.bias.new_zeros(self.rank)]),
                                             requires_grad=False)
        self.register_buffer("up_weight", lora_B.weight.detach(), persistent=False)  # B: (out_features, rank)
        self.register_buffer("up_t", lora_B.weight.detach().t().float().contiguous(), persistent=False)  # for the C kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result, low_rank = self.stacked(x).split([self.out_features, self.rank], dim=-1)
        scale = self.strengths.scale(self.scaling)
        if scale is None:  # every row at α = 0: exactly the base model, no LoRA work
            return result.contiguous()
        if self.strengths.cpu_kernel and x.dtype in (torch.bfloat16, torch.float32) and x.device.type == "cpu":
            fused = self._lora_up_in_c(result, low_rank)
            if fused is not None:
                return fused.view(*x.shape[:-1], self.out_features)
        low_rank = low_rank * scale.view(-1, *[1] * (low_rank.dim() - 1))
        result = torch.addmm(result.reshape(-1, self.out_features), low_rank.reshape(-1, self.rank), self.up_weight.t())
        return result.view(*x.shape[:-1], self.out_features)

    def _lora_up_in_c(self, result: torch.Tensor, low_rank: torch.Tensor) -> torch.Tensor | None:
        """The up-projection and add in one C loop (a fraction of addmm's fixed cost at K = rank); None where
        the library is not built here."""
        from cotbench.backends.hf.cpu_kernels import load_library, lora_up

        library = load_library()
        if library is None:
            return None
        scale = self.strengths.scale(self.scaling, fp32=True).view(-1)
        return lora_up(library, result.reshape(-1, self.out_features), low_rank.reshape(-1, self.rank), scale, self.up_t)


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
