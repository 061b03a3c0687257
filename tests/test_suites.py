"""Named suites (--suite): fixed settings, one run directory per entry, a table beside the paper's rows."""
import subprocess
import sys

import pandas as pd
import pytest

from cotbench.errors import ConfigError
from cotbench.suites import SUITES, entry_configs, run_suite, suite_table


def test_a_suite_fixes_its_settings_and_refuses_a_flag_that_would_change_them(tmp_path):
    configs = entry_configs("cotvalve", {"model": "m", "valve": "v"}, tmp_path)
    assert [c.tasks for c in configs] == [("gsm8k",), ("aime24",)]
    assert all(c.protocol == "paper" and c.limit is None and c.samples == 1 for c in configs)
    assert [c.max_new_tokens for c in configs] == [2048, 16384]
    assert [c.out for c in configs] == [str(tmp_path / "gsm8k"), str(tmp_path / "aime24")]
    with pytest.raises(ConfigError, match="--suite cotvalve fixes limit, max_new_tokens: drop --limit, --max-new-tokens"):
        entry_configs("cotvalve", {"model": "m", "valve": "v", "limit": 5, "max_new_tokens": 9}, tmp_path)
    with pytest.raises(ConfigError, match="suite must be one of cotvalve, quick"):
        entry_configs("nope", {}, tmp_path)
    assert "MATH-500" in SUITES["cotvalve"].description  # said to be absent, not silently left out


def test_the_table_sets_published_rows_beside_the_same_base_model():
    summary = pd.DataFrame([{"task": "gsm8k", "model": "QwQ-32B-Preview", "valve": "v", "alpha": 0.0, "method": "valve",
                             "knob": 0.0, "n_graded": 1319, "samples_per_problem": 1, "accuracy_pct": 95.0,
                             "accuracy_ci_low": 93.7, "accuracy_ci_high": 96.1, "mean_tokens": 740.0, "acu": 0.4}])
    table = suite_table("cotvalve", {"gsm8k": summary}, "Qwen/QwQ-32B-Preview")
    published = table[table["entry"] == "published"]
    assert len(published) and set(published["task"]) == {"gsm8k"} and (published["model"] == "QwQ-32B-Preview").all()
    assert table.iloc[0]["point"] == "α=0" and table.iloc[0]["source"].startswith("this run")
    other = suite_table("cotvalve", {"gsm8k": summary}, "smollm2")
    assert not (other["entry"] == "published").any()


def test_a_suite_runs_every_entry_and_writes_its_table(tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "quick"
    table = run_suite("quick", {"model": str(tiny_model), "valve": str(tiny_valve), "dtype": "float32",
                                "grade_workers": 0}, out, progress=False)
    assert set(table["entry"]) == {"arithmetic", "arithmetic-k2"}
    assert sorted(table[table["entry"] == "arithmetic"]["point"]) == ["α=0", "α=0.5", "α=1"]
    assert set(table[table["entry"] == "arithmetic-k2"]["samples_per_problem"]) == {2}
    for name in ("suite.md", "suite.csv", "arithmetic/report.md", "arithmetic-k2/pass_at_k.csv"):
        assert (out / name).is_file(), name
    assert "No published rows for this model" in (out / "suite.md").read_text()


def test_the_cli_runs_a_suite_and_refuses_a_fixed_flag(tiny_model, tiny_valve, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cotbench", "run", "--suite", "quick", "--model", str(tiny_model),
                               "--valve", str(tiny_valve), "--dtype", "float32", *args], capture_output=True, text=True)

    refused = cli("--limit", "3", "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "fixes limit" in refused.stderr and not (tmp_path / "x").exists()
    done = cli("--out", str(tmp_path / "q"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "suite quick" in done.stdout and (tmp_path / "q" / "suite.md").is_file()
