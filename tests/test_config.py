import pytest

from cotbench.config import DEFAULT_ALPHAS, RunConfig, build_config
from cotbench.errors import ConfigError
from cotbench.valve.default import default_valve


def test_default_run_uses_the_shipped_valve_for_the_embedded_model():
    shipped = default_valve()
    assert shipped is not None, "the default valve must ship inside the package"
    cfg = RunConfig()
    assert cfg.valve == str(shipped) and cfg.sweep_alphas() == DEFAULT_ALPHAS
    assert RunConfig(valve="none").valve is None and RunConfig(valve="none").sweep_alphas() == (None,)
    assert RunConfig(model="some/other-model").valve is None  # the default valve only fits SmolLM2


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig(valve="v", alphas="0,abc,nan", tasks="gsm8k,gsm9k", limit=0, temperature=-1)
    text = str(err.value)
    for part in ("alpha 'abc' is not a number", "alpha 'nan' is not a finite number", "limit must be",
                 "Unknown task 'gsm9k'", "temperature must be"):
        assert part in text


@pytest.mark.parametrize("top_p", [0, 1.5, -0.1])
def test_top_p_outside_zero_to_one_is_refused_before_anything_loads(top_p):
    with pytest.raises(ConfigError, match=r"top_p must be in \(0, 1\]"):
        RunConfig(top_p=top_p, temperature=0.7)


def test_config_file_values_and_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('tasks = ["gsm8k", "math500"]\nlimit = 5\nalphas = [0, 0.5]\nvalve = "v"\n')
    cfg = build_config(path, limit=7)
    assert cfg.tasks == ("gsm8k", "math500") and cfg.limit == 7 and cfg.alphas == (0.0, 0.5)


def test_each_default_is_defined_once():
    """RunConfig's data, prompt and sampling defaults are the records' own, so every path (a sweep, the
    lm-eval tasks, the Python API) builds the same embedded task and prompt."""
    from dataclasses import fields

    from cotbench.adapters import TASKS, DataOptions
    from cotbench.prompts import PromptConfig
    from cotbench.records import SamplingSettings

    config = RunConfig()
    for record in (DataOptions(), PromptConfig(), SamplingSettings()):
        for f in fields(record):
            if hasattr(config, f.name) and f.name not in ("data_dir", "data_file", "instruction", "max_new_tokens"):
                assert getattr(config, f.name) == getattr(record, f.name), f.name
    # The instruction is left to the task unless the run gives one; without a task's own, the prompt default.
    assert config.instruction is None and config.prompt_config() == PromptConfig()
    assert config.prompt_config("task's own").instruction == "task's own"
    assert RunConfig(instruction="mine").prompt_config("task's own").instruction == "mine"
    assert TASKS.get("arithmetic").load(DataOptions(), None) == TASKS.get("arithmetic").load(config.data_options(), None)


def test_the_generation_cap_is_the_tasks_own_unless_the_run_gives_one():
    """A task may carry its own max_new_tokens (the embedded arithmetic task does); a run takes the largest of
    its tasks' caps, a task without one counting as SamplingSettings' default, and a cap given always wins.
    Files record the number used, so a saved config.yaml reruns the same sweep whatever the defaults become."""
    from cotbench.adapters import TASKS
    from cotbench.records import SamplingSettings

    own, general = TASKS.get("arithmetic").max_new_tokens, SamplingSettings().max_new_tokens
    assert own < general
    assert RunConfig().max_new_tokens is None and RunConfig().sampling().max_new_tokens == own
    assert RunConfig(tasks=("gsm8k",)).sampling().max_new_tokens == general
    assert RunConfig(tasks=("arithmetic", "gsm8k")).sampling().max_new_tokens == general
    assert RunConfig(max_new_tokens=64).sampling().max_new_tokens == 64
    assert RunConfig().to_dict()["max_new_tokens"] == own and RunConfig().identity()["max_new_tokens"] == own
    assert RunConfig(tasks=("gsm8k",)).identity()["max_new_tokens"] == general
