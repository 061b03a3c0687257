"""bf16 linear layers on CPU with their weights packed once, in oneDNN's own layout.

torch's bf16 ``F.linear`` on CPU hands oneDNN a plain (out, in) weight, which oneDNN reorders into its
blocked layout on every call: reading and writing the whole weight again before the multiply. Packing
each weight once (``torch.ops.mkldnn._reorder_linear_weight``, what torch's inductor does for frozen CPU
weights) gives the same numbers bit for bit, at any row count (tested), and on the decode shapes of
SmolLM2-135M ran a cold-cache GEMM 1.3× (128 rows) to 1.9× (16 rows) faster (measured side by side).

The plain weight is dropped once it is packed, so the model takes no more memory than before, except for
an output layer tied to the embeddings, whose plain weight the embedding lookup still holds (see
:func:`pack_linear_layers`); the packed tensor can only be multiplied, so this is for inference only
(``pack_linear_layers`` is called by the backend after the valve is attached). fp32 stays on ``F.linear``:
it is the reference the static path is checked against, and neither oneDNN's nor MKL's packed fp32 path
paid here (measured 2026-12-03, README).
"""
from __future__ import annotations

import torch
from torch import nn

PACK_FOR_ROWS = 128  # the row count oneDNN picks a blocked layout for; any count runs, the same numbers come out


def packing_applies(model) -> bool:
    """bf16 weights on a CPU whose oneDNN has bf16 matmuls, and a torch that exposes the packing op."""
    weight = next(model.parameters())
    return (weight.device.type == "cpu" and weight.dtype == torch.bfloat16
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward over a weight packed for oneDNN."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_FOR_ROWS),
                             persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def dense_weight(self) -> torch.Tensor:
        """The weight as a plain tensor again (a copy): for checks, not for the forward."""
        return self.packed_weight.to_dense()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, packed"


def pack_linear_layers(model: nn.Module) -> int:
    """Swap every ``nn.Linear`` of ``model`` for a :class:`PackedLinear`, in place; returns how many.

    An output layer tied to the input embeddings is packed too, as a copy: the embedding lookup keeps the
    plain weight. That costs the copy (54 MB for SmolLM2-135M) and makes the output layer's GEMM, the
    largest of a decode step, 1.5× (256 rows) to 2.5× (64 rows) faster: the plain weight would be reordered
    on every call (measured side by side on the AMX Xeon, 2026-12-03)."""
    swapped = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, PackedLinear(child))
                swapped += 1
    return swapped
