"""Agreement of cotbench's grader and of math-verify called with its defaults on the grading table and on
the stored responses of every committed report.

    python benchmarks/grader_agreement.py        # writes benchmarks/results/grader_agreement.{json,md}

Also times the slowest verdict of each family of the table, grading throughput (verdicts per second) on
GSM8K- and MATH-style answers, in one process and through the grading pool, and the slowest verdict on the
hostile inputs of tests/grading/test_deadlines.py. Speed is measured here, never in a timed test.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

sys.path.insert(0, str(HERE))
from grading.cases import all_cases  # noqa: E402
from grading.test_deadlines import GOLDS, HOSTILE  # noqa: E402

from cotbench.grading import grade, grader_id  # noqa: E402
from cotbench.grading.identity import library_versions  # noqa: E402
from cotbench.grading.pool import GradingPool  # noqa: E402
from machine import machine_record  # noqa: E402


def math_verify_default(gold: str, response: str) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(gold), parse(response)))
    except Exception:
        return False


def grading_throughput() -> dict[str, float]:
    """Verdicts per second on GSM8K-style (plain numbers), MATH-style (fractions) and symbolic answers, in
    this process (symbolic part in the helper) and through a one-worker grading pool."""
    gsm = [("The answer is \\boxed{%d}." % i, str(i)) for i in range(300)]
    maths = [("so $\\boxed{\\frac{%d}{%d}}$" % (i, i + 1), "\\frac{%d}{%d}" % (2 * i, 2 * i + 2)) for i in range(1, 101)]
    symbolic = [("\\boxed{(x+%d)^2}" % i, "x^2+%dx+%d" % (2 * i, i * i)) for i in range(1, 51)]
    grade("\\boxed{x+1}", "1+x")  # start the helper outside the timing
    throughput = {}
    for name, pairs in (("gsm8k_style", gsm), ("math_style", maths), ("symbolic", symbolic)):
        started = time.perf_counter()
        for response, gold in pairs:
            grade(response, gold)
        throughput[f"{name}_in_process"] = round(len(pairs) / (time.perf_counter() - started), 1)
        pool = GradingPool("math", 5.0, workers=1)
        pool.ready(0.0)
        pool._workers[0].ensure_ready()  # boot outside the timing
        started = time.perf_counter()
        for i, (response, gold) in enumerate(pairs):
            pool.submit(str(i), response, gold)
        pool.finish()
        throughput[f"{name}_pool_1_worker"] = round(len(pairs) / (time.perf_counter() - started), 1)
        pool.close()
    return throughput


def slowest_hostile(timeout_s: float = 5.0) -> dict:
    worst, worst_case = 0.0, None
    for name, text in HOSTILE.items():
        for response, gold in [(text, g) for g in GOLDS] + [("\\boxed{3}", text)]:
            started = time.perf_counter()
            grade(response, gold, timeout_s=timeout_s)
            took = time.perf_counter() - started
            if took > worst:
                worst, worst_case = took, name
    return {"timeout_s": timeout_s, "slowest_verdict_s": round(worst, 3), "slowest_input": worst_case,
            "n_inputs": len(HOSTILE) * (len(GOLDS) + 1)}


def committed_reports() -> dict:
    """Each stored response of every committed report (reports/*/samples.jsonl[.gz]), graded by cotbench under
    the report's protocol and by math-verify with its defaults: agreement, and every disagreement."""
    import yaml

    out = {}
    from cotbench.report.samples_file import read_records, samples_path

    for report in sorted(p for p in (HERE.parent / "reports").iterdir() if samples_path(p) is not None):
        config = yaml.safe_load((report / "config.yaml").read_text()) or {}
        protocol = config.get("protocol", "math")
        rows = read_records(report)
        listed, agree = [], 0
        for r in rows:
            truncated = r["finish_reason"] == "length"
            verdict = grade(r["response"], r["gold"], protocol, truncated=truncated)
            theirs = math_verify_default(r["gold"], r["response"])
            if verdict.status in ("timeout", "error"):
                listed.append({"problem_id": r["problem_id"], "alpha": r["alpha"], "gold": r["gold"],
                               "cotbench": verdict.status, "math_verify_default": theirs, "reason": verdict.reason})
                continue
            if verdict.correct == theirs:
                agree += 1
                continue
            listed.append({"problem_id": r["problem_id"], "alpha": r["alpha"], "gold": r["gold"],
                           "extracted": verdict.extracted, "cotbench": verdict.correct, "math_verify_default": theirs,
                           "truncated": truncated, "reason": verdict.reason, "response_end": r["response"][-160:]})
        out[report.name] = {"protocol": protocol, "n": len(rows), "agree": agree,
                            "agreement_pct": round(100 * agree / max(1, len(rows)), 1), "disagreements": listed}
    return out


def main() -> None:
    cases = all_cases()
    per_category = defaultdict(lambda: [0, 0, 0])  # n, ours right, math-verify right
    slowest = defaultdict(float)  # per family: the slowest verdict, in seconds
    disagreements = []
    grade("\\boxed{x+1}", "1+x")  # the helper's first start is no verdict's time
    for category, gold, response, expected in cases:
        started = time.perf_counter()
        ours = grade(response, gold).correct
        slowest[category] = max(slowest[category], time.perf_counter() - started)
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

    reports = committed_reports()
    throughput = grading_throughput()
    hostile = slowest_hostile()

    result = {
        "machine": machine_record(),
        "grader": grader_id("math"),
        "libraries": library_versions(),
        "n_cases": n,
        "cotbench_agreement_pct": round(100 * ours_total / n, 1),
        "math_verify_default_agreement_pct": round(100 * theirs_total / n, 1),
        "per_category": {c: {"n": r[0], "cotbench": r[1], "math_verify_default": r[2],
                             "slowest_verdict_s": round(slowest[c], 3)} for c, r in per_category.items()},
        "committed_reports": reports,
        "verdicts_per_second": throughput,
        "hostile_inputs": hostile,
        "cotbench_disagreements": disagreements,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "grader_agreement.json").write_text(json.dumps(result, indent=2))
    lines = ["# Grader agreement", "", f"{n} cases from `tests/grading/cases.py`.", "",
             "| category | n | cotbench | math-verify defaults | slowest verdict (s) |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {r[0]} | {r[1]} | {r[2]} | {slowest[c]:.3f} |" for c, r in per_category.items()]
    lines += [f"| **all** | {n} | {result['cotbench_agreement_pct']} % | {result['math_verify_default_agreement_pct']} % "
              f"| {max(slowest.values()):.3f} |", "",
              "Committed reports: each stored response graded by cotbench (the report's protocol, cut responses "
              "flagged) and by math-verify's defaults.", "",
              "| report | protocol | responses | agree | agreement % |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['protocol']} | {r['n']} | {r['agree']} | {r['agreement_pct']} |" for name, r in reports.items()]
    for name, r in reports.items():
        if r["disagreements"]:
            lines += ["", f"Disagreements in {name} (cotbench / math-verify defaults; gold; what cotbench extracted, why):", ""]
            lines += [f"- {d['problem_id']} α={d['alpha']}: {d['cotbench']} / {d['math_verify_default']}; gold "
                      f"`{d['gold']}`; `{d.get('extracted')}`: {d['reason']}" for d in r["disagreements"]]
    lines += ["",
              "", f"Grader `{result['grader']}` ({', '.join(f'{k} {v}' for k, v in result['libraries'].items())}); "
              f"CPU: {result['machine']['cpu']} ({result['machine']['kind']}), {result['machine']['date']}, "
              f"commit {result['machine']['commit']}.", "",
              f"Verdicts per second: {throughput}.", "",
              f"Hostile inputs ({hostile['n_inputs']} verdicts, timeout {hostile['timeout_s']} s): slowest verdict "
              f"{hostile['slowest_verdict_s']} s ({hostile['slowest_input']})."]
    (out / "grader_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
