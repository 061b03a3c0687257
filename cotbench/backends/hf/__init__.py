"""The transformers engine (``--backend hf``) and its internals: the continuous scheduler and its slot cache,
grouped decode attention, the lean decode step, packed bf16 weights and the CPU kernels."""
from cotbench.backends.hf.engine import DTYPES, SCHEDULERS, HFBackend, pick_batch_size, pick_device, pick_dtype

__all__ = ["HFBackend", "DTYPES", "SCHEDULERS", "pick_device", "pick_dtype", "pick_batch_size"]
