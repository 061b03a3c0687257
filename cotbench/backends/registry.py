"""The engines by name (``--backend``). Apart from the package's ``make_backend`` so that Ray's workers
(``ray_workers``) can build an engine by name without importing the module that imports them."""
from cotbench.backends.hf import HFBackend
from cotbench.backends.openai import OpenAIBackend
from cotbench.backends.vllm import VLLMBackend
from cotbench.registry import Registry

BACKENDS: Registry = Registry("backend")
BACKENDS.register("hf")(HFBackend)
BACKENDS.register("vllm")(VLLMBackend)
BACKENDS.register("openai")(OpenAIBackend)
