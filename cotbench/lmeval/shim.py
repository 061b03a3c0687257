"""``cotbench lm-eval``: the ``lm_eval`` command with cotbench's ``valve`` model registered and its task folder
included, every other flag passed through; ``import`` turns lm-eval's logged samples into a cotbench run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cotbench.errors import CotbenchError
from cotbench.lmeval import TASKS_DIR


def run_lm_eval(argv: list[str]) -> int:
    import cotbench.lmeval.model  # noqa: F401  (registers "valve")
    from lm_eval.__main__ import cli_evaluate

    if "--include_path" not in argv:
        argv = [*argv, "--include_path", str(TASKS_DIR)]
    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0


def import_samples(lm_eval_dir: str | Path, out: str | Path, regrade: bool = False) -> Path:
    """lm-eval ``--output_path … --log_samples`` output -> a cotbench run directory."""
    from cotbench.grading import grade, grader_id
    from cotbench.lmeval.glue import split_marker
    from cotbench.records import Generation, Grade, Problem, Sample
    from cotbench.report import write_run_outputs
    from cotbench.store import Store

    root = Path(lm_eval_dir)
    sample_files = sorted(root.rglob("samples_cotbench_*.jsonl"))
    result_files = sorted(root.rglob("results_*.json"))
    if not sample_files or not result_files:
        raise CotbenchError(f"{root} holds no lm-eval samples of cotbench tasks (samples_cotbench_*.jsonl and "
                            "results_*.json). Run lm_eval with --output_path DIR --log_samples first.")
    config = json.loads(result_files[-1].read_text()).get("config", {})
    args = _model_args(config.get("model_args"))
    model, valve = str(args.get("pretrained", "unknown")), str(args.get("valve") or "")
    alpha = float(args["alpha"]) if valve and "alpha" in args else None
    samples, params_b = [], None
    for path in sample_files:
        task = path.name[len("samples_cotbench_"):].rsplit("_", 1)[0]
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            doc = record["doc"]
            raw = record["filtered_resps"][0] if record.get("filtered_resps") else record["resps"][0][0]
            text, n_tokens, finish = split_marker(raw)
            acu_item = record.get("acu") or [None, None, None]
            n_tokens = n_tokens if n_tokens is not None else acu_item[1]
            params_b = params_b or acu_item[2]
            verdict = grade(text, doc["gold"]) if regrade else Grade(
                bool(record.get("acc")), None, doc["gold"], "lm-eval task", "as scored inside lm-eval")
            problem = Problem(task, str(doc["problem_id"]), doc["question"], doc["gold"], {})
            prompt = record["arguments"]["gen_args_0"]["arg_0"] if isinstance(record.get("arguments"), dict) else ""
            key = f"lmeval-{task}-{doc['problem_id']}"
            samples.append(Sample(key, model, valve, alpha, problem, prompt,
                                  Generation(key, text, 0, int(n_tokens or 0), finish or "stop", 0.0), verdict))
    store = Store(out)
    try:
        store.set_meta("run", {"config": {"tasks": sorted({s.problem.task for s in samples}), "model": model},
                               "model_id": model, "valve_id": valve, "params_b": params_b, "n_params": 0,
                               "backend": {"backend": "lm-eval", "model_args": config.get("model_args")}})
        store.put_generations(samples)
        store.put_grades([(s.key, s.grade) for s in samples], grader_id("math") if regrade else "lm-eval task")
        store.set_meta("selection", [s.key for s in samples])
        write_run_outputs(store, [s.key for s in samples])
    finally:
        store.close()
    return Path(out)


def _model_args(value) -> dict:
    if isinstance(value, dict):
        return value
    pairs = [p.split("=", 1) for p in str(value or "").split(",") if "=" in p]
    return {k.strip(): v.strip() for k, v in pairs}
