"""A real model off the floor (opt-in): Qwen2.5-Coder-0.5B-Instruct with the valve trained on it.

Skipped unless ``COTBENCH_REAL_MODEL`` names the GGUF that ``../shared/models/fetch_qwen2.5_coder_0.5b.sh``
assembles (never fetched by the tests or CI). The valve is ``COTBENCH_REAL_VALVE``, else the one committed in
``valves/``, rebuilt by the commands in its README. fp32 greedy on the first 8 GSM8K test problems."""
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.realmodel

COMMITTED_VALVE = Path(__file__).resolve().parent.parent / "valves" / "qwen2.5-coder-0.5b-gsm8k"


@pytest.fixture(scope="module")
def real_model():
    path = os.environ.get("COTBENCH_REAL_MODEL")
    if not path:
        pytest.skip("COTBENCH_REAL_MODEL is not set (the Qwen2.5-Coder-0.5B-Instruct GGUF)")
    if not Path(path).is_file():
        pytest.fail(f"COTBENCH_REAL_MODEL={path} is not a file")
    return path


@pytest.fixture(scope="module")
def real_valve():
    valve = Path(os.environ.get("COTBENCH_REAL_VALVE") or COMMITTED_VALVE)
    if not (valve / "adapter_config.json").is_file():
        pytest.fail(f"no valve at {valve}: set COTBENCH_REAL_VALVE or rebuild it ({COMMITTED_VALVE}/README.md)")
    return valve


def test_the_valve_shortens_a_real_model_that_solves_gsm8k(real_model, real_valve, tmp_path):
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    config = RunConfig(model=real_model, valve=str(real_valve), alphas=(0.0, 1.0), tasks=("gsm8k",), limit=8,
                       max_new_tokens=512, dtype="float32", out=str(tmp_path / "run"))
    summary = run_sweep(config, progress=False).summary.set_index("alpha")
    assert summary["complete"].all() and (summary["n"] == 8).all()
    assert summary.loc[0.0, "accuracy_pct"] >= 100 / 8, summary.loc[0.0]  # at least 1 of 8 correct
    assert summary.loc[1.0, "mean_tokens"] < summary.loc[0.0, "mean_tokens"], summary[["mean_tokens"]]
