"""The lm-eval path against `cotbench run`: same prompts, outputs, verdicts and token counts (real entry points)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotbench.config import RunConfig
from cotbench.lmeval import TASKS_DIR
from cotbench.runner import run_sweep

REPO = Path(__file__).resolve().parents[2]


def _lm_eval(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _logged(out_dir):
    path = next(Path(out_dir).rglob("samples_cotbench_gsm8k_*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_valve_model_matches_cotbench_run(tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "lm"

    def lm_eval_valve(alpha, *flags):
        done = _lm_eval([sys.executable, "-m", "cotbench", "lm-eval", "--model", "valve", "--model_args",
                         f"pretrained={tiny_model},valve={tiny_valve},alpha={alpha}", "--tasks", "cotbench_gsm8k",
                         "--limit", "4", *flags, "--gen_kwargs", "max_gen_toks=12", "--device", "cpu",
                         "--output_path", str(out), "--log_samples"], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]

    lm_eval_valve(0.5, "--apply_chat_template")
    logged = sorted(_logged(out), key=lambda r: r["doc_id"])
    ours = run_sweep(RunConfig(model=str(tiny_model), valve=str(tiny_valve), alphas=(0.0, 0.5), tasks=("gsm8k",),
                               limit=4, max_new_tokens=12, grade_workers=0, dtype="float32", out=str(tmp_path / "run")),
                     progress=False)  # lm-eval loads this model in its own dtype, fp32
    records = [json.loads(x) for x in (ours.out_dir / "samples.jsonl").read_text().splitlines()]
    mine_at = {a: {r["problem_id"]: r for r in records if r["alpha"] == a} for a in (0.0, 0.5)}
    from cotbench.lmeval.glue import split_marker

    for r in logged:
        mine = mine_at[0.5][r["doc"]["problem_id"]]
        text, n_tokens, finish = split_marker(r["filtered_resps"][0])
        assert r["arguments"]["gen_args_0"]["arg_0"] == mine["prompt"]  # same prompt
        assert (text, n_tokens, finish) == (mine["response"], mine["n_generated_tokens"], mine["finish_reason"])
        assert bool(r["acc"]) == mine["correct"]
    row = ours.summary[ours.summary["alpha"] == 0.5].iloc[0]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["cotbench_gsm8k"]
    assert results["acc,none"] * 100 == pytest.approx(row["accuracy_pct"])
    assert results["mean_tokens,none"] == pytest.approx(row["mean_tokens"])

    # Without --apply_chat_template the valve model applies the chat template itself: the same answers
    lm_eval_valve(0.0)
    plain = [r for r in _logged_all(out) if "<|user|>" not in r["arguments"]["gen_args_0"]["arg_0"]]
    assert len(plain) == 4
    for r in plain:
        text, n_tokens, finish = split_marker(r["filtered_resps"][0])
        mine = mine_at[0.0][r["doc"]["problem_id"]]
        assert (text, n_tokens, finish) == (mine["response"], mine["n_generated_tokens"], mine["finish_reason"])

    # ... and the logged samples of both lm-eval runs (two α) come back as one cotbench run, side by side
    imported = tmp_path / "imported"
    assert subprocess.run([sys.executable, "-m", "cotbench", "lm-eval", "import", str(out), "--out", str(imported),
                           "--regrade"], capture_output=True).returncode == 0
    import pandas as pd

    summary = pd.read_csv(imported / "summary.csv").sort_values("alpha").reset_index(drop=True)
    assert list(summary["alpha"]) == [0.0, 0.5] and list(summary["n"]) == [4, 4]
    assert summary.loc[1, "mean_tokens"] == pytest.approx(row["mean_tokens"])
    assert summary.loc[1, "accuracy_pct"] == pytest.approx(row["accuracy_pct"])


def _logged_all(out_dir):
    return [json.loads(line) for path in Path(out_dir).rglob("samples_cotbench_gsm8k_*.jsonl")
            for line in path.read_text().splitlines()]


def test_cotbench_tasks_refuse_plain_prompts_to_a_chat_model(tiny_model, tmp_path):
    done = _lm_eval([sys.executable, "-m", "cotbench", "lm-eval", "--model", "hf", "--model_args",
                     f"pretrained={tiny_model}", "--tasks", "cotbench_gsm8k", "--limit", "1"], tmp_path)
    assert done.returncode == 2 and "--apply_chat_template" in done.stderr


def test_mostly_empty_responses_are_warned_about():
    from cotbench.lmeval.glue import acu_aggregation, mostly_empty

    assert mostly_empty([1, 1, 1, 40]) == 0.75 and mostly_empty([1, 30, 40]) is None
    with pytest.warns(UserWarning, match="apply_chat_template"):
        acu_aggregation([(False, 1, 0.1), (False, 1, 0.1), (True, 20, 0.1)])


def test_plain_lm_eval_runs_the_tasks_offline(tiny_model, tmp_path):
    lm_eval = Path(sys.executable).with_name("lm_eval")
    out = tmp_path / "hf"
    done = _lm_eval([str(lm_eval), "--model", "hf", "--model_args", f"pretrained={tiny_model}", "--include_path",
                     str(REPO / "tasks"), "--tasks", "cotbench_gsm8k", "--limit", "2", "--gen_kwargs",
                     "max_gen_toks=6", "--metadata", '{"max_gen_toks": 6}', "--device", "cpu", "--output_path",
                     str(out), "--log_samples"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["cotbench_gsm8k"]
    assert {"acc,none", "mean_tokens,none", "acu,none"} <= set(results)
    # without the valve model, counts are the documented fallback: the re-tokenised response, plus the EOS lm-eval
    # strips only where the response ended before the cap (one that reached it was cut and emitted none)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    logged = _logged(out)
    counts = [len(tok(r["filtered_resps"][0], add_special_tokens=False)["input_ids"]) for r in logged]
    assert results["mean_tokens,none"] == pytest.approx(sum(n if n >= 6 else n + 1 for n in counts) / 2)
    assert results["ungraded,none"] == 0


def test_a_grader_fault_is_not_a_wrong_answer_and_a_cut_response_has_no_eos(monkeypatch):
    from cotbench.lmeval import glue
    from cotbench.records import Grade

    monkeypatch.setattr(glue, "_tokenizer", lambda model: (lambda text, add_special_tokens: {"input_ids": text.split()}))
    doc = {"gold": "5", "model": "m", "params_b": 0.1, "max_gen_toks": 4}
    assert glue.process_results(doc, ["the answer is 5"])["mean_tokens"] == 4  # reached the cap: no EOS
    assert glue.process_results(doc, ["it is 5"])["mean_tokens"] == 4  # 3 words + the EOS lm-eval cut off
    import cotbench.grading as grading

    monkeypatch.setattr(grading, "grade", lambda text, gold, **kwargs: Grade(False, None, gold, "math", "timeout",
                                                                             status="timeout"))
    faulted = glue.process_results(doc, ["it is 5"])
    assert faulted["acc"] is None and faulted["ungraded"] == 1
    items = [1.0, 0.0, None]
    assert glue.judged_mean(items) == 0.5  # over the two real verdicts, not 1 of 3
    assert glue.acu_aggregation([(1.0, 10, 0.1), (0.0, 10, 0.1), (None, 40, 0.1)]) == pytest.approx(
        100 * 50.0 / (0.1 * 20))  # accuracy over the judged, tokens over all


def test_an_import_without_token_counts_is_refused_or_counted_never_zero(tmp_path, tiny_model):
    from cotbench.errors import CotbenchError
    from cotbench.lmeval.shim import import_samples
    from cotbench.store import Store

    run = tmp_path / "lm_eval_out" / "model"
    run.mkdir(parents=True)
    (run / "results_2026-12-07T00-00-00.json").write_text(json.dumps({"config": {"model_args": f"pretrained={tiny_model}"}}))
    doc = {"problem_id": "1", "question": "1+1?", "gold": "2", "max_gen_toks": 512}
    rows = [{"doc": doc, "filtered_resps": ["so it is 2"], "acc": 1.0},
            {"doc": dict(doc, problem_id="2"), "filtered_resps": ["hmm"], "acc": None}]
    (run / "samples_cotbench_gsm8k_2026-12-07T00-00-00.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    with pytest.raises(CotbenchError, match="no generated-token count.*--tokenizer"):
        import_samples(tmp_path / "lm_eval_out", tmp_path / "refused")
    out = import_samples(tmp_path / "lm_eval_out", tmp_path / "counted", tokenizer=str(tiny_model))
    store = Store(out, create=False)
    try:
        samples = {s.problem.problem_id: s for s in store.samples()}
    finally:
        store.close()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert samples["1"].generation.n_generated_tokens == len(tok("so it is 2", add_special_tokens=False)["input_ids"]) + 1
    assert samples["2"].grade.status == "error" and not samples["2"].grade.judged  # unjudged, not wrong


def test_task_files_ship_in_the_package_and_the_top_level_folder_is_the_same():
    assert (TASKS_DIR / "cotbench_gsm8k.yaml").is_file() and (TASKS_DIR / "cotbench.yaml").is_file()
    assert (REPO / "tasks").resolve() == TASKS_DIR.resolve()


def test_lm_eval_tasks_take_the_same_generation_cap_as_cotbench_run():
    """The arithmetic task carries its own cap; lm-eval's copy of the task asks for the same one, the others
    for `cotbench run`'s general default."""
    from lm_eval.tasks import TaskManager

    from cotbench.adapters import TASKS

    tasks = TaskManager(include_path=str(TASKS_DIR)).load(["cotbench_arithmetic", "cotbench_aime24"])["tasks"]
    assert tasks["cotbench_arithmetic"].config.generation_kwargs["max_gen_toks"] == \
        RunConfig().sampling().max_new_tokens == TASKS.get("arithmetic").max_new_tokens
    assert tasks["cotbench_aime24"].config.generation_kwargs["max_gen_toks"] == \
        RunConfig(tasks=("aime24",)).sampling().max_new_tokens


def test_valve_model_loglikelihoods_run_at_the_asked_alpha(tiny_model, tiny_valve):
    import torch
    from transformers import AutoModelForCausalLM

    from cotbench.lmeval.model import ValveLM
    from cotbench.records import GenerationRequest, SamplingSettings
    from cotbench.valve.apply import attach_valve, valve_strength

    lm = ValveLM(pretrained=str(tiny_model), valve=str(tiny_valve), alpha=0.5, batch_size=3, device="cpu",
                 dtype="float32")
    reference = attach_valve(AutoModelForCausalLM.from_pretrained(tiny_model), tiny_valve)
    ids = torch.tensor([[5, 9, 14, 30], [7, 7, 3, 1]])
    with torch.inference_mode(), valve_strength(reference, 0.5):
        expected = reference(input_ids=ids).logits
    with torch.inference_mode():
        torch.testing.assert_close(lm._model_call(ids), expected, rtol=0, atol=1e-5)
        # a generation in between (per-row strengths for its own batch) does not leak into the next call
        list(lm.cotbench.generate([GenerationRequest(str(i), "<|user|>hi</s><|assistant|>", a, SamplingSettings(max_new_tokens=3))
                                   for i, a in enumerate((0.0, 1.0, 2.0))]))
        torch.testing.assert_close(lm._model_call(ids), expected, rtol=0, atol=1e-5)
