"""The reference the engine is tested against: transformers' own ``model.generate`` on the backend's model.

One α at a time, batches left-padded to their longest prompt, greedy or sampled through one generator per
request (cotbench's ``PerRequestSampling``), EOS and stop strings counted as the engine counts them. It was the
engine's static scheduler until both schedulers went through one batcher (issue 39); it stays here as the check
that the batcher's arithmetic is transformers'.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from cotbench.backends.hf.sampling import Sampler
from cotbench.backends.stops import cut_at_stop, shortest_prefix_with_stop
from cotbench.records import Generation


class TransformersGenerate:
    """``generate(requests)`` like an HFBackend's, by ``backend.model.generate``; other attributes are the
    backend's."""

    def __init__(self, backend, batch_size: int | None = None):
        self.backend = backend
        self.batch_size = batch_size or backend.batch_size

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, requests):
        groups = defaultdict(list)
        for request in requests:
            groups[(request.alpha, request.sampling, request.add_special_tokens)].append(request)
        for (alpha, sampling, special), group in groups.items():
            self.backend.set_alpha(alpha)
            group = sorted(group, key=lambda r: len(r.prompt), reverse=True)
            for start in range(0, len(group), self.batch_size):
                yield self._batch(group[start:start + self.batch_size], sampling, special)

    def _batch(self, batch, sampling, add_special_tokens):
        backend = self.backend
        encoded = backend.tokenizer([r.prompt for r in batch], return_tensors="pt", padding=True,
                                    add_special_tokens=add_special_tokens).to(backend.device)
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=backend.tokenizer.pad_token_id,
                      eos_token_id=sorted(backend._eos_ids), do_sample=False, temperature=None, top_p=None, top_k=None)
        if not sampling.greedy:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([PerRequestSampling(sampling, batch, backend.device)])
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=backend.tokenizer)
        with torch.inference_mode():
            output = backend.model.generate(**encoded, **kwargs)
        width = encoded["input_ids"].shape[1]
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, request in enumerate(batch):
            new_ids = output[row, width:].tolist()
            n, finish = self._length(new_ids, sampling)
            text = backend.tokenizer.decode(new_ids[:n], skip_special_tokens=True)
            if sampling.stop:
                text = cut_at_stop(text, sampling.stop)
            results.append(Generation(request.request_id, text, int(lengths[row]), n, finish, 0.0, tuple(new_ids[:n])))
        return results

    def _length(self, ids, sampling):
        """Tokens produced (EOS included, padding excluded) and why it stopped: the first EOS or completed stop
        string, whichever is earlier (padding after a finished row may be the EOS id itself)."""
        n_eos = next((i + 1 for i, token in enumerate(ids) if token in self.backend._eos_ids), None)
        n_stop = shortest_prefix_with_stop(self.backend.tokenizer, ids[:n_eos], sampling.stop) if sampling.stop else None
        ends = [n for n in (n_eos, n_stop) if n is not None]
        return (min(ends), "stop") if ends else (len(ids), "length")


class PerRequestSampling:
    """A ``LogitsProcessor`` for ``model.generate`` (greedy decoding): row i's next token is what
    ``Sampler.pick`` draws from row i's own generator; every other token is masked out."""

    def __init__(self, sampling, requests, device):
        self.sampler, self.requests = Sampler(sampling, device, cpu_kernel=False), requests

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        picks = self.sampler.pick(scores, self.requests)
        chosen = torch.full_like(scores, float("-inf"))
        chosen[torch.arange(len(picks)), torch.tensor(picks)] = 0.0
        return chosen
