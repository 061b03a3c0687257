"""Decode attention that reads each group of rows only as far as its longest row.

In a continuous batch the rows sit at very different lengths: a row admitted a moment ago holds its prompt,
another is 250 tokens into its answer. One SDPA call over the batch reads every row's keys and values up to
the longest row's length, and PyTorch's CPU kernel does not skip masked columns, so its cost grows with the
widest row (measured: half the width, half the time). The batcher keeps its slots sorted by length, longest
first; this attention then runs SDPA once per group of neighbouring rows, each to that group's own width.
The numbers are SDPA's: columns past a row's length were masked out before, now they are not read.

On a CPU in bf16 or fp32, given ``slot_lengths``, decode attention runs cotbench's C kernel instead
(:mod:`cotbench.backends.hf.cpu_kernels`): it reads each row exactly to its own length, at about twice SDPA's
speed (bf16). Its fp32 numbers are SDPA's up to the order of fp32 sums; the batcher's ``decode_kernel=False``
(or ``COTBENCH_CPU_KERNELS=0``) keeps SDPA, whose fp32 outputs match the static path's exactly.

The lean decode step (``lean_decode``) calls it directly with ``slot_groups`` and ``slot_lengths``; nothing is
registered with transformers, whose own forward (prefill, models without a lean step) stays plain SDPA.
Without those arguments, or outside decode, it is plain SDPA.
"""
from __future__ import annotations

from typing import Sequence

import torch

from cotbench.backends.hf.cpu_kernels import attention_applies, decode_attention, load_library

NAME = "cotbench_slot_groups"
ROWS_PER_GROUP = 16  # fewer rows per call and per-call overhead outweighs the shorter reads (measured: 16 × 4 ≈ 64 × 1)


def grouped_sdpa(module, query, key, value, attention_mask, slot_groups: Sequence[tuple[int, int, int]] | None = None,
                  slot_lengths: torch.Tensor | None = None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if slot_groups is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    plain = not (kwargs.get("sliding_window") or kwargs.get("softcap") or kwargs.get("dropout"))
    if slot_lengths is not None and plain and attention_applies(query, key) and (library := load_library()) is not None:
        output = decode_attention(library, query, key, value, slot_lengths,
                                  kwargs.get("scaling") or query.shape[-1] ** -0.5)
        if output is not None:
            return output, None
    outputs = [sdpa_attention_forward(module, query[a:b], key[a:b, :, :width], value[a:b, :, :width],
                                      attention_mask[a:b, ..., :width], **kwargs)[0]
               for a, b, width in slot_groups]
    return torch.cat(outputs, dim=0), None


def slot_groups(lengths: Sequence[int], rows_per_group: int | None = None) -> list[tuple[int, int, int]]:
    """(first row, end row, width) for consecutive groups of rows; width is the group's longest length (≥ 1,
    so an all-idle group still has a column to attend to)."""
    rows_per_group = rows_per_group or ROWS_PER_GROUP
    return [(a, min(a + rows_per_group, len(lengths)), max(1, max(lengths[a:a + rows_per_group])))
            for a in range(0, len(lengths), rows_per_group)]
