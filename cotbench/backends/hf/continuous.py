"""Continuous batching over a whole α sweep: one model, one queue, rows that come and go.

Each of ``n_slots`` batch rows holds one request at its own α and its own length. A decode step runs
every slot at once (one token each); a row that finishes hands its slot back, and queued requests are
prefilled into free slots, so no row waits for the longest one in its batch and no α waits for another.

Prompts of a run usually open with the same tokens (chat template, system prompt). That prefix is computed
once per α, in a small cache of its own, and copied into each admitted row; prefill runs the rest.

Counting follows the static path exactly: a row's tokens run up to and including the first EOS, or to
the shortest prefix whose text holds a stop string, whichever is first; else it stops at
``max_new_tokens`` ("length").
"""
from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from cotbench.backends.hf._heap import release_freed_memory
from cotbench.backends.hf.lean_decode import lean_decoder
from cotbench.backends.hf.sampling import Sampler
from cotbench.backends.hf.slot_attention import slot_groups
from cotbench.backends.hf.slot_cache import SlotCache, attention_mask
from cotbench.backends.stops import cut_at_stop, stop_end
from cotbench.records import Generation, GenerationRequest, SamplingSettings


@dataclass
class BatcherStats:
    """Where the time went, for the benchmark: prefill and decode passes are timed apart."""
    prefill_s: float = 0.0
    prefill_passes: int = 0
    prompt_tokens: int = 0  # padding excluded
    decode_s: float = 0.0
    decode_steps: int = 0
    decode_rows: int = 0  # rows that were live in decode steps (tokens produced by decoding)
    slot_rows: int = 0  # rows computed in decode steps, idle slots included
    n_slots: int = 0  # the batch size at work: the batch size asked for, or fewer requests or memory
    full_batch_s: float = 0.0  # decode steps with every slot live
    full_batch_rows: int = 0
    kv_cache_bytes: int = 0  # the largest slot cache allocated
    compactions: int = 0  # live rows moved to the front of the cache, longest first (at each refill)
    hole_fills: int = 0  # between refills: live rows moved into free slots nearer the front
    compact_s: float = 0.0  # both kinds of moves


MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a pass of their own
# Row counts of decode steps and prompt widths of prefill passes are rounded up to a multiple of this. oneDNN
# keeps a compiled primitive for every matmul shape it meets (up to 1,024 of them, ~0.1 MB each): with a shape
# per row count RSS grew by 120 MB over a 1,000-sample sweep; rounded, the shapes recur and the cache stops
# growing. The extra rows are idle slots (one cache column read each), the extra columns padding.
SHAPE_STEP = 8


@dataclass
class _SharedPrefix:
    """Tokens every prompt of a run starts with; per α, the slot of ``cache`` that holds their keys and values."""
    tokens: list[int]
    slots: dict[float, int]
    cache: SlotCache | None = None
    computed: set[float] = field(default_factory=set)


@dataclass
class _Row:
    request: GenerationRequest
    prompt_len: int
    started: float
    generated: list[int] = field(default_factory=list)

    @property
    def position(self) -> int:  # where the last generated token sits; it is the next input
        return self.prompt_len + len(self.generated) - 1


class ContinuousBatcher:
    def __init__(self, model, tokenizer, eos_ids: set[int], strengths=None, n_slots: int = 64,
                 refill_fraction: float = 0.125, prefill_tokens: int = 2048, attention_groups: bool = True,
                 share_prefix: bool = True, decode_kernel: bool = True, lean_decode: bool = True,
                 lean_prefill: bool = True, on_step=None):
        self.model, self.tokenizer, self.eos_ids = model, tokenizer, eos_ids
        self.strengths = strengths  # RowStrengths when a valve is attached, else None
        self.n_slots, self.prefill_tokens = n_slots, prefill_tokens
        self.attention_groups, self.share_prefix = attention_groups, share_prefix
        self.decode_kernel = decode_kernel  # bf16 CPU decode attention in C (slot_attention), under attention_groups
        # decode steps without transformers' per-layer machinery, where the model is laid out like Llama
        self._lean = lean_decoder(model) if lean_decode else None
        # prefill through the same lean layers, attention in decode's loop: a prompt's logits then depend on the
        # prompt alone, not on padding, batch mates or where the shared prefix ends (through SDPA they do)
        self.lean_prefill = lean_prefill
        # Refill once this share of slots is free: one prefill pass for several rows, not one each.
        self.refill_at = max(1, int(n_slots * refill_fraction))
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._additive_mask = getattr(model.config, "_attn_implementation", "sdpa") != "sdpa"
        self.stats = BatcherStats()
        self._on_step = on_step or (lambda: None)  # called before every forward pass (the thread governor)
        # Grouped decode attention (and the C attention under it) runs inside the lean step, which calls it
        # directly: nothing is registered with transformers, and its own forward stays plain SDPA.
        self._grouped = bool(attention_groups) and self._lean is not None and not self._additive_mask
        self._prefix = _SharedPrefix([], {})  # the running sweep's shared prompt prefix (set by run())
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def run(self, requests: Sequence[GenerationRequest], sampling: SamplingSettings) -> Iterator[list[Generation]]:
        """Generations as rows finish (a list per step, often of one); every request exactly once."""
        prompts = {r.request_id: self.tokenizer(r.prompt, add_special_tokens=r.add_special_tokens)["input_ids"]
                   for r in requests}
        # Longest prompts first: rows prefilled together pad little, and the widest cache columns fill early.
        queue = sorted(requests, key=lambda r: len(prompts[r.request_id]), reverse=True)
        if not queue:
            return
        capacity = max(len(p) for p in prompts.values()) + sampling.max_new_tokens
        n_slots = min(self.n_slots, len(queue), self._rows_that_fit(capacity))
        self._prefix = _shared_prefix(list(prompts.values()), sorted({_alpha(r) for r in requests})) \
            if self.share_prefix else _SharedPrefix([], {})
        cache = SlotCache(n_slots, capacity)
        self.stats.n_slots = max(self.stats.n_slots, n_slots)
        slots: list[_Row | None] = [None] * cache.n_slots
        sampler = Sampler(sampling, self.device, self.decode_kernel)
        with torch.inference_mode():
            while True:
                live = sum(row is not None for row in slots)
                front = _front(slots)  # decode computes slots [0, front): live rows and the holes between them
                admit = bool(queue) and (len(slots) - live >= min(self.refill_at, len(queue)) or live == 0)
                if admit:
                    slots = self._compact(cache, slots)
                    self._release_freed_memory()
                elif _round_up(front, SHAPE_STEP) - _round_up(live, SHAPE_STEP) >= SHAPE_STEP:
                    self._fill_holes(cache, slots, live)
                if admit:
                    free = list(range(live, len(slots)))
                    admitted = queue[:len(free)]
                    del queue[:len(free)]
                    for rows, chunk in self._prefill_chunks(free, admitted, prompts):
                        self._on_step()
                        finished = self._prefill(cache, slots, rows, chunk, prompts, sampler, sampling)
                        if finished:
                            sampler.release(g.request_id for g in finished)
                            yield finished
                if not any(slots):
                    if not queue:
                        return
                    continue
                self.stats.kv_cache_bytes = max(self.stats.kv_cache_bytes, cache.nbytes())
                self._on_step()
                finished = self._decode(cache, slots, sampler, sampling)
                if finished:
                    sampler.release(g.request_id for g in finished)
                    yield finished

    def _release_freed_memory(self) -> None:
        """Batch shapes change at every refill, and the allocator keeps the differently sized blocks it freed.
        Over the 1,000-sample run of benchmarks/sweep_speed.py trimming cut RSS growth (second- to last-quarter
        mean) from 139 to 84 MB. Once per refill."""
        if self.device.type == "cpu":
            release_freed_memory()

    def _compact(self, cache: SlotCache, slots: list) -> list:
        """Live rows to the front, longest first; free slots after them. Decode then skips the free slots, and
        neighbouring rows have similar lengths, so grouped attention reads little past each row's end."""
        started = time.perf_counter()
        live = sorted((i for i, row in enumerate(slots) if row is not None), key=lambda i: -slots[i].position)
        order = live + [i for i, row in enumerate(slots) if row is None]
        # a live row's keys fill columns [0, position): its last token's are written by the next step
        cache.reorder(order, max((slots[i].position for i in live), default=0))
        self.stats.compactions += 1
        self.stats.compact_s += time.perf_counter() - started
        return [slots[i] for i in order]

    def _fill_holes(self, cache: SlotCache, slots: list, live: int) -> None:
        """Move the ``live`` rows past the first ``round_up(live)`` slots into the free slots before it, so decode
        computes no more rows than the live ones rounded up. Between refills rows finish one by one and leave
        holes that decode would still compute: 22 % of the default job's decode rows were holes while they
        waited for a full compaction (at 31 of 250 free slots). Only the rows that move are copied, each
        once, so every finished row costs at most one row's copy; the longest-first order is restored at
        the next refill (only the SDPA fallback's grouping, not the C kernels, reads better for it)."""
        started = time.perf_counter()
        end = _round_up(live, SHAPE_STEP)
        movers = [i for i in range(end, len(slots)) if slots[i] is not None]
        holes = [i for i in range(min(end, len(slots))) if slots[i] is None][:len(movers)]
        cache.move(holes, movers, max(slots[i].position for i in movers))
        for hole, mover in zip(holes, movers):  # in place: the caller's list
            slots[hole], slots[mover] = slots[mover], None
        self.stats.hole_fills += 1
        self.stats.compact_s += time.perf_counter() - started

    def _rows_that_fit(self, capacity: int) -> int:
        """Rows whose KV cache fits in half the memory free now: a long max_new_tokens lowers the batch
        instead of running out of memory halfway through a sweep."""
        config = self.model.config
        heads = getattr(config, "num_attention_heads", 1)
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        per_row = 2 * config.num_hidden_layers * kv_heads * head_dim * (capacity + 1) * self.dtype.itemsize
        return max(1, int(0.5 * _free_memory(self.device) // per_row))

    def _forward(self, cache: SlotCache, rows, input_ids: torch.Tensor, positions: torch.Tensor,
                 alphas: list[float], lean: bool = False, prefill: bool = False, **attention_kwargs) -> torch.Tensor:
        """The last column's logits (rows, vocab). ``lean``: a decode step through the lean decoder; ``prefill``: a
        prefill pass through the lean layers (``lean_prefill``); neither, or where they do not apply:
        transformers' forward."""
        width = int(positions.max()) + 1
        cache.bind(rows, positions, width)
        if self.strengths is not None:
            self.strengths.set(alphas, self.dtype, self.device)
        mask = attention_mask(positions, width, self.dtype, self._additive_mask)
        if lean and self._lean is not None:
            return self._lean(cache, input_ids, positions, mask, **attention_kwargs)
        if prefill and self._lean is not None and self.lean_prefill:
            logits = self._lean.prefill(cache, input_ids, positions, mask)
            if logits is not None:
                return logits
        # Only the last column's logits. As an index tensor, not the int 1: the int slices a strided view,
        # for which torch's matmul broadcasts the lm_head weight into one copy per row (~1 GB for 16 rows).
        last = torch.tensor([input_ids.shape[1] - 1], device=self.device)
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions.clamp(min=0),
                            use_cache=True, logits_to_keep=last, **{self._cache_kwarg: cache}, **attention_kwargs)
        return output.logits[:, -1, :]

    def _prefill_chunks(self, free: list[int], admitted: list[GenerationRequest], prompts: dict):
        """Admitted rows in passes of at most ``prefill_tokens`` padded tokens, so prefill activations stay
        tens of MB whatever the batch size."""
        start, shared = 0, len(self._prefix.tokens)
        while start < len(admitted):
            width = len(prompts[admitted[start].request_id]) - shared  # longest first: the chunk's widest
            n = max(1, min(len(admitted) - start, self.prefill_tokens // max(1, width)))
            yield free[start:start + n], admitted[start:start + n]
            start += n

    def _prefill(self, cache, slots, rows, admitted, prompts, sampler, sampling) -> list[Generation]:
        now = time.perf_counter()
        shared = len(self._prefix.tokens)
        if shared:
            self._copy_prefix(cache, rows, [_alpha(r) for r in admitted])
        self.stats.prefill_passes += 1
        ids = [prompts[r.request_id][shared:] for r in admitted]
        width = _round_up(max(len(p) for p in ids), SHAPE_STEP)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        positions = torch.full((len(ids), width), -1, dtype=torch.long)
        for i, prompt in enumerate(ids):  # left padding: every row's last prompt token is the last column
            input_ids[i, width - len(prompt):] = torch.tensor(prompt)
            positions[i, width - len(prompt):] = torch.arange(shared, shared + len(prompt))
        logits = self._forward(cache, torch.tensor(rows, device=self.device), input_ids.to(self.device),
                               positions.to(self.device), [_alpha(r) for r in admitted], prefill=True)
        self.stats.prompt_tokens += sum(len(p) for p in ids)
        self.stats.prefill_s += time.perf_counter() - now
        new = [_Row(r, shared + len(p), now) for r, p in zip(admitted, ids)]
        for slot, row in zip(rows, new):
            slots[slot] = row
        return self._advance(slots, rows, sampler.pick(logits, [r.request for r in new]), sampling)

    def _copy_prefix(self, cache: SlotCache, rows: list[int], alphas: list[float]) -> None:
        """Give each admitted row the shared prefix's keys and values at its α, computing them on first use."""
        prefix = self._prefix
        missing = sorted(set(alphas) - prefix.computed)
        if missing:
            n = len(prefix.tokens)
            self._forward(prefix.cache, torch.tensor([prefix.slots[a] for a in missing], device=self.device),
                          torch.tensor([prefix.tokens] * len(missing), device=self.device),
                          torch.arange(n, device=self.device).expand(len(missing), n), missing, prefill=True)
            self.stats.prompt_tokens += n * len(missing)
            prefix.computed.update(missing)
        cache.copy_from(prefix.cache, rows, [prefix.slots[a] for a in alphas], len(prefix.tokens))

    def _decode(self, cache, slots, sampler, sampling) -> list[Generation]:
        started = time.perf_counter()
        front = slots[:min(len(slots), _round_up(_front(slots), SHAPE_STEP))]
        live = [i for i, row in enumerate(front) if row is not None]
        input_ids = torch.tensor([[row.generated[-1] if row else 0] for row in front], device=self.device)
        positions = torch.tensor([[row.position if row else -1] for row in front], device=self.device)
        groups = {}
        if self._grouped:
            lengths = [row.position + 1 if row else 0 for row in front]
            groups["slot_groups"] = slot_groups(lengths)
            if self.decode_kernel:
                groups["slot_lengths"] = torch.tensor(lengths, dtype=torch.int32)
        logits = self._forward(cache, len(front), input_ids, positions,
                               [_alpha(row.request) if row else 0.0 for row in front], lean=True, **groups)
        picked = sampler.pick(logits if len(live) == len(front) else logits[live], [front[i].request for i in live])
        elapsed = time.perf_counter() - started
        self.stats.decode_s += elapsed
        self.stats.decode_steps += 1
        if len(live) == len(slots):
            self.stats.full_batch_s += elapsed
            self.stats.full_batch_rows += len(live)
        self.stats.decode_rows += len(live)
        self.stats.slot_rows += len(front)
        return self._advance(slots, live, picked, sampling)

    def _advance(self, slots, indices: list[int], tokens: list[int], sampling) -> list[Generation]:
        """Append each row's new token; free the slots of rows that are done and return their generations."""
        done = []
        for slot, token in zip(indices, tokens):
            row = slots[slot]
            row.generated.append(token)
            end = self._end(row.generated, sampling)
            if end is not None:
                done.append(self._finish(row, *end, sampling))
                slots[slot] = None
        return done

    def _end(self, generated: list[int], sampling: SamplingSettings) -> tuple[int, str] | None:
        if generated[-1] in self.eos_ids:
            return len(generated), "stop"
        if sampling.stop:
            n = stop_end(self.tokenizer, generated, sampling.stop)
            if n is not None:
                return n, "stop"
        if len(generated) >= sampling.max_new_tokens:
            return len(generated), "length"
        return None

    def _finish(self, row: _Row, n: int, reason: str, sampling: SamplingSettings) -> Generation:
        text = self.tokenizer.decode(row.generated[:n], skip_special_tokens=True)
        if sampling.stop:
            text = cut_at_stop(text, sampling.stop)
        return Generation(row.request.request_id, text, row.prompt_len, n, reason, time.perf_counter() - row.started,
                          tuple(row.generated[:n]))


def _shared_prefix(prompts: list[list[int]], alphas: list[float]) -> _SharedPrefix:
    """The longest token prefix all prompts share, one token short of the shortest prompt (prefill needs a
    token to produce the first logits from); empty when too short to pay for its own pass."""
    n = min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1)  # commonprefix takes any lists
    if n < MIN_SHARED_PREFIX:
        return _SharedPrefix([], {})
    return _SharedPrefix(prompts[0][:n], {a: i for i, a in enumerate(alphas)}, SlotCache(len(alphas), n))


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _front(slots: list) -> int:
    """One past the last live slot."""
    return next((i + 1 for i in range(len(slots) - 1, -1, -1) if slots[i] is not None), 0)


def _free_memory(device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: assume the batch fits
        return 1 << 62


def _alpha(request: GenerationRequest) -> float:
    return 0.0 if request.alpha is None else float(request.alpha)
