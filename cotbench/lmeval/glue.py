"""What the lm-eval task files call: datasets from cotbench's adapters, cotbench's prompt, cotbench's grader.

Token counts. lm-eval hands a task only the response text. The ``valve`` model (``model.py``) generates
through cotbench's own backend and appends an exact count, ``[cotbench: N generated tokens, stop]``, which
``process_results`` strips before grading. Under any other model (``--model hf``) the response is
re-tokenised with the evaluated model's tokenizer (``pretrained`` from ``--model_args``), plus one token for
the EOS that lm-eval cuts off when the response ended on its own: one that reached the task's cap
(``max_gen_toks``, carried in each doc) was cut there and emitted no EOS. This equals the generated count
whenever the decoded text re-tokenises to the same ids, which holds for greedy output of ordinary BPE
tokenizers but is not guaranteed.

Verdicts. A grader timeout or error is no judgement of the answer: its ``acc`` is None, left out of the
``acc`` mean and of ACU's accuracy (``judged_mean``) and counted in ``ungraded``, as ``cotbench run`` does;
its tokens still count in ``mean_tokens``.
"""
from __future__ import annotations

import functools
import re
from typing import Any

from cotbench.metrics import acu

MARKER = re.compile(r"\n?\[cotbench: (\d+) generated tokens, (stop|length)\]\s*$")


def marker(n_tokens: int, finish_reason: str) -> str:
    return f"\n[cotbench: {n_tokens} generated tokens, {finish_reason}]"


def dataset(task: str, **metadata: Any):
    """A ``datasets.DatasetDict`` with a ``test`` split of one task's problems, prompt text included."""
    import datasets

    from cotbench.adapters import TASKS, DataOptions
    from cotbench.prompts import PromptConfig, user_turn

    from cotbench.records import SamplingSettings

    options = DataOptions(data_dir=metadata.get("data_dir"), split=metadata.get("split"))
    adapter = TASKS.get(task)
    problems = adapter.load(options, metadata.get("cotbench_limit"))
    model = str(metadata.get("pretrained", ""))
    params_b = float(metadata["params_b"]) if metadata.get("params_b") else None
    # the task's cap, as its YAML asks lm-eval for it (max_gen_toks): a response that reaches it was cut
    cap = int(metadata.get("max_gen_toks") or getattr(adapter, "max_new_tokens", SamplingSettings().max_new_tokens))
    rows = [{"problem_id": p.problem_id, "question": p.question, "gold": p.gold,
             "prompt": user_turn(p.question, PromptConfig()), "model": model, "params_b": params_b,
             "max_gen_toks": cap} for p in problems]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc: dict) -> str:
    return doc["prompt"]


def split_marker(response: str) -> tuple[str, int | None, str | None]:
    m = MARKER.search(response)
    if not m:
        return response, None, None
    return response[:m.start()], int(m.group(1)), m.group(2)


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str):
    from transformers import AutoTokenizer

    from cotbench.backends.loading import resolve_model

    source = resolve_model(model)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    return AutoTokenizer.from_pretrained(source.location, **kwargs)


@functools.lru_cache(maxsize=4)
def _params_b(model: str) -> float:
    """Exact parameter count without loading weights (meta device)."""
    from cotbench.backends.loading import count_parameters, resolve_model

    source = resolve_model(model)
    return count_parameters(source.location, source.gguf_file) / 1e9


def process_results(doc: dict, results: list[str]) -> dict[str, Any]:
    from cotbench.grading import grade

    text, n_tokens, finish = split_marker(results[0])
    if n_tokens is None and not doc["model"]:
        from cotbench.errors import ConfigError

        raise ConfigError("cotbench tasks count tokens with the evaluated model's tokenizer, but lm-eval did not say "
                          "which model it is (a model object was passed). Pass metadata={'pretrained': NAME_OR_PATH} "
                          "to simple_evaluate (to TaskManager if you build one), or --metadata "
                          "'{\"pretrained\": ...}' on the command line.")
    if n_tokens is None:
        n_tokens, finish = count_tokens(text, doc["model"], doc.get("max_gen_toks"))
    verdict = grade(text, doc["gold"], truncated=finish == "length")
    params_b = doc["params_b"] or _params_b(doc["model"])
    correct = float(verdict.correct) if verdict.judged else None
    return {"acc": correct, "mean_tokens": n_tokens, "acu": (correct, n_tokens, params_b),
            "ungraded": 0 if verdict.judged else 1}


def count_tokens(text: str, model: str, cap: int | None) -> tuple[int, str]:
    """(generated tokens, finish reason) of a response lm-eval returned without its token ids: the text
    re-tokenised with ``model``'s tokenizer, plus the EOS lm-eval cut off unless the response reached ``cap``."""
    n = len(_tokenizer(model)(text, add_special_tokens=False)["input_ids"])
    if cap is not None and n >= int(cap):
        return n, "length"
    return n + 1, "stop"


def total(items: list[int]) -> int:
    """How many (lm-eval registers no sum aggregation): the ``ungraded`` count."""
    return int(sum(items))


def judged_mean(items: list[float | None]) -> float:
    """The mean over real verdicts only (a timeout or grader error is None): cotbench's accuracy."""
    judged = [x for x in items if x is not None]
    return sum(judged) / len(judged) if judged else float("nan")


EMPTY_WARNING = ("{share:.0%} of the {n} responses are empty (the end-of-sequence token alone). A chat model given "
                 "a plain-text prompt often answers so: pass --apply_chat_template (or use --model valve, which "
                 "applies the chat template itself).")


def mostly_empty(token_counts: list[int]) -> float | None:
    """The share of responses that are the EOS alone, when it is more than half; else None."""
    empty = sum(1 for n in token_counts if n <= 1)
    return empty / len(token_counts) if token_counts and empty > len(token_counts) / 2 else None


def acu_aggregation(items: list[tuple[bool, int, float]]) -> float:
    share = mostly_empty([n for _, n, _ in items])
    if share is not None:
        import logging
        import warnings

        message = EMPTY_WARNING.format(share=share, n=len(items))
        warnings.warn(message, stacklevel=2)
        logging.getLogger("cotbench").warning(message)
    accuracy = 100.0 * judged_mean([c for c, _, _ in items])
    mean_tokens = sum(n for _, n, _ in items) / len(items)
    return acu(accuracy, items[0][2], mean_tokens)
