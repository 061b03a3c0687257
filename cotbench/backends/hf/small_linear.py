"""fp32 linear layers that take few rows through cotbench's C loop, on AVX2 CPUs without AVX-512.

A decode step's long tail (the last rows of a sweep, the responses that run to the token cap) has 8-32
rows. There torch's fp32 ``F.linear`` (MKL's sgemm) repacks each weight on every call and streams a step's
weights at about a quarter of the read bandwidth; :func:`cotbench.backends.hf.cpu_kernels.small_linear`
reads each weight once from the model's own layout: 1.2× (32 rows) to 1.5× (8 rows) faster over all of a
SmolLM2-135M step's GEMMs (measured with oneDNN and MKL held to AVX2 on an AMX Xeon, 2026-12-03). More rows,
bf16, and CPUs with AVX-512 (MKL's own kernels win there) keep ``F.linear``; on AMD CPUs the fp32 weights are
packed for oneDNN first (:mod:`cotbench.backends.hf.packed_linear`, faster still there), leaving no ``nn.Linear``.

Every linear layer of the model is swapped, so both schedulers and every path (prefill, decode, the valve's
stacked [W; A] layer, the output layer) compute a row the same way at the same row count. The weight is the
model's own tensor, not a copy. The kernel's sums run in another order than MKL's: fp32 results differ from
``F.linear`` in the last bits at ≤ 32 rows (tested to 1e-5); a row's result never depends on its batch mates.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cotbench.backends.hf.cpu_kernels import SMALL_LINEAR_ROWS, small_linear


class SmallBatchLinear(nn.Module):
    """``nn.Linear``'s forward; at most SMALL_LINEAR_ROWS rows go through the C loop."""

    def __init__(self, linear: nn.Linear, library):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters: ties and memory unchanged
        self._library = library

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() <= SMALL_LINEAR_ROWS * x.shape[-1]:
            out = small_linear(self._library, x, self.weight)
            if out is not None:
                return out if self.bias is None else out + self.bias
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, few rows in C"


def small_linear_layers(model: nn.Module, library) -> int:
    """Swap every fp32 ``nn.Linear`` of ``model`` for a :class:`SmallBatchLinear`, in place; returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32 and child.weight.is_contiguous():
                setattr(module, name, SmallBatchLinear(child, library))
                swapped += 1
    return swapped
