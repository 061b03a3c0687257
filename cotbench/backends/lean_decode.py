"""A lean decode step for Llama-layout models: one new token per row, the model's own modules, less Python.

transformers' forward is general: it builds masks, threads keyword arguments through every layer, runs
decorators and hooks and returns output records. In a decode step of a small model on a CPU that machinery
is a large share of the step (SmolLM2-135M, 128 rows: about 30 of 229 ms, measured). This module calls the
same modules (norms, projections, MLP, rotary embedding) in the order ``LlamaDecoderLayer`` does, with the
same tensors, so in fp32 its logits are transformers' bit for bit (tested).

It applies to the model types whose decoder layer is Llama's (Llama, Mistral, Qwen2: the CoT-Valve paper's
base models among them) without sliding-window attention; anything else goes through transformers'
forward, so nothing is lost, only this speed.
"""
from __future__ import annotations

import sys

import torch

from cotbench.backends.slot_attention import grouped_sdpa
from cotbench.backends.slot_cache import SlotCache

LLAMA_LAYOUT = ("llama", "mistral", "qwen2")  # decoder layers that are LlamaDecoderLayer, module for module


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
        if any(part is None for part in parts) or any(hasattr(attention, name) for name in ("q_norm", "k_norm")):
            return f"layer {type(layer).__name__} is not laid out like LlamaDecoderLayer"
    return None


class LeanDecoder:
    def __init__(self, model):
        self.model = model
        inner = model.model
        self.embed, self.layers, self.norm, self.rotary = inner.embed_tokens, list(inner.layers), inner.norm, inner.rotary_emb
        self.lm_head = model.lm_head
        attention = self.layers[0].self_attn
        self.head_dim = attention.head_dim
        # the model's own rotary function (each modeling file defines it), so its numerics are transformers'
        self.apply_rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb

    def __call__(self, cache: SlotCache, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 **attention_kwargs) -> torch.Tensor:
        """Logits (rows, vocab) in fp32 for one token per row; ``cache`` is already bound to these rows.

        ``input_ids`` and ``positions`` are (rows, 1); ``mask`` and ``attention_kwargs`` are what the
        batcher would hand transformers' forward."""
        rows = input_ids.shape[0]
        hidden = self.embed(input_ids)
        cos, sin = self.rotary(hidden, positions.clamp(min=0))
        head_dim = self.head_dim
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            residual = hidden
            x = layer.input_layernorm(hidden)
            query = attention.q_proj(x).view(rows, 1, -1, head_dim).transpose(1, 2)
            key = attention.k_proj(x).view(rows, 1, -1, head_dim).transpose(1, 2)
            value = attention.v_proj(x).view(rows, 1, -1, head_dim).transpose(1, 2)
            query, key = self.apply_rotary(query, key, cos, sin)
            key, value = cache.update(key, value, index)
            out, _ = grouped_sdpa(attention, query, key, value, mask, dropout=0.0, scaling=attention.scaling,
                                  **attention_kwargs)
            hidden = residual + attention.o_proj(out.reshape(rows, 1, -1).contiguous())
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.lm_head(self.norm(hidden)).view(rows, -1).float()
