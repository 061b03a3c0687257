"""Reasoning models: the thinking block and the answer told apart, and thinking tokens counted exactly."""
import pytest

from cotbench import thinking
from cotbench.metrics import Outcome, summarize
from cotbench.thinking import ThinkingFormat, parse_option, split

FMT = ThinkingFormat("<think>", "</think>")


@pytest.mark.parametrize("response,starts_open,expected", [
    ("<think>a, then b</think>So \\boxed{3}", False, ("a, then b", "So \\boxed{3}", "closed")),
    ("  <think>\nx</think>\n\nAnswer: 4", False, ("x", "Answer: 4", "closed")),
    ("still thinking about 3 and 4", True, ("still thinking about 3 and 4", "", "open")),  # template opened it
    ("<think>cut off mid-thought, maybe \\boxed{5}", False, ("cut off mid-thought, maybe \\boxed{5}", "", "open")),
    ("hmm</think>The answer is 7", True, ("hmm", "The answer is 7", "closed")),
    ("plain answer \\boxed{9}", False, (None, "plain answer \\boxed{9}", "none")),
    ("hmm</think>The answer is 7", False, ("hmm", "The answer is 7", "closed")),  # template opened it, unsaid
])
def test_split(response, starts_open, expected):
    parts = split(response, FMT, starts_open)
    assert (parts.thinking, parts.answer, parts.state) == expected


def test_a_truncated_thought_is_never_graded_as_an_answer():
    from cotbench.grading import grade

    parts = split("<think>the answer must be \\boxed{5}", FMT)
    assert parts.state == "open" and not grade(parts.answer, "5").correct


def test_options():
    assert parse_option("auto") == FMT and parse_option(None) == FMT and parse_option("none") is None
    assert parse_option("<reasoning>,</reasoning>") == ThinkingFormat("<reasoning>", "</reasoning>")
    with pytest.raises(ValueError, match="OPEN,CLOSE"):
        parse_option("<think>")


def test_prompt_that_opens_the_block():
    assert thinking.prompt_opens_thinking("<|im_start|>assistant\n<think>\n", FMT)
    assert not thinking.prompt_opens_thinking("<|im_start|>assistant\n", FMT)


def test_thinking_tokens_are_counted_from_the_generated_ids(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    thought, answer = "<think>first we add three and four", "</think>so seven"
    ids = tok(thought + answer, add_special_tokens=False)["input_ids"]
    parts = split(tok.decode(ids), FMT)
    n = thinking.thinking_token_count(tok, ids, parts, FMT)
    assert "</think>" in tok.decode(ids[:n]) and "</think>" not in tok.decode(ids[:n - 1])
    assert thinking.thinking_token_count(tok, ids, split("no block", FMT), FMT) is None
    assert thinking.thinking_token_count(tok, None, parts, FMT) == len(
        tok(parts.thinking + "</think>", add_special_tokens=False)["input_ids"])  # a server: the tokenizer's count


def test_summary_reports_thinking_and_answer_tokens_apart():
    outcomes = [Outcome(True, 100, False, 80, "closed"), Outcome(False, 50, True, 50, "open"),
                Outcome(False, 60, True, 20, "closed"), Outcome(True, 10, False, None, "none")]
    s = summarize(outcomes, params_b=1.0)
    assert s.mean_thinking_tokens == pytest.approx((80 + 50 + 20) / 3)
    assert s.mean_answer_tokens == pytest.approx((20 + 0 + 40 + 10) / 4)
    assert (s.truncated_thinking_pct, s.truncated_answer_pct) == (25.0, 25.0)
    assert s.acu == pytest.approx(100 * 50 / (1.0 * 55))  # ACU stays on all generated tokens
