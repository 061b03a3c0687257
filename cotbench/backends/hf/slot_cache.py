"""A KV cache with one slot per batch row, each row at its own length.

transformers' DynamicCache concatenates on every step (a copy of the whole cache per token) and assumes
all rows share one length. Continuous batching needs rows that start, grow and finish independently,
so this cache preallocates ``slots × capacity`` and writes each new key/value at the row's own position.
Attention reads columns ``[0, width)``; the 4D mask built by :func:`attention_mask` hides what a row
has not written. Column ``capacity`` is scratch: padding tokens write there and nothing reads it.
Slots can be reordered or moved in place (:meth:`reorder`, :meth:`move`), so the batcher can keep live rows first, longest first.

The model only calls ``update(key, value, layer_idx, ...)`` when it is handed a 4D mask and explicit
position ids, so this class needs no more of transformers' Cache interface.

On a CPU the buffers are zero pages the OS hands out untouched (:func:`lazy_zeros`): a slot cache is sized
for every row at its longest (3.4 GB for the 50-problem default job's 250 rows in bf16, twice that in fp32), but most
rows stop early. Filled with zeros up front it took 4.5 GB of resident memory and most of the default job's
11-12 s of prefill; untouched, a page costs nothing until a row's keys reach it (2.4 GB peak, prefill 5-6 s,
the page faults moved into decode: about 2 s more there; AMX Xeon, 2026-12-03).
"""
from __future__ import annotations

import mmap

import torch


class SlotCache:
    def __init__(self, n_slots: int, capacity: int):
        self.n_slots, self.capacity = n_slots, capacity
        self.keys: list[torch.Tensor] = []  # per layer: (slots, kv_heads, capacity + 1, head_dim)
        self.values: list[torch.Tensor] = []
        self._rows: torch.Tensor | int = 0
        self._write_rows: torch.Tensor | None = None  # (rows, 1): the slot each batch row writes to
        self._cols: torch.Tensor | None = None
        self._width = 0

    @property
    def scratch(self) -> int:
        return self.capacity

    def bind(self, rows: torch.Tensor | int, positions: torch.Tensor, width: int) -> None:
        """Set up the next forward pass: batch row i is slot ``rows[i]`` (an int n: row i is slot i, for the
        first n slots; read back as a view, no copy), its token j goes to column ``positions[i, j]``
        (negative: padding, sent to scratch), and attention reads the first ``width`` columns."""
        self._rows = rows
        first_n = torch.arange(rows, device=positions.device) if isinstance(rows, int) else rows
        self._write_rows = first_n[:, None]
        self._cols = torch.where(positions >= 0, positions, torch.full_like(positions, self.scratch))
        self._width = width

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx == len(self.keys):  # first pass: shapes come from the model itself
            self._add_layer(key_states, value_states)
        k_buf, v_buf = self.keys[layer_idx], self.values[layer_idx]
        index = (self._write_rows, slice(None), self._cols)  # -> (rows, tokens, heads, dim)
        k_buf[index] = key_states.transpose(1, 2)
        v_buf[index] = value_states.transpose(1, 2)
        if isinstance(self._rows, int):
            return k_buf[:self._rows, :, :self._width], v_buf[:self._rows, :, :self._width]
        return k_buf[self._rows, :, :self._width], v_buf[self._rows, :, :self._width]

    def reorder(self, order: list[int], columns: int | None = None) -> None:
        """Slot i takes what slot ``order[i]`` held (``order`` is a permutation of all slots). Only the slots
        that move are copied, in place: fresh buffers would cost page faults on hundreds of MB; and only their
        first ``columns`` (None: all), the ones that hold keys: a slot's full capacity is most of a GB for the
        default job's 250 rows, and copying it made compaction 7.6 s of a 101 s run."""
        moved = [i for i, source in enumerate(order) if source != i]
        self.move(moved, [order[i] for i in moved], columns)

    def move(self, targets: list[int], sources: list[int], columns: int | None = None) -> None:
        """Slot ``targets[i]`` takes the first ``columns`` (None: all) keys and values of slot ``sources[i]``;
        the other slots keep theirs. The sources are read before any target is written, so they may overlap."""
        if not targets or not self.keys or columns == 0:
            return
        device = self.keys[0].device
        target, source = torch.tensor(targets, device=device), torch.tensor(sources, device=device)
        for buffer in self.keys + self.values:
            buffer[target, :, :columns] = buffer[source, :, :columns]  # the right side is gathered first

    def copy_from(self, other: "SlotCache", targets: list[int], sources: list[int], n_columns: int) -> None:
        """Slot ``targets[i]`` gets the first ``n_columns`` keys and values of ``other``'s slot ``sources[i]``
        (allocating this cache's buffers if no pass has run yet)."""
        if not targets or n_columns <= 0:
            return
        device = other.keys[0].device
        target, source = torch.tensor(targets, device=device), torch.tensor(sources, device=device)
        for layer, (keys, values) in enumerate(zip(other.keys, other.values)):
            if layer == len(self.keys):
                self._add_layer(keys, values)
            self.keys[layer][target, :, :n_columns] = keys[source, :, :n_columns]
            self.values[layer][target, :, :n_columns] = values[source, :, :n_columns]

    def _add_layer(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Buffers for the next layer, with the heads, head size, dtype and device of ``keys``/``values``."""
        shape = (self.n_slots, keys.shape[1], self.capacity + 1, keys.shape[3])
        self.keys.append(lazy_zeros(shape, keys.dtype, keys.device))
        self.values.append(lazy_zeros(shape, values.dtype, values.device))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """``torch.zeros(shape)`` whose memory is touched only where it is written or read.

    torch's CPU allocator fills a new tensor with zeros, touching every page at once. An anonymous memory map
    is zero pages the OS fills on first touch, so memory no row reaches costs neither time nor resident
    memory. Small pages (``MADV_NOHUGEPAGE``): a row's keys per head are tens of KB, so one 2 MB huge page
    spans dozens of rows, and the first prefill would touch, and zero, nearly all of them (numpy's calloc
    zeros, which ask for huge pages, did: 1.2 s more per prefill pass). The map is freed with the tensor.
    Elsewhere (GPUs) it is plain ``torch.zeros``."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    n_bytes = dtype.itemsize * torch.Size(shape).numel()
    memory = mmap.mmap(-1, max(1, n_bytes))  # a map cannot be empty
    if hasattr(memory, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):  # Linux; elsewhere the OS's own choice
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return torch.frombuffer(memory, dtype=torch.uint8)[:n_bytes].view(dtype).view(shape)


def attention_mask(positions: torch.Tensor, width: int, dtype: torch.dtype, additive: bool) -> torch.Tensor:
    """(rows, 1, tokens, width) mask: the token at position p sees columns 0..p of its own row.

    A padding token (position < 0) sees column 0 only, so its softmax stays finite; its output is unused."""
    columns = torch.arange(width, device=positions.device)
    allowed = columns.view(1, 1, -1) <= positions.clamp(min=0).unsqueeze(-1)
    allowed = allowed.unsqueeze(1)
    if not additive:
        return allowed
    mask = torch.zeros(allowed.shape, dtype=dtype, device=positions.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
