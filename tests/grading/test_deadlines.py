"""Every verdict returns in time and never raises; the pool never invents a timeout; workers that hang or die
are replaced and their verdict retried."""
import os
import random
import subprocess
import sys
import time

import pytest

from cotbench.grading import grade
from cotbench.grading._worker import Worker, WorkerDied
from cotbench.grading.pool import GradingPool
from cotbench.grading.deadline import GradingTimeout
from cotbench.grading.sandbox import HELPER

TIMEOUT_S = 2.0
_rng = random.Random(0)
_DIGITS = "".join(_rng.choice("0123456789") for _ in range(100_000))

# Inputs that made graders hang, raise or crawl: exponent towers, huge factorials and exponents, 100k-digit
# numbers, 200 kB to 1 MB responses, deep nesting, unbalanced delimiters, null bytes.
HOSTILE = {
    "tower 5^5^5^5": "\\boxed{5^5^5^5}",
    "tower 10^{10^{10}}": "\\boxed{10^{10^{10}}}",
    "tower 9^9^9^9": "$9^9^9^9$",
    "plain tower": "2**2**2**2**2**2**2",
    "factorial of a power": "\\boxed{(10^{10})!}",
    "factorial of a million": "\\boxed{1000000!}",
    "huge exponent": "\\boxed{2^{1000000}}",
    "tiny power": "\\boxed{10^{-10^{10}}}",
    "e-notation": "1e100000000",
    "times-ten notation": "\\boxed{1.5 \\times 10^{999999999}}",
    "100k digits": _DIGITS,
    "4,301-digit integer": "\\boxed{" + "7" * 4301 + "}",
    "200 kB prose": "The value is 3 and then 4. " * 8000,
    "200 kB letters and digits": "1a" * 100_000,
    "1 MB of mixed maths": ("\\boxed{x^{2}} $\\frac{1}{2}$ answer: 7 \\text{cm} 1,000 " * 20000)[:1_000_000],
    "deep braces": "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "deep parentheses": "(" * 10000 + "1" + ")" * 10000,
    "deep fractions": "\\frac{" * 3000 + "1" + "}{2}" * 3000,
    "unbalanced boxes": "\\boxed{" * 50000,
    "unbalanced dollars": "$" * 200_000,
    "unbalanced display math": "\\[" * 100_000,
    "unbalanced inline math": "\\(" * 100_000 + "x",
    "unbalanced text commands": "\\text{" * 50000,
    "null bytes": "\x00" * 1000 + "\\boxed{\x005}",
    "backslashes": "\\" * 300_000,
    "commas": "1," * 200_000,
    "answer markers": "The answer is " * 40000,
    "carets": "2^" * 100_000 + "2",
    "equals chain": "x" + " = 1" * 100_000,
    "plus-minus chain": "\\pm 1" * 50000,
    "or chain": " or ".join(["1"] * 50000),
    "percent signs": "%" * 200_000,
    "degree marks": "^\\circ" * 100_000,
    "units": "5 " + "cm " * 100_000,
    "wide matrix": "\\boxed{\\begin{pmatrix}" + "1 & " * 5000 + "1\\end{pmatrix}}",
}
GOLDS = ["3", "\\frac{1}{2}", "x^2 + 1"]


@pytest.fixture(scope="module", autouse=True)
def warm_helper():
    grade("\\boxed{x^2+1}", "1+x^2")  # the helper's first start (~1 s) is not part of any verdict's time


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_returns_in_time_and_never_raises(name):
    text = HOSTILE[name]
    for response, gold in [(text, g) for g in GOLDS] + [("\\boxed{3}", text)]:
        started = time.monotonic()
        verdict = grade(response, gold, timeout_s=TIMEOUT_S)
        took = time.monotonic() - started
        assert took <= TIMEOUT_S + 1.0, (name, gold[:20], took)
        assert verdict.status in ("incorrect", "timeout", "correct"), verdict
        if gold != text:
            assert not verdict.correct, (name, verdict)  # none of these is an answer to a small gold


def test_refused_work_still_compares_as_text():
    assert grade("\\boxed{10^{10^{10}}}", "10^{10^{10}}").correct
    assert not grade("\\boxed{10^{10^{10}}}", "10^{10^{11}}").correct
    assert grade("\\boxed{" + "7" * 5000 + "}", "7" * 5000).correct
    assert not grade("\\boxed{" + "7" * 5000 + "}", "7" * 4999 + "8").correct


def test_helper_kills_work_stuck_in_c_code():
    started = time.monotonic()
    with pytest.raises(GradingTimeout):
        HELPER.run(pow, (10, 10 ** 9), 1.0)  # one C call: SIGALRM cannot interrupt it, the kill does
    assert time.monotonic() - started < 1.0 + 1.5
    assert HELPER.run(pow, (2, 10), 1.0) == 1024  # and a fresh helper answers the next check


def test_helper_times_out_python_work_softly():
    with pytest.raises(GradingTimeout):
        HELPER.run(time.sleep, (30,), 0.5)


def test_worker_that_dies_is_reported():
    worker = Worker()
    worker.ensure_ready()
    worker.submit(os._exit, (3,), 5.0)
    with pytest.raises(WorkerDied):
        worker.collect(30)
    assert not worker.alive()


def test_grade_in_a_script_without_a_main_guard(tmp_path):
    """Workers never re-run the caller's script (multiprocessing's spawn would, and fail)."""
    script = tmp_path / "unguarded.py"
    script.write_text("import cotbench\nprint(cotbench.grade('\\\\boxed{(x+1)^2}', 'x^2+2x+1').correct)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]


def _burn(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time\nt=time.time()\nwhile time.time()-t<{seconds}: pass"])


def test_a_long_queue_on_a_loaded_machine_stores_no_false_timeouts():
    """3,000 verdicts queued at once behind one worker with a 0.5 s deadline, while two other processes keep
    both cores busy: each deadline starts when the worker starts that verdict, so none times out."""
    burners = [_burn(120), _burn(120)]
    pool = GradingPool("math", timeout_s=0.5, workers=1)
    try:
        started = time.monotonic()
        for i in range(3000):
            if i % 5 == 0:  # symbolic work: tens of milliseconds each, so the queue takes many deadlines
                response, gold = f"\\boxed{{(x+{i})^2}}", f"x^2+{2 * i}x+{i * i}"
            else:
                response, gold = f"so the answer is $\\frac{{{i}}}{{{i + 1}}}$", f"\\frac{{{2 * i}}}{{{2 * i + 2}}}"
            pool.submit(str(i), response, gold)
        verdicts = dict(pool.finish())
        took = time.monotonic() - started
    finally:
        pool.close()
        for b in burners:
            b.kill()
    assert len(verdicts) == 3000 and took > 4 * 0.5  # the queue outlasted many deadlines
    statuses = {v.status for v in verdicts.values()}
    assert statuses == {"correct"}, [v for v in verdicts.values() if v.status != "correct"][:3]


def test_pool_retries_a_verdict_whose_worker_was_killed():
    pool = GradingPool("math", timeout_s=5.0, workers=1)
    try:
        pool.submit("a", "\\boxed{(x+1)^2}", "x^2+2x+1")
        worker = pool._workers[0]
        deadline = time.monotonic() + 60
        while not worker.busy and time.monotonic() < deadline:
            pool.ready(0.05)
        worker.proc.kill()  # as if the OS killed it mid-verdict
        verdicts = dict(pool.finish())
    finally:
        pool.close()
    assert verdicts["a"].correct and pool.n_retried == 1


def test_pool_stores_a_timeout_after_a_second_try():
    # sympy needs well over 10 ms for this pair, so both tries time out: stored as timeout, not as wrong
    pool = GradingPool("math", timeout_s=0.01, workers=1)
    try:
        pool.submit("slow", "\\boxed{\\sin(x)^{40}+\\cos(x)^{40}}", "\\cos(x)^{40}+\\sin(x)^{41}")
        verdict = dict(pool.finish())["slow"]
    finally:
        pool.close()
    assert verdict.status == "timeout" and not verdict.correct and not verdict.judged
    assert "second try" in verdict.reason and pool.n_retried == 1


_POISON = '''
import os

import math_verify
import sympy


def _poisoned(real):
    def check(*args, **kwargs):  # fails in the first worker process that calls it, and only there
        with open(os.environ["COTBENCH_TEST_POISON"], "a+") as handle:
            handle.seek(0)
            first = handle.read().strip() or str(os.getpid())
            handle.write("" if handle.tell() else first)
        if first == str(os.getpid()):
            raise RecursionError("maximum recursion depth exceeded while calling a Python object")
        return real(*args, **kwargs)
    return check


sympy.simplify = _poisoned(sympy.simplify)
math_verify.verify = _poisoned(math_verify.verify)
'''


def test_pool_retries_a_grader_error_in_a_fresh_worker(tmp_path, monkeypatch):
    """A grader fault (here a RecursionError in sympy and math-verify, in one worker process only) is an
    error verdict, retried once in a new worker; the same worker would fail again."""
    (tmp_path / "sitecustomize.py").write_text(_POISON)  # imported at start-up by each worker interpreter
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("COTBENCH_TEST_POISON", str(tmp_path / "poisoned_pid"))
    pool = GradingPool("math", timeout_s=5.0, workers=1)
    try:
        pool.submit("a", "\\boxed{x^2+2x+1}", "(x+1)^2")
        verdict = dict(pool.finish())["a"]
    finally:
        pool.close()
    assert (tmp_path / "poisoned_pid").read_text().strip()  # the fault happened
    assert verdict.correct and verdict.status == "correct" and pool.n_retried == 1
