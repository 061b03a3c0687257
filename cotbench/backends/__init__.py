"""Generation backends, registered by name. ``hf`` (transformers) is built in."""
from cotbench.backends.base import Backend
from cotbench.backends.hf import HFBackend
from cotbench.registry import Registry

BACKENDS: Registry = Registry("backend")
BACKENDS.register("hf")(HFBackend)

__all__ = ["Backend", "BACKENDS", "HFBackend"]
