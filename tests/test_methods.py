"""Training-free length baselines as sweep axes: prompt budget, budget forcing, NoThinking."""
import json

import pandas as pd
import pytest

from cotbench.config import RunConfig
from cotbench.runner import run_sweep


def _config(tiny_model, out, **extra):
    settings = dict(model=str(tiny_model), tasks=("arithmetic",), limit=3, max_new_tokens=8, grade_workers=0,
                    dtype="float32", out=str(out))
    settings.update(extra)
    return RunConfig(**settings)


def _records(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_budget_forcing_thinks_exactly_n_tokens_then_answers_after_the_cue(tiny_model, tmp_path):
    """The tiny model never closes a thinking block, so each budget is forced: exactly N thinking tokens,
    then the delimiter and the cue (prompt, not generated), then the answer."""
    out = run_sweep(_config(tiny_model, tmp_path / "bf", method="budget-forcing", budgets=(3, 6)),
                    progress=False).out_dir
    records = _records(out)
    assert {r["knob"] for r in records} == {3.0, 6.0} and all(r["method"] == "budget-forcing" for r in records)
    for r in records:
        assert r["n_thinking_tokens"] == int(r["knob"])
        assert "</think>\n\nFinal Answer: " in r["response"] and r["thinking_state"] == "closed"
        assert r["n_generated_tokens"] > r["n_thinking_tokens"]  # the answer phase generated more
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["knob"]) == [3.0, 6.0] and list(summary["mean_thinking_tokens"]) == [3.0, 6.0]
    assert (out / "thinking_vs_answer_tokens.png").stat().st_size > 0  # a curve of thinking vs answer tokens


def test_budget_forcing_leaves_a_block_the_model_closed_itself(tiny_model, tmp_path):
    from cotbench.backends import HFBackend
    from cotbench.records import GenerationRequest, SamplingSettings

    backend = HFBackend(str(tiny_model), dtype="float32")
    prompt = "<|user|>How many eggs?</s><|assistant|>"
    [free] = next(backend.generate([GenerationRequest("x", prompt, None, SamplingSettings(max_new_tokens=12))]))
    close = free.text[len(free.text) // 2:][:3]  # a string the model is known to write, made the closing delimiter
    assert close.strip()
    from cotbench import methods
    from cotbench.thinking import ThinkingFormat

    request = GenerationRequest("y", prompt, None, SamplingSettings(max_new_tokens=4), thinking_budget=40)
    [merged] = [g for batch in methods.generate(backend, [request], ThinkingFormat("<think>", close)) for g in batch]
    assert close in merged.text and "Final Answer" not in merged.text  # closed itself: no cue, no forcing
    assert merged.n_thinking_tokens < 40


def test_nothink_prefills_an_empty_block_and_prompt_budget_asks_for_fewer_tokens(tiny_model, tmp_path):
    nothink = run_sweep(_config(tiny_model, tmp_path / "nt", method="nothink"), progress=False).out_dir
    assert all(r["prompt"].endswith("<think>\n\n</think>\n\n") for r in _records(nothink))
    budget = run_sweep(_config(tiny_model, tmp_path / "pb", method="prompt-budget", budgets=(50,)),
                       progress=False).out_dir
    assert all("Answer using less than 50 tokens." in r["prompt"] for r in _records(budget))


def test_methods_share_one_run_directory_and_one_plot(tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "shared"
    run_sweep(_config(tiny_model, out, valve=str(tiny_valve), alphas=(0.0, 1.0)), progress=False)
    result = run_sweep(_config(tiny_model, out, valve=str(tiny_valve), method="budget-forcing", budgets=(4,)),
                       progress=False)
    summary = result.summary
    # the report's selection is the last run; every stored point is in the store and in `cotbench report --all`
    assert set(summary["method"]) == {"budget-forcing"}
    from cotbench.report import write_run_outputs
    from cotbench.store import Store

    store = Store(out, create=False)
    try:
        everything = write_run_outputs(store, None)
    finally:
        store.close()
    assert set(everything["method"]) == {"valve", "budget-forcing"}
    assert (out / "acu_vs_tokens.png").stat().st_size > 0


@pytest.mark.parametrize("settings,message", [
    (dict(method="budget-forcing"), "needs --budgets"),
    (dict(method="valve", budgets=(5,)), "--budgets is for"),
    (dict(method="nothink", thinking="none"), "needs thinking delimiters"),
    (dict(method="shorter"), "method must be one of"),
])
def test_bad_method_settings(settings, message):
    from cotbench.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        RunConfig(valve="none", tasks=("arithmetic",), **settings)


def test_budget_forcing_samples_are_keyed_by_the_thinking_delimiters(tiny_model, tmp_path):
    """Phase 1 stops at the closing delimiter: other delimiters are other generations, while a valve point's
    text does not depend on them (only its grading does)."""
    out = tmp_path / "bf"
    first = run_sweep(_config(tiny_model, out, method="budget-forcing", budgets=(3,)), progress=False)
    assert first.n_generated > 0
    again = run_sweep(_config(tiny_model, out, method="budget-forcing", budgets=(3,), thinking="<t>,</t>"),
                      progress=False)
    assert again.n_generated == first.n_generated  # nothing reused across delimiters
    plain = tmp_path / "plain"
    run_sweep(_config(tiny_model, plain), progress=False)
    assert run_sweep(_config(tiny_model, plain, thinking="<t>,</t>"), progress=False).n_generated == 0


def test_a_run_stopped_in_budget_forcings_second_phase_keeps_the_first(tiny_model, tmp_path):
    """Phase 1 is kept as it finishes: the run resumed after a stop in phase 2 does not think again."""
    from cotbench.backends import HFBackend

    backend = HFBackend(str(tiny_model), dtype="float32")
    real, calls = backend.generate, []

    def stopping_in_phase_two(requests):
        calls.append(list(requests))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C (or kill -9) while phase 2 runs
        yield from real(requests)

    cfg = _config(tiny_model, tmp_path / "bf", method="budget-forcing", budgets=(3,))
    backend.generate = stopping_in_phase_two
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, backend=backend, progress=False)
    phase_one = calls[0]
    calls.clear()

    def recorded(requests):
        calls.append(list(requests))
        yield from real(requests)

    backend.generate = recorded
    result = run_sweep(cfg, backend=backend, progress=False)
    assert result.n_generated == len(phase_one)
    assert len(calls) == 1 and all("Final Answer" in r.prompt for r in calls[0])  # only phase 2 ran
    assert all(r["n_thinking_tokens"] == 3 for r in _records(tmp_path / "bf"))


def test_each_method_keys_its_samples_as_before_the_methods_became_objects():
    """A stored sample's key must not move when the code that builds it does: these are the dicts the
    runner's inline branches put into keys.sample_key before methods.py owned them."""
    from cotbench.methods import METHODS, Point
    from cotbench.thinking import parse_option

    fmt, cue = parse_option("<think>,</think>"), "\n\nFinal Answer: "
    assert METHODS["valve"].key(Point("valve", 0.5, 0.5), cue, fmt) is None
    assert METHODS["prompt-budget"].key(Point("prompt-budget", 64.0, 0.0), cue, fmt) == \
        {"method": "prompt-budget", "knob": 64.0, "cue": None, "forced_by": None}
    assert METHODS["nothink"].key(Point("nothink", None, None), cue, fmt) == \
        {"method": "nothink", "knob": None, "cue": None, "forced_by": None}
    assert METHODS["budget-forcing"].key(Point("budget-forcing", 32.0, None), cue, fmt) == \
        {"method": "budget-forcing", "knob": 32.0, "cue": cue, "forced_by": "cotbench", "thinking": fmt.describe()}


def test_a_new_method_is_one_addition_in_methods(tiny_model, tmp_path, monkeypatch):
    """The runner and the settings check ask the method object, never its name: a method registered in
    METHODS alone runs end to end, its prompt change and key included."""
    from cotbench import methods

    class Shout(methods.Method):
        name = "shout"

        def points(self, alphas, budgets, base_alpha):
            return [methods.Point(self.name, None, base_alpha)]

        def prefill(self, prompt, fmt):
            return prompt + "ANSWER NOW:"

    monkeypatch.setitem(methods.METHODS, "shout", Shout())
    out = run_sweep(_config(tiny_model, tmp_path / "shout", method="shout"), progress=False).out_dir
    records = _records(out)
    assert len(records) == 3 and all(r["method"] == "shout" and r["prompt"].endswith("ANSWER NOW:") for r in records)
