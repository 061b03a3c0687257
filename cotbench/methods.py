"""Length-control methods as sweep axes, so a valve curve and its training-free baselines share one plot.

``--method`` picks the axis, each point stored and keyed like an α:
- ``valve`` (default): the valve strength α (``--alphas``).
- ``prompt-budget``: the prompt asks for fewer than N tokens ("Answer using less than N tokens", the
  CoT-Valve paper's prompt baseline), N from ``--budgets``; the base model.
- ``budget-forcing`` (s1-style): thinking stops at N tokens. Phase 1 generates up to N tokens, stopping at
  the closing delimiter; a row that did not close its block gets the delimiter and the answer cue
  (``--answer-cue``) appended, and phase 2 continues it to the answer (up to ``--max-new-tokens`` more).
  Forced delimiter and cue are prompt, not generated tokens. No engine's native budget is used (recorded as
  ``forced_by: cotbench``). The base model.
- ``nothink`` (NoThinking): an empty thinking block is prefilled after the prompt, so the model answers at
  once. The base model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Sequence

from cotbench.records import Generation, GenerationRequest
from cotbench.thinking import ThinkingFormat

METHODS = ("valve", "prompt-budget", "budget-forcing", "nothink")
DEFAULT_CUE = "\n\nFinal Answer: "  # s1's cue after the forced end of thinking


@dataclass(frozen=True)
class Point:
    """One point of a sweep axis: the method, its knob (α, or a budget in tokens; None for nothink) and the
    valve strength the model runs at (None: no valve, or the base model)."""

    method: str
    knob: float | None
    alpha: float | None


def points(method: str, alphas: Sequence[float | None], budgets: Sequence[int], base_alpha: float | None = None) -> list[Point]:
    """The sweep's points. Baselines run the base model: ``base_alpha`` is 0 with a valve loaded, else None."""
    if method == "valve":
        return [Point("valve", a, a) for a in alphas]
    if method == "nothink":
        return [Point("nothink", None, base_alpha)]
    return [Point(method, float(n), base_alpha) for n in budgets]


def nothink_prefill(prompt: str, fmt: ThinkingFormat) -> str:
    """The prompt with an empty thinking block after it (the opening tag only if the template did not write it)."""
    opened = prompt.rstrip().endswith(fmt.open)
    return prompt + ("" if opened else fmt.open) + "\n\n" + fmt.close + "\n\n"


def generate(backend, requests: Sequence[GenerationRequest], fmt: ThinkingFormat | None,
             cue: str = DEFAULT_CUE, store=None) -> Iterator[list[Generation]]:
    """``backend.generate``, with budget-forced requests (``thinking_budget`` set) run in two phases. With a
    ``store`` (``Store.put_partial`` / ``partial``), each first phase is kept as it finishes and a resumed run
    starts from the kept ones."""
    plain = [r for r in requests if r.thinking_budget is None]
    forced = [r for r in requests if r.thinking_budget is not None]
    if plain:
        yield from backend.generate(plain)
    if forced:
        if fmt is None:
            from cotbench.errors import ConfigError

            raise ConfigError("budget forcing needs thinking delimiters: drop --thinking none")
        yield from _budget_forced(backend, forced, fmt, cue, store)


def _budget_forced(backend, requests: Sequence[GenerationRequest], fmt: ThinkingFormat,
                   cue: str, store=None) -> Iterator[list[Generation]]:
    # Phase 1: think for at most N tokens; stopping at the closing delimiter (the model closed it itself)
    thought: dict[str, Generation] = store.partial(r.request_id for r in requests) if store is not None else {}
    first = [replace(r, sampling=replace(r.sampling, max_new_tokens=int(r.thinking_budget),
                                         stop=tuple(dict.fromkeys((*r.sampling.stop, fmt.close)))))
             for r in requests if r.request_id not in thought]
    for batch in (backend.generate(first) if first else ()):
        if store is not None:
            store.put_partial(batch)
        thought.update({g.request_id: g for g in batch})
    by_id = {r.request_id: r for r in requests}
    second, bridges, done = [], {}, []
    for rid, g in thought.items():
        request = by_id[rid]
        if g.finish_reason == "stop" and not _closed(g, fmt, backend):
            done.append(g)  # ended (EOS) without a thinking block: an answer already
            continue
        closed_itself = g.finish_reason == "stop"
        bridge = fmt.close if closed_itself else fmt.close + cue  # the model wrote the delimiter, or we force it
        bridges[rid] = (g, "" if closed_itself else bridge, closed_itself)
        second.append(replace(request, prompt=request.prompt + g.text + bridge, thinking_budget=None,
                              sampling=request.sampling))
    if done:
        yield done
    for batch in backend.generate(second):
        merged = []
        for g2 in batch:
            g1, forced_text, closed_itself = bridges[g2.request_id]
            text = g1.text + fmt.close + ("" if closed_itself else cue) + g2.text
            ids = (g1.token_ids + g2.token_ids) if g1.token_ids is not None and g2.token_ids is not None else None
            merged.append(Generation(g2.request_id, text, g1.n_prompt_tokens, g1.n_generated_tokens + g2.n_generated_tokens,
                                     g2.finish_reason, g1.latency_s + g2.latency_s, ids,
                                     n_thinking_tokens=g1.n_generated_tokens))  # a forced delimiter is not generated
        yield merged


def _closed(g: Generation, fmt: ThinkingFormat, backend) -> bool:
    """Whether phase 1 stopped on the closing delimiter (the stop string is cut from the text, not the ids)."""
    if g.token_ids is not None:
        return fmt.close in backend.tokenizer.decode(list(g.token_ids), skip_special_tokens=False)
    return g.finish_reason == "stop"

