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

from cotbench.prompts import PromptConfig
from cotbench.records import Generation, GenerationRequest
from cotbench.thinking import ThinkingFormat

DEFAULT_CUE = "\n\nFinal Answer: "  # s1's cue after the forced end of thinking


@dataclass(frozen=True)
class Point:
    """One point of a sweep axis: the method, its knob (α, or a budget in tokens; None for nothink) and the
    valve strength the model runs at (None: no valve, or the base model)."""

    method: str
    knob: float | None
    alpha: float | None


class Method:
    """What a length-control method does at one point: to the sweep's points, the prompt settings, the
    rendered prompt, the request and the sample key. The default is "nothing"; each method overrides its own
    steps, so the runner calls them all without asking which method it runs. A new method is a subclass
    here and an entry in ``METHODS``."""

    name = ""
    needs_budgets = False  # its points are --budgets
    needs_thinking = False  # it works on a thinking block: refused with --thinking none
    knob_label = "N"

    def points(self, alphas: Sequence[float | None], budgets: Sequence[int], base_alpha: float | None) -> list[Point]:
        """The sweep's points. Baselines run the base model: ``base_alpha`` is 0 with a valve loaded, else None."""
        return [Point(self.name, float(n), base_alpha) for n in budgets]

    def prompt_config(self, config: PromptConfig, point: Point) -> PromptConfig:
        return config

    def prefill(self, prompt: str, fmt: ThinkingFormat | None) -> str:
        return prompt

    def thinking_budget(self, point: Point) -> int | None:
        return None

    def key(self, point: Point, cue: str, fmt: ThinkingFormat | None) -> dict | None:
        """Everything this method adds to a sample's key (keys.sample_key): its name and knob."""
        return {"method": self.name, "knob": point.knob, "cue": None, "forced_by": None}

    def label(self, point: Point) -> str:
        return self.name if point.knob is None else f"{self.name}={point.knob:g}"


class Valve(Method):
    """The valve strength α (``--alphas``): the model runs at θ + α·Δθ; nothing else changes."""

    name, knob_label = "valve", "α"

    def points(self, alphas, budgets, base_alpha):
        return [Point(self.name, a, a) for a in alphas]

    def key(self, point, cue, fmt):
        return None  # α is keyed on its own (keys.sample_key), as before any other method existed

    def label(self, point):
        return "α" if point.knob is None else f"α={point.knob:g}"


class PromptBudget(Method):
    """The prompt asks for fewer than N tokens; the base model."""

    name, needs_budgets = "prompt-budget", True

    def prompt_config(self, config, point):
        return replace(config, token_budget=int(point.knob))


class BudgetForcing(Method):
    """Thinking stops at N tokens (two phases, ``generate``); the base model."""

    name, needs_budgets, needs_thinking = "budget-forcing", True, True

    def thinking_budget(self, point):
        return int(point.knob)

    def key(self, point, cue, fmt):
        # no engine's own budget; phase 1 stops at the closing delimiter, so the format changes the output too
        return {"method": self.name, "knob": point.knob, "cue": cue, "forced_by": "cotbench",
                "thinking": fmt.describe() if fmt else None}


class NoThink(Method):
    """An empty thinking block prefilled after the prompt; the base model."""

    name, needs_thinking = "nothink", True

    def points(self, alphas, budgets, base_alpha):
        return [Point(self.name, None, base_alpha)]

    def prefill(self, prompt, fmt):
        return nothink_prefill(prompt, fmt)


METHODS: dict[str, Method] = {m.name: m for m in (Valve(), PromptBudget(), BudgetForcing(), NoThink())}


def points(method: str, alphas: Sequence[float | None], budgets: Sequence[int], base_alpha: float | None = None) -> list[Point]:
    return METHODS[method].points(alphas, budgets, base_alpha)


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

