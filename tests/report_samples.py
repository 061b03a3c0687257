"""Synthetic samples for the report tests: a sweep whose verdicts and lengths are set by hand."""
from cotbench.records import Generation, Grade, Problem, Sample

MODEL, VALVE = "tiny (test)", "v@000000000000"


def sample(alpha, pid, correct, tokens, *, graded=True, status="", truncated=False, task="arithmetic"):
    problem = Problem(task, str(pid), f"What is {pid} + 1?", str(pid + 1))
    text = f"so the answer is \\boxed{{{pid + 1 if correct else pid}}}"
    generation = Generation(f"{alpha}-{pid}", text, 20, tokens, "length" if truncated else "stop", 0.1)
    grade = None
    if graded:
        grade = Grade(bool(correct), str(pid + 1 if correct else pid), str(pid + 1), "math", "test", status=status)
    return Sample(f"k-{task}-{alpha}-{pid}", MODEL, VALVE, alpha, problem, "prompt", generation, grade,
                  method="valve", knob=alpha)


def sweep(n=30, ungraded_at=None, n_ungraded=0, timeout_at=None):
    """α = 0: long chains, 1 in 3 right; α = 0.5: 4× shorter, 2 in 3 right; α = 1: short, 1 in 10 right."""
    samples = []
    for alpha, right, tokens in ((0.0, lambda i: i % 3 == 0, lambda i: 400 + 7 * i),
                                 (0.5, lambda i: i % 3 != 2, lambda i: 100 + 3 * i),
                                 (1.0, lambda i: i % 10 == 0, lambda i: 30 + i)):
        for i in range(n):
            graded = not (alpha == ungraded_at and i < n_ungraded)
            status = "timeout" if alpha == timeout_at and i == n - 1 else ""
            samples.append(sample(alpha, i, right(i) and status != "timeout", tokens(i), graded=graded, status=status,
                                  truncated=alpha == 0.0 and i % 5 == 0))
    return samples
