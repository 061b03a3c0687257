"""cotbench: accuracy, generated tokens and ACU of models as a CoT-Valve valve is turned (θ + α·Δθ).

Stable Python API::

    import cotbench
    cotbench.grade("... so \\\\boxed{\\\\frac12}", "0.5").correct      # True
    cotbench.acu(95.1, 32, 741.1)                                  # 0.401...
    cotbench.run_sweep(cotbench.RunConfig(tasks=("gsm8k",), limit=20))
"""
from cotbench.config import RunConfig
from cotbench.errors import CotbenchError
from cotbench.grading import grade
from cotbench.metrics import acu
from cotbench.records import Generation, GenerationRequest, Grade, Problem, Sample, SamplingSettings


def run_sweep(config: RunConfig, **kwargs):
    """Run a sweep (see ``cotbench.runner.run_sweep``); imported lazily so ``grade``/``acu`` stay light."""
    from cotbench.runner import run_sweep as _run_sweep

    return _run_sweep(config, **kwargs)


__all__ = ["grade", "acu", "run_sweep", "RunConfig", "Problem", "Sample", "Grade", "Generation",
           "GenerationRequest", "SamplingSettings", "CotbenchError"]
