"""transformers backend on CPU or CUDA.

Two schedulers over one batcher (:mod:`cotbench.backends.hf.continuous`: a preallocated KV cache, each row
at its own α through a per-row LoRA scale), so a row's arithmetic, and its tokens, are the same under both:
- ``continuous`` (default): one queue for the whole sweep, rows at mixed α in one batch, finished rows
  refilled at once.
- ``static``: one α at a time, ``batch_size`` rows at once, the next batch when the whole batch is done.
transformers' own ``generate`` is the reference both are tested against (tests/backends/hf).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Sequence

from cotbench.backends.loading import load_model_and_tokenizer, resolve_model
from cotbench.errors import ConfigError
from cotbench.prompts import Messages, render_chat
from cotbench.records import Generation, GenerationRequest, SamplingSettings

DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = ("continuous", "static")


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' asked for, but torch sees no CUDA GPU. Use --device cpu.")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}.")
    if dtype == "auto":
        # bf16 where the hardware has bf16 matmuls (2.2x fp32's FLOP/s on this project's AVX512-BF16 CPU,
        # see benchmarks/), else fp32 on CPUs; fp16 on GPUs without bf16.
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    return getattr(torch, dtype)


def pick_batch_size(batch_size: int | str, device: str) -> int:
    """auto: enough rows that per-step costs (reading the weights, launching ops) are shared widely. On the
    2-core CPU of benchmarks/sweep_speed.py a decode step of SmolLM2-135M made ~1.15x the tokens/s at 256 rows
    of what it made at 128, and no more at 384 or 512 (measured). The batcher lowers it further if the KV cache
    would not fit in half the free memory."""
    if batch_size == "auto":
        return 256
    return int(batch_size)


class HFBackend:
    def __init__(self, model: str, valve: str | None = None, device: str = "auto", dtype: str = "auto",
                 batch_size: int | str = "auto", scheduler: str = "continuous", pack_weights: bool = True,
                 threads: str | int | None = None):
        self.threads = threads  # cotbench.threads.controlled_threads: None leaves torch's count alone
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        source = resolve_model(model)
        loaded, tokenizer = load_model_and_tokenizer(source, self.dtype, self.device)
        self._setup(loaded, tokenizer, source.display_name, valve, batch_size, scheduler, pack_weights)

    @classmethod
    def from_config(cls, config) -> "HFBackend":
        return cls(config.model, config.valve, config.device, config.dtype, config.batch_size, config.scheduler,
                   threads=config.threads)

    def close(self) -> None:
        pass  # nothing outside this process

    @classmethod
    def from_loaded(cls, model, tokenizer, model_id: str, valve: str | None = None, batch_size: int | str = "auto",
                    scheduler: str = "continuous", pack_weights: bool = True) -> "HFBackend":
        """Wrap a model something else loaded (the lm-eval `valve` model): same generation, same counts. The
        tokenizer is copied: padding side and pad token are set on cotbench's copy, not on the caller's."""
        import copy

        tokenizer = copy.deepcopy(tokenizer)
        backend = cls.__new__(cls)
        backend.threads = None  # the caller's process: its thread count stays the caller's
        backend.device = str(next(model.parameters()).device)
        backend.dtype = next(model.parameters()).dtype
        backend._setup(model, tokenizer, model_id, valve, batch_size, scheduler, pack_weights)
        return backend

    def _setup(self, model, tokenizer, model_id: str, valve: str | None, batch_size: int, scheduler: str,
               pack_weights: bool) -> None:
        from cotbench.backends.hf._heap import release_freed_memory
        from cotbench.backends.hf.packed_linear import pack_linear_layers, packing_applies
        from cotbench.valve.apply import attach_valve, valve_fingerprint
        from cotbench.valve.row_scale import row_scaled

        if scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler '{scheduler}' is not one of {', '.join(SCHEDULERS)}.")
        self.model, self.tokenizer, self.model_id = model, tokenizer, model_id
        self.batch_size = pick_batch_size(batch_size, self.device)
        self.prefill_tokens = 2048  # padded prompt tokens per prefill pass (see ContinuousBatcher)
        # continuous-scheduler techniques, on by default; switchable so benchmarks/ can measure each one
        self.attention_groups, self.share_prefix, self.decode_kernel, self.lean_decode = True, True, True, True
        self.lean_prefill = True  # prefill through the lean layers too (row-invariant attention; lean_decode.py)
        self.lora_kernel = True  # bf16 CPU valve layers: the LoRA up-projection in C (cpu_kernels.lora_up)
        self.scheduler, self._strengths = scheduler, None
        self.last_stats = self.thread_stats = None  # the last generate call's scheduler and thread records
        self._n_params = sum(p.numel() for p in self.model.parameters())  # before LoRA layers are added
        self.tokenizer.padding_side = "left"  # decoder-only batching: prompts end at the same column
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.valve_id = ""
        if valve:
            self.model = attach_valve(self.model, valve)
            self.valve_id = f"{Path(valve).name}@{valve_fingerprint(valve)}"
            # both schedulers run the same LoRA arithmetic; only how rows are batched differs
            self.model, self._strengths = row_scaled(self.model)
        # weights packed once for oneDNN (bf16: the same numbers, fp32: within rounding; both faster): the
        # model is inference-only now
        self.packed_layers = pack_linear_layers(self.model) if pack_weights and packing_applies(self.model) else 0
        if self.packed_layers:
            release_freed_memory()  # the plain weights just dropped
        self._eos_ids = self._collect_eos_ids()
        self.decode_path = self._decode_path()
        if scheduler == "continuous":  # said once, when the model is loaded: the speed a run gets depends on it
            print(f"[cotbench] decode: {self.decode_path}", file=sys.stderr)

    def _decode_path(self) -> str:
        from cotbench.backends.hf.lean_decode import why_not_lean

        why = why_not_lean(self.model)
        return (f"cotbench's lean step ({self.model.config.model_type} layout)" if why is None
                else f"transformers' forward ({why})")

    def _collect_eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        config_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(config_eos if isinstance(config_eos, list) else [config_eos])
        return {i for i in ids if i is not None}

    def render(self, messages: Messages) -> tuple[str, bool]:
        return render_chat(self.tokenizer, messages)

    def n_params(self) -> int:
        return self._n_params

    def describe(self) -> dict:
        return {"backend": "hf", "device": self.device, "dtype": str(self.dtype).replace("torch.", "")}

    def numerics(self) -> dict:
        """What can change the rounding of this engine's sums, recorded with each sample, never keyed. Where
        generation is deterministic (:meth:`why_not_deterministic` is None) batch size, scheduler and threads
        cannot, so they are left out: two runs that differ only in them record the same numerics."""
        import torch

        why = self.why_not_deterministic()
        if why is None:
            return {"deterministic": True, "cpu_kernels": True, "torch": torch.__version__}
        kernels = None
        if self.device == "cpu":
            from cotbench.backends.hf.cpu_kernels import kernel_status

            kernels = kernel_status() == "loaded"
        return {"batch_size": self.batch_size, "scheduler": self.scheduler, "threads": self.threads,
                "cpu_kernels": kernels, "torch": torch.__version__, "deterministic": False, "because": why}

    def why_not_deterministic(self) -> str | None:
        """None where a row's logits are a function of its prompt, α and the model alone on this machine and
        dtype: every step row-invariant, each reduction in an order fixed by the row (packed linear layers,
        cotbench's C attention in prefill and decode, its LoRA, norm and argmax kernels; tested in
        tests/backends/hf/test_determinism.py), so neither batch size, batch mates, scheduler nor threads
        change a token. Else what keeps this engine from it."""
        import torch

        from cotbench.backends.hf.cpu_kernels import KERNEL_DTYPES, attention_fits, kernel_status
        from cotbench.backends.hf.lean_decode import why_not_lean
        from cotbench.backends.hf.packed_linear import packing_applies

        if self.device != "cpu":
            return f"{self.device}: only cotbench's CPU path is built row-invariant"
        if self.dtype not in KERNEL_DTYPES:
            return f"{str(self.dtype).replace('torch.', '')}: cotbench's kernels cover bf16 and fp32"
        if (why := why_not_lean(self.model)) is not None:
            return f"transformers' forward ({why}): its attention sums depend on padding and batch width"
        config = self.model.config
        if getattr(config, "_attn_implementation", "sdpa") != "sdpa":
            return f"attention implementation {config._attn_implementation!r}"
        head_dim = self.model.model.layers[0].self_attn.head_dim
        if not attention_fits(head_dim, config.num_attention_heads, config.num_key_value_heads):
            return (f"attention of {config.num_attention_heads} heads of {head_dim} over {config.num_key_value_heads} "
                    "key/value heads is beyond cotbench's kernels and runs on SDPA")
        if (status := kernel_status()) != "loaded":
            return f"cotbench's C kernels are not in use ({status})"
        off = [name for name in ("lean_decode", "lean_prefill", "decode_kernel", "attention_groups", "lora_kernel")
               if not getattr(self, name)]
        if off:
            return f"switched off: {', '.join(off)}"
        if not self.packed_layers and (self.dtype == torch.float32 or packing_applies(self.model)):
            # fp32 F.linear is MKL's sgemm, bf16 oneDNN's unpacked path: neither is checked row-invariant
            return "linear layers not packed for oneDNN: F.linear's sums can depend on the row count"
        return None

    def set_alpha(self, alpha: float | None) -> None:
        """Every row of the following forward passes at θ + α·Δθ (None: α = 0). The continuous scheduler sets
        per-row strengths itself; this is for the static path and for callers that run the model directly
        (the lm-eval ``valve`` model's loglikelihoods)."""
        if self._strengths is not None:  # one row of strengths broadcasts over any batch
            self._strengths.set([0.0 if alpha is None else float(alpha)], self.dtype, self.device)

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Generation]]:
        from cotbench.threads import controlled_threads

        with controlled_threads(self.threads) as governor:
            try:
                if self.scheduler == "static":
                    yield from self._generate_static(requests, governor.tick if governor else None)
                else:
                    yield from self._generate_continuous(requests, governor.tick if governor else None)
            finally:  # this call's record, also when it stopped early
                self.thread_stats = governor.report() if governor else None

    def stats(self) -> dict:
        """For the run's metadata: where generation's time went (prefill and decode, the continuous scheduler),
        how the thread governor adapted to other programs (cotbench.threads), and whether the C kernels ran."""
        from dataclasses import asdict

        stats = {}
        if self.last_stats is not None:
            stats["batcher"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self.last_stats).items()}
        if self.thread_stats:
            stats["threads"] = self.thread_stats
        stats["decode_path"] = self.decode_path
        stats["packed_layers"] = self.packed_layers
        if self.device == "cpu":  # "loaded", or why decode ran on PyTorch's ops instead
            from cotbench.backends.hf.cpu_kernels import kernel_status

            stats["cpu_kernels"] = kernel_status()
        return stats

    def _batcher(self, on_step=None):
        from cotbench.backends.hf.continuous import ContinuousBatcher  # torch at import: not at config time

        if self._strengths is not None:
            self._strengths.cpu_kernel = self.lora_kernel
        batcher = ContinuousBatcher(self.model, self.tokenizer, self._eos_ids, self._strengths, self.batch_size,
                                    prefill_tokens=self.prefill_tokens, attention_groups=self.attention_groups,
                                    share_prefix=self.share_prefix, decode_kernel=self.decode_kernel,
                                    lean_decode=self.lean_decode, lean_prefill=self.lean_prefill, on_step=on_step)
        self.last_stats = batcher.stats
        return batcher

    def _generate_continuous(self, requests: Sequence[GenerationRequest], on_step) -> Iterator[list[Generation]]:
        groups: dict[SamplingSettings, list[GenerationRequest]] = defaultdict(list)
        for request in requests:
            groups[request.sampling].append(request)
        batcher = self._batcher(on_step)
        for sampling, group in groups.items():
            yield from batcher.run(group, sampling)

    def _generate_static(self, requests: Sequence[GenerationRequest], on_step) -> Iterator[list[Generation]]:
        """One α at a time, ``batch_size`` requests at once, the next batch only when the whole batch is done;
        through the same batcher, so each row's arithmetic (and so its tokens) is the continuous scheduler's."""
        groups: dict[tuple, list[GenerationRequest]] = defaultdict(list)
        for request in requests:
            groups[(request.alpha, request.sampling)].append(request)
        batcher = self._batcher(on_step)
        for (_, sampling), group in groups.items():
            # Longest prompts first, so each batch pads little and memory peaks early.
            group = sorted(group, key=lambda r: len(r.prompt), reverse=True)
            for start in range(0, len(group), self.batch_size):  # a batch no larger than the slots: no refill
                yield from batcher.run(group[start:start + self.batch_size], sampling)
