"""Generation engines behind one protocol (``base.Backend``), registered by name. Each is built from the
run's settings (``from_config``); the runner never changes when one is added.

- ``hf``: transformers, with cotbench's continuous α-grid scheduler (``backends/hf/``);
- ``vllm``: vLLM's offline engine, α values as resident LoRA adapters (``backends/vllm.py``);
- ``openai``: any OpenAI-compatible server, α values as served model names (``backends/openai.py``).
"""
from cotbench.backends.base import Backend
from cotbench.backends.hf import HFBackend
from cotbench.backends.openai import OpenAIBackend
from cotbench.backends.vllm import VLLMBackend
from cotbench.registry import Registry

BACKENDS: Registry = Registry("backend")
BACKENDS.register("hf")(HFBackend)
BACKENDS.register("vllm")(VLLMBackend)
BACKENDS.register("openai")(OpenAIBackend)

__all__ = ["Backend", "BACKENDS", "HFBackend", "VLLMBackend", "OpenAIBackend"]
