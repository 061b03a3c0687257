"""A lean decode step for Llama-layout models: one new token per row, the model's own modules, less Python.

transformers' forward is general: it builds masks, threads keyword arguments through every layer, runs
decorators and hooks and returns output records. In a decode step of a small model on a CPU that machinery
is a large share of the step (SmolLM2-135M, 128 rows: about 30 of 229 ms, measured). This module calls the
same modules (norms, projections, MLP, rotary embedding) in the order ``LlamaDecoderLayer`` does, with the
same tensors, so without cotbench's C kernels its fp32 logits are transformers' bit for bit (tested). On a
CPU (bf16 or fp32) it goes one step further: each layer's rotary embedding, key/value write and attention
are one C call (:func:`cotbench.backends.hf.cpu_kernels.rope_decode_attention`), about twenty small torch ops
fewer a layer, and each residual add with the RMSNorm after it is another (``add_rms_norm``, transformers'
roundings; in fp32 equal to transformers' up to the order of the fp32 sums).

It applies to the model types whose decoder layer is Llama's (Llama, Mistral, Qwen2: the CoT-Valve paper's
base models among them), and Qwen3's, which adds an RMSNorm over each head of the query and key before the
rotary embedding (run here as transformers runs it), without sliding-window attention; anything else goes
through transformers' forward, so nothing is lost, only this speed.

Prefill passes run the same layers (:meth:`LeanDecoder.prefill`) with attention in the decode kernel's loop, each
prompt token a query of its own: PyTorch's SDPA sums in blocks that move with the pass's width and padding, so
through it a prompt's logits depended on the rows prefilled beside it (issue 39). It needs the C kernels.
"""
from __future__ import annotations

import sys

import torch

from cotbench.backends.hf.cpu_kernels import (KERNEL_DTYPES, add_rms_norm, load_library, prefill_attention,
                                              rope_decode_attention)
from cotbench.backends.hf.slot_attention import grouped_sdpa
from cotbench.backends.hf.slot_cache import SlotCache

LLAMA_LAYOUT = ("llama", "mistral", "qwen2", "qwen3")  # LlamaDecoderLayer, module for module (Qwen3: + q/k norms)
QK_NORMED = ("qwen3",)  # attention with q_norm and k_norm (per head, before the rotary embedding)


def lean_decoder(model) -> "LeanDecoder | None":
    """The lean decode step for ``model``, or None where it does not apply (see :func:`why_not_lean`)."""
    return None if why_not_lean(model) else LeanDecoder(model)


def why_not_lean(model) -> str | None:
    """Why the lean step cannot run ``model``, or None when it can."""
    config = model.config
    if config.model_type not in LLAMA_LAYOUT:
        return f"model type {config.model_type!r} is not one of {', '.join(LLAMA_LAYOUT)}"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention"
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
        return "not a decoder-only model with Llama's module names"
    for layer in inner.layers:
        attention = getattr(layer, "self_attn", None)
        parts = [getattr(attention, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
        parts += [getattr(layer, name, None) for name in ("input_layernorm", "post_attention_layernorm", "mlp")]
        qk_norms = [hasattr(attention, name) for name in ("q_norm", "k_norm")]
        if any(part is None for part in parts) or (any(qk_norms) and not (all(qk_norms) and config.model_type in QK_NORMED)):
            return f"layer {type(layer).__name__} is not laid out like LlamaDecoderLayer"
    return None


RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")  # weight · x / rms(x): what add_rms_norm computes


class LeanDecoder:
    def __init__(self, model):
        self.model = model
        inner = model.model
        self.embed, self.layers, self.norm, self.rotary = inner.embed_tokens, list(inner.layers), inner.norm, inner.rotary_emb
        self.lm_head = model.lm_head
        attention = self.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.qk_norms = hasattr(attention, "q_norm")
        self.kv_heads = model.config.num_key_value_heads
        # the model's own rotary function (each modeling file defines it), so its numerics are transformers'
        self.apply_rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb
        # every norm in the order a decode step runs them: layer i's two, then the final one
        self._norms = [n for layer in self.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
        self._norms.append(self.norm)
        self._norms_in_c = all(type(n).__name__ in RMS_NORMS and hasattr(n, "variance_epsilon") for n in self._norms)

    def __call__(self, cache: SlotCache, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 slot_lengths: torch.Tensor | None = None, **attention_kwargs) -> torch.Tensor:
        """Logits (rows, vocab) in the model's dtype for one token per row; ``cache`` is already bound to these rows.

        ``input_ids`` and ``positions`` are (rows, 1); ``mask``, ``slot_lengths`` and ``attention_kwargs`` are
        what the batcher would hand transformers' forward. Given ``slot_lengths``, bf16 or fp32 on a CPU runs each
        layer's rotary embedding, cache write and attention as one C call (``rope_decode_attention``), and
        each residual add with the norm after it as another (``add_rms_norm``)."""
        rows = input_ids.shape[0]
        hidden = self.embed(input_ids)
        cos, sin = self.rotary(hidden, positions.clamp(min=0))
        library = self._library(hidden, cache, slot_lengths)
        if slot_lengths is not None:
            attention_kwargs["slot_lengths"] = slot_lengths
        norms = iter(self._norms)
        hidden, x = self._add_norm(library, hidden, None, next(norms))
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            query, key, value = attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)
            if self.qk_norms:  # Qwen3: each head's query and key normalised, as its attention does
                query = attention.q_norm(query.view(rows, 1, -1, self.head_dim))
                key = attention.k_norm(key.view(rows, 1, -1, self.head_dim))
            out = None
            if library is not None:
                out = rope_decode_attention(library, query.view(rows, -1), key.view(rows, -1), value.view(rows, -1),
                                            cos.view(rows, -1), sin.view(rows, -1), cache.keys[index],
                                            cache.values[index], slot_lengths, attention.scaling, self.kv_heads)
            if out is None:
                out = self._attention(attention, index, cache, query, key, value, cos, sin, mask, attention_kwargs)
            hidden, x = self._add_norm(library, hidden, attention.o_proj(out.reshape(rows, 1, -1).contiguous()), next(norms))
            hidden, x = self._add_norm(library, hidden, layer.mlp(x), next(norms))
        return self.lm_head(x).view(rows, -1)

    def prefill(self, cache: SlotCache, input_ids: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor | None:
        """The last column's logits (rows, vocab) of a prefill pass over ``input_ids`` (rows, tokens), left-padded
        (position < 0), into ``cache`` (already bound to these rows); None where cotbench's kernels do not run
        here (the caller runs transformers' forward instead).

        The layers' modules in transformers' order, as in a decode step, with attention in decode's loop
        (:func:`~cotbench.backends.hf.cpu_kernels.prefill_attention`, each prompt token a query of its own).
        Every other step works token by token, so a prompt's logits do not depend on the padding, on the rows
        prefilled with it or on where a shared prefix ends; through transformers' SDPA they do."""
        weight = self.embed.weight
        if weight.dtype not in KERNEL_DTYPES or weight.device.type != "cpu" or (library := load_library()) is None:
            return None
        rows, tokens = input_ids.shape
        hidden = self.embed(input_ids)
        cos, sin = self.rotary(hidden, positions.clamp(min=0))
        lengths = (positions + 1).clamp(min=0)
        norms = iter(self._norms)
        hidden, x = self._add_norm(library, hidden, None, next(norms))
        shape = (rows, tokens, -1, self.head_dim)
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            query, key = attention.q_proj(x).view(shape), attention.k_proj(x).view(shape)
            value = attention.v_proj(x).view(shape).transpose(1, 2)
            if self.qk_norms:
                query, key = attention.q_norm(query), attention.k_norm(key)
            query, key = self.apply_rotary(query.transpose(1, 2), key.transpose(1, 2), cos, sin)
            keys, values = cache.update(key, value, index)
            out = prefill_attention(library, query, keys, values, lengths, attention.scaling)
            if out is None:  # a shape the kernel declines (head size > 256, > 16 query heads per kv head)
                from transformers.integrations.sdpa_attention import sdpa_attention_forward

                out, _ = sdpa_attention_forward(attention, query, keys, values, mask, dropout=0.0,
                                                scaling=attention.scaling)
            hidden, x = self._add_norm(library, hidden, attention.o_proj(out.reshape(rows, tokens, -1)), next(norms))
            hidden, x = self._add_norm(library, hidden, layer.mlp(x), next(norms))
        return self.lm_head(x[:, -1].contiguous()).view(rows, -1)

    def _attention(self, attention, index, cache, query, key, value, cos, sin, mask, attention_kwargs):
        """LlamaAttention's steps between the projections and o_proj, with the same tensors."""
        rows, head_dim = query.shape[0], self.head_dim
        query = query.view(rows, 1, -1, head_dim).transpose(1, 2)
        key = key.view(rows, 1, -1, head_dim).transpose(1, 2)
        value = value.view(rows, 1, -1, head_dim).transpose(1, 2)
        query, key = self.apply_rotary(query, key, cos, sin)
        key, value = cache.update(key, value, index)
        out, _ = grouped_sdpa(attention, query, key, value, mask, dropout=0.0, scaling=attention.scaling,
                              **attention_kwargs)
        return out

    def _add_norm(self, library, residual, delta, norm):
        """(residual + delta, norm of it); ``delta`` None: (residual, its norm). In C where it applies, else
        the two torch steps transformers runs."""
        if library is not None and self._norms_in_c:
            fused = add_rms_norm(library, residual, delta, norm.weight, norm.variance_epsilon)
            if fused is not None:
                return fused
        hidden = residual if delta is None else residual + delta
        return hidden, norm(hidden)

    def _library(self, hidden: torch.Tensor, cache: SlotCache, slot_lengths):
        """cotbench's kernel library where the fused steps apply (bf16 or fp32 on a CPU, row lengths given,
        every layer's cache allocated), else None: that step runs transformers' own ops."""
        if (slot_lengths is None or hidden.dtype not in KERNEL_DTYPES or hidden.device.type != "cpu"
                or len(cache.keys) != len(self.layers)):
            return None
        return load_library()
