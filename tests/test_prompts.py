from cotbench.adapters import TASKS, DataOptions
from cotbench.prompts import DEFAULT_INSTRUCTION, PromptConfig, build_messages, render_plain
from cotbench.records import Problem

PROBLEM = Problem("t", "1", "What is 2+3?", "5")


def test_zero_shot_asks_for_boxed_answer():
    messages = build_messages(PROBLEM, PromptConfig())
    assert messages == [{"role": "user", "content": f"What is 2+3?\n{DEFAULT_INSTRUCTION}"}]
    assert "\\boxed{}" in DEFAULT_INSTRUCTION


def test_system_prompt_token_budget_and_shots():
    shots = TASKS.get("gsm8k").few_shot(2, DataOptions())
    messages = build_messages(PROBLEM, PromptConfig(system_prompt="Be brief.", n_shot=2, token_budget=100), shots)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "Be brief."
    assert messages[-1]["content"].endswith("Answer using less than 100 tokens.")
    assert messages[2]["content"].endswith("\\boxed{72}.") and "<<" not in messages[2]["content"]


def test_plain_text_rendering_for_models_without_chat_template():
    text = render_plain(build_messages(PROBLEM, PromptConfig(system_prompt="S")))
    assert text.startswith("S\n\nQuestion: What is 2+3?") and text.endswith("\n\nAnswer:")


def test_tasks_without_worked_solutions_refuse_few_shot():
    import pytest

    from cotbench.errors import DataError

    with pytest.raises(DataError, match="--n-shot 0"):
        TASKS.get("aime24").few_shot(1, DataOptions())
