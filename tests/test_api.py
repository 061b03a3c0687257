"""The stable Python surface: cotbench.grade, cotbench.acu, cotbench.run_sweep, RunConfig."""
import cotbench


def test_public_api():
    verdict = cotbench.grade("... so the answer is \\boxed{\\frac{1}{2}}", "0.5", protocol="math")
    assert verdict.correct is True and verdict.extracted == "\\frac{1}{2}"
    assert cotbench.grade("\\boxed{3}", "4", protocol="paper").correct is False
    assert round(cotbench.acu(95.1, 32, 741.1), 2) == 0.40
    assert set(cotbench.__all__) >= {"grade", "acu", "run_sweep", "RunConfig", "Problem", "Sample", "CotbenchError"}
