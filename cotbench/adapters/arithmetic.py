"""The embedded task: seeded multi-step arithmetic word problems with exact integer answers.

Needs no files, so ``cotbench run`` works on a fresh offline machine. ``difficulty`` is the number of
operations after the starting amount; the same (seed, difficulty, index) always gives the same problem.
Difficulty 1 (the default) is one addition of two single-digit numbers: hard enough that the embedded
SmolLM2-135M gets only about one in five right when it reasons at length, easy enough that a shorter chain
does better (README: the default run). Subtraction was left out of it: the model got none of 11 right at any α.
Difficulty 2 and up mix in multiplication and division, with amounts up to 40.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from cotbench.adapters.base import DataOptions
from cotbench.errors import ConfigError
from cotbench.records import Problem

_NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam")
_ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards")
_CONTAINERS = ("bags", "boxes", "packs", "jars")


def _step(rng: random.Random, total: int, item: str, who: str, simple: bool = False) -> tuple[str, str, int]:
    """One operation: (sentence, worked line, new total). Totals stay non-negative integers. ``simple``: an
    addition of a single-digit number."""
    if simple:
        kind = "add"
    else:
        kind = rng.choice(("add", "sub", "packs", "double", "share") if total > 2 else ("add", "packs"))
    if kind == "add":
        k = rng.randint(2, 9 if simple else 30)
        return f"Then {who} finds {k} more {item}.", f"{total} + {k} = {total + k}", total + k
    if kind == "sub":
        k = rng.randint(2, total - 1)
        return f"Then {who} gives away {k} {item}.", f"{total} - {k} = {total - k}", total - k
    if kind == "packs":
        n, m = rng.randint(2, 6), rng.randint(2, 12)
        box = rng.choice(_CONTAINERS)
        return (f"Then {who} buys {n} {box} with {m} {item} in each.",
                f"{n} × {m} = {n * m}, and {total} + {n * m} = {total + n * m}", total + n * m)
    if kind == "double":
        return f"Then the number of {item} {who} has doubles.", f"{total} × 2 = {total * 2}", total * 2
    divisors = [d for d in range(2, 7) if total % d == 0]
    if not divisors:
        return _step(rng, total, item, who) if total > 1 else ("", "", total)
    d = rng.choice(divisors)
    return (f"Then {who} splits the {item} equally among {d} friends and keeps one share.",
            f"{total} ÷ {d} = {total // d}", total // d)


def make_problem(seed: int, difficulty: int, index: int) -> tuple[Problem, str]:
    """(problem, worked solution ending in \\boxed{answer})."""
    rng = random.Random(f"{seed}:{difficulty}:{index}")
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    simple = difficulty == 1
    total = rng.randint(2, 9) if simple else rng.randint(5, 40)
    sentences, lines = [f"{name} has {total} {item}."], []
    for _ in range(difficulty):
        sentence, line, total = _step(rng, total, item, name, simple)
        sentences.append(sentence)
        lines.append(line)
    question = " ".join(s for s in sentences if s) + f" How many {item} does {name} have now?"
    solution = "\n".join(lines) + f"\nThe final answer is \\boxed{{{total}}}."
    problem = Problem("arithmetic", f"s{seed}-d{difficulty}-{index}", question, str(total),
                      {"difficulty": difficulty, "seed": seed})
    return problem, solution


@dataclass(frozen=True)
class ArithmeticTask:
    name: str = "arithmetic"
    # The standard "Please reason step by step" instruction drives SmolLM2-135M into 300-token rambles that get
    # about one in ten of these right (floor); this one leaves it at about one in four at α = 0.
    instruction: str = "Think it through, then put your final answer within \\boxed{}."
    # Its own generation cap (used unless the run gives one). Answers take 20-40 tokens at the valve's best α;
    # what the base model has not finished by 256 it rambles on to any cap (at 512: 28 of 250 rows, over half
    # the default job's decode work, one of them right), so the default job stays a few minutes on a CPU
    # without bf16 matmuls.
    max_new_tokens: int = 256

    def load(self, options: DataOptions, limit: int | None = None) -> list[Problem]:
        if options.difficulty < 1 or options.n_generated < 1:
            raise ConfigError(f"arithmetic task needs difficulty >= 1 and n >= 1 (got {options.difficulty}, "
                              f"{options.n_generated}).")
        n = options.n_generated if limit is None else min(limit, options.n_generated)
        return [make_problem(options.seed, options.difficulty, i)[0] for i in range(n)]

    def few_shot(self, k: int, options: DataOptions) -> list[tuple[str, str]]:
        # A different seed stream, so shots never repeat an evaluated problem.
        shots = [make_problem(options.seed + 1_000_003, options.difficulty, i) for i in range(k)]
        return [(p.question, solution) for p, solution in shots]
