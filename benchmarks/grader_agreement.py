"""Agreement of cotbench's grader and of math-verify called with its defaults on the grading table.

    python benchmarks/grader_agreement.py        # writes benchmarks/results/grader_agreement.{json,md}

Also times grading throughput (verdicts per second) on GSM8K- and MATH-style answers.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from grading.cases import all_cases  # noqa: E402

from cotbench.grading import grade  # noqa: E402


def math_verify_default(gold: str, response: str) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(gold), parse(response)))
    except Exception:
        return False


def grading_throughput() -> dict[str, float]:
    """Verdicts per second in one process on GSM8K-style (plain numbers) and MATH-style (fractions) answers."""
    gsm = [("The answer is \\boxed{%d}." % i, str(i)) for i in range(300)]
    maths = [("so $\\boxed{\\frac{%d}{%d}}$" % (i, i + 1), "\\frac{%d}{%d}" % (2 * i, 2 * i + 2)) for i in range(1, 101)]
    throughput = {}
    for name, pairs in (("gsm8k_style", gsm), ("math_style", maths)):
        started = time.perf_counter()
        for response, gold in pairs:
            grade(response, gold)
        throughput[name] = round(len(pairs) / (time.perf_counter() - started), 1)
    return throughput


def main() -> None:
    cases = all_cases()
    per_category = defaultdict(lambda: [0, 0, 0])  # n, ours right, math-verify right
    disagreements = []
    for category, gold, response, expected in cases:
        ours = grade(response, gold).correct
        theirs = math_verify_default(gold, response)
        row = per_category[category]
        row[0] += 1
        row[1] += ours == expected
        row[2] += theirs == expected
        if ours != expected:
            disagreements.append({"category": category, "gold": gold, "response": response[:200], "expected": expected})
    n = len(cases)
    ours_total = sum(r[1] for r in per_category.values())
    theirs_total = sum(r[2] for r in per_category.values())

    throughput = grading_throughput()

    result = {
        "n_cases": n,
        "cotbench_agreement_pct": round(100 * ours_total / n, 1),
        "math_verify_default_agreement_pct": round(100 * theirs_total / n, 1),
        "per_category": {c: {"n": r[0], "cotbench": r[1], "math_verify_default": r[2]} for c, r in per_category.items()},
        "verdicts_per_second_single_process": throughput,
        "cotbench_disagreements": disagreements,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "grader_agreement.json").write_text(json.dumps(result, indent=2))
    lines = ["# Grader agreement", "", f"{n} cases from `tests/grading/cases.py`.", "",
             "| category | n | cotbench | math-verify defaults |", "|---|---|---|---|"]
    lines += [f"| {c} | {r[0]} | {r[1]} | {r[2]} |" for c, r in per_category.items()]
    lines += [f"| **all** | {n} | {result['cotbench_agreement_pct']} % | {result['math_verify_default_agreement_pct']} % |",
              "", f"Grading throughput, one process: {throughput} verdicts/s."]
    (out / "grader_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
