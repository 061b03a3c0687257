"""Token choice, the same on every path: greedy argmax, or temperature/top-p sampling with one generator per
request, seeded from the run's seed and the request's key. A row's draws then do not depend on which rows
share its batch, on the batch size or on the scheduler, so a sampled run reproduces under any schedule.

The batcher (both schedulers) calls ``Sampler.pick``; the tests' transformers reference gets the same choice
through a logits processor around it (tests/backends/hf/reference.py).
"""
from __future__ import annotations

import torch

from cotbench.backends.hf.cpu_kernels import KERNEL_DTYPES, argmax, load_library
from cotbench.backends.seeds import request_seed
from cotbench.records import GenerationRequest, SamplingSettings


class Sampler:
    """Greedy argmax, or temperature/top-p sampling with one generator per request: a row's draws do
    not depend on which other rows share its batch, so sampled runs reproduce under any schedule.

    Logits come in the model's dtype. Greedy logits on a CPU go to cotbench's C argmax (the same choice as
    torch's; in bf16 without an fp32 copy of the logits first: ~4x faster at 128 rows); sampling works in fp32."""

    def __init__(self, sampling: SamplingSettings, device, cpu_kernel: bool = True):
        self.sampling, self.device = sampling, device
        self._cpu_kernel = cpu_kernel and device.type == "cpu" and sampling.greedy
        self._generators: dict[str, torch.Generator] = {}
        self._warpers = []
        if not sampling.greedy:
            from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

            self._warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                self._warpers.append(TopPLogitsWarper(sampling.top_p))

    def pick(self, logits: torch.Tensor, requests: list[GenerationRequest]) -> list[int]:
        if self.sampling.greedy:
            if self._cpu_kernel and logits.dtype in KERNEL_DTYPES and (library := load_library()) is not None:
                picked = argmax(library, logits.contiguous())
                if picked is not None:
                    return picked
            return logits.argmax(dim=-1).tolist()
        logits = logits.float()
        for warper in self._warpers:
            logits = warper(None, logits)
        probs = torch.softmax(logits, dim=-1)
        return [int(torch.multinomial(p, 1, generator=self._generator(r.request_id))) for p, r in zip(probs, requests)]

    def release(self, request_ids) -> None:
        """Forget the generators of finished requests: a long sampled sweep keeps only its live rows' state."""
        for request_id in request_ids:
            self._generators.pop(request_id, None)

    @property
    def n_generators(self) -> int:
        return len(self._generators)

    def _generator(self, request_id: str) -> torch.Generator:
        if request_id not in self._generators:
            seed = request_seed(self.sampling.seed, request_id)
            self._generators[request_id] = torch.Generator(device=self.device).manual_seed(seed)
        return self._generators[request_id]
