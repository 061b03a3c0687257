"""Linear layers on CPU with their weights packed once, in oneDNN's own layout, bf16 and fp32 alike.

torch's bf16 ``F.linear`` on CPU hands oneDNN a plain (out, in) weight, which oneDNN reorders into its
blocked layout on every call: reading and writing the whole weight again before the multiply. Packing
each weight once (``torch.ops.mkldnn._reorder_linear_weight``, what torch's inductor does for frozen CPU
weights) gives the same numbers bit for bit, at any row count (tested), and on the decode shapes of
SmolLM2-135M ran a cold-cache GEMM 1.3× (128 rows) to 1.9× (16 rows) faster (measured side by side).

fp32 ``F.linear`` runs MKL's sgemm instead. Packed fp32 weights made the default job 1.3× faster end to end on
the 2-core AVX2 EPYC (``benchmarks/default_job.py --ab-fast-paths``), so fp32 is packed wherever torch has the
op, whatever the CPU's vendor: one path on every CPU. Its sums run in another order than MKL's: fp32 results
differ from ``F.linear`` in the last bits (tested to 1e-5), and a row's result does not depend on its batch
mates or the row count (tested bit for bit), so both schedulers still agree.

The plain weight is dropped once it is packed, so the model takes no more memory than before, except for
an output layer tied to the embeddings, whose plain weight the embedding lookup still holds (see
:func:`pack_linear_layers`); the packed tensor can only be multiplied, so this is for inference only
(``pack_linear_layers`` is called by the backend after the valve is attached).
"""
from __future__ import annotations

import torch
from torch import nn

PACK_FOR_ROWS = 128  # the row count oneDNN picks a blocked layout for; any count runs, the same numbers come out


def packing_applies(model) -> bool:
    """A CPU model whose torch exposes the packing op: bf16 weights where oneDNN has bf16 matmuls, fp32
    weights wherever torch has oneDNN."""
    weight = next(model.parameters())
    if weight.device.type != "cpu" or not (hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
                                           and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    if weight.dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()


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
