"""Generation engines behind one protocol (``base.Backend``), registered by name. Each is built from the
run's settings (``from_config``); the runner never changes when one is added.

- ``hf``: transformers, with cotbench's continuous α-grid scheduler (``backends/hf/``);
- ``vllm``: vLLM's offline engine, α values as resident LoRA adapters (``backends/vllm.py``);
- ``openai``: any OpenAI-compatible server, α values as served model names (``backends/openai.py``).

With ``--ray``, :func:`make_backend` puts the chosen engine into workers on a Ray cluster
(``backends/ray_workers.py``), behind the same protocol.
"""
from cotbench.backends.base import Backend
from cotbench.backends.hf import HFBackend
from cotbench.backends.openai import OpenAIBackend
from cotbench.backends.registry import BACKENDS
from cotbench.backends.vllm import VLLMBackend


def make_backend(config) -> Backend:
    """The engine a run's settings ask for: ``config.backend`` here, or in Ray workers under ``--ray``."""
    if config.ray is not None:
        from cotbench.backends.ray_workers import RayBackend

        return RayBackend.from_config(config)
    return BACKENDS.get(config.backend).from_config(config)


__all__ = ["Backend", "BACKENDS", "HFBackend", "VLLMBackend", "OpenAIBackend", "make_backend"]
