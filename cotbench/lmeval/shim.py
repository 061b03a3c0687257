"""``cotbench lm-eval``: the ``lm_eval`` command with cotbench's ``valve`` model registered and its task folder
included, every other flag passed through; ``import`` turns lm-eval's logged samples into a cotbench run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cotbench.errors import CotbenchError
from cotbench.lmeval import TASKS_DIR


def run_lm_eval(argv: list[str]) -> int:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise CotbenchError("`cotbench lm-eval` needs lm-evaluation-harness: pip install 'cotbench[lmeval]'") from None
    import cotbench.lmeval.model  # noqa: F401  (registers "valve")
    from lm_eval.__main__ import cli_evaluate

    if "--include_path" not in argv:
        argv = [*argv, "--include_path", str(TASKS_DIR)]
    argv = _cap_in_metadata(argv)
    _refuse_plain_prompts_to_chat_models(argv)
    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0


def _cap_in_metadata(argv: list[str]) -> list[str]:
    """``--gen_kwargs max_gen_toks=N`` also into ``--metadata``, where the tasks read the cap they were run
    with (lm-eval gives a task's scoring function no generation settings): a response that reached it was cut
    and emitted no EOS."""
    if "--gen_kwargs" not in argv or argv.index("--gen_kwargs") + 1 >= len(argv):
        return argv
    pairs = dict(p.split("=", 1) for p in argv[argv.index("--gen_kwargs") + 1].split(",") if "=" in p)
    if "max_gen_toks" not in pairs:
        return argv
    argv = list(argv)
    if "--metadata" in argv and argv.index("--metadata") + 1 < len(argv):
        at = argv.index("--metadata") + 1
        metadata = json.loads(argv[at])
        metadata.setdefault("max_gen_toks", int(pairs["max_gen_toks"]))
        argv[at] = json.dumps(metadata)
    else:
        argv += ["--metadata", json.dumps({"max_gen_toks": int(pairs["max_gen_toks"])})]
    return argv


def _refuse_plain_prompts_to_chat_models(argv: list[str]) -> None:
    """cotbench tasks under a model other than ``valve``, for a model with a chat template, without
    ``--apply_chat_template``: lm-eval would send plain text and score near-empty answers. Say which flag."""
    def value(flag):
        return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else ""

    tasks, model = value("--tasks"), value("--model") or "hf"
    if "cotbench" not in tasks or model == "valve" or "--apply_chat_template" in argv:
        return
    pretrained = next((p.split("=", 1)[1] for p in value("--model_args").split(",") if p.startswith("pretrained=")), "")
    if not pretrained:
        return
    try:
        from cotbench.lmeval.glue import _tokenizer

        has_template = bool(_tokenizer(pretrained).chat_template)
    except Exception:  # lm-eval will report a model it cannot load itself
        return
    if has_template:
        raise CotbenchError(f"{pretrained} has a chat template, and cotbench tasks are prompted as `cotbench run` "
                            "prompts them: through it. Add --apply_chat_template (or use --model valve, which "
                            "applies it itself). Without it the model gets plain text and often answers with "
                            "its end-of-sequence token alone.")


def import_samples(lm_eval_dir: str | Path, out: str | Path, regrade: bool = False,
                   tokenizer: str | None = None) -> Path:
    """lm-eval ``--output_path … --log_samples`` output -> a cotbench run directory.

    A sample's generated-token count comes from the ``valve`` model's marker or the task's own count (its
    ``acu`` item); a sample with neither is counted with ``tokenizer`` (a model name or path) when one is given,
    and refused otherwise: a length of 0 would lower mean tokens and raise ACU. A sample lm-eval could not
    judge (a grader timeout or error) stays unjudged.

    Each ``results_<time>.json`` says which model (``pretrained``, ``valve``, ``alpha`` in ``model_args``) wrote
    the ``samples_<task>_<time>.jsonl`` of the same time in its folder; samples are keyed by model, valve, α,
    settings, task, problem and prompt, so outputs of several models or α values import side by side."""
    runs = _lm_eval_runs(Path(lm_eval_dir))
    samples, params_b = [], {}
    for results_path, sample_files in runs:
        config = json.loads(results_path.read_text()).get("config", {})
        for path in sample_files:
            task = path.name[len("samples_cotbench_"):].rsplit("_", 1)[0]
            for line in path.read_text(encoding="utf-8").splitlines():
                sample, params = _sample(json.loads(line), config, task, path, regrade, tokenizer)
                samples.append(sample)
                if params:
                    params_b.setdefault(sample.model, params)
    _write_imported(out, samples, params_b, runs, regrade)
    return Path(out)


def _sample(record: dict, config: dict, task: str, path: Path, regrade: bool, tokenizer: str | None):
    """One lm-eval sample record -> (Sample keyed as cotbench keys it, the model's size in billions or None)."""
    from cotbench.keys import sample_key
    from cotbench.lmeval.glue import split_marker
    from cotbench.records import Generation, Problem, Sample, SamplingSettings

    args = _model_args(config.get("model_args"))
    model, valve = str(args.get("pretrained", "unknown")), _valve_id(args.get("valve"))
    alpha = float(args["alpha"]) if valve and "alpha" in args else None
    settings = {"backend": "lm-eval", "model_args": config.get("model_args"), "gen_kwargs": config.get("gen_kwargs")}
    doc = record["doc"]
    raw = record["filtered_resps"][0] if record.get("filtered_resps") else record["resps"][0][0]
    text, n_tokens, finish = split_marker(raw)
    acu_item = record.get("acu") or [None, None, None]
    n_tokens = n_tokens if n_tokens is not None else acu_item[1]
    if n_tokens is None:
        n_tokens, finish = _count_unmarked(text, doc, path, tokenizer)
    problem = Problem(task, str(doc["problem_id"]), doc["question"], doc["gold"], {})
    arguments = record.get("arguments")
    prompt = arguments["gen_args_0"]["arg_0"] if isinstance(arguments, dict) else ""
    key = sample_key(model, valve, alpha, problem, prompt, SamplingSettings(), settings)
    generation = Generation(key, text, 0, int(n_tokens or 0), finish or "stop", 0.0)
    return Sample(key, model, valve, alpha, problem, prompt, generation, _verdict(record, text, regrade)), acu_item[2]


def _count_unmarked(text: str, doc: dict, path: Path, tokenizer: str | None):
    """A response with no token count of its own: counted with the evaluated model's tokenizer, or refused
    (a length of 0 would lower mean tokens and raise ACU)."""
    from cotbench.lmeval.glue import count_tokens

    if tokenizer is None:
        raise CotbenchError(
            f"{path.name}: sample {doc.get('problem_id')} carries no generated-token count (neither "
            "the valve model's marker nor the task's own). Pass --tokenizer MODEL (the evaluated "
            "model) to count its response, or run lm-eval with cotbench's tasks.")
    return count_tokens(text, tokenizer, doc.get("max_gen_toks"))


def _verdict(record: dict, text: str, regrade: bool):
    from cotbench.grading import grade
    from cotbench.records import Grade

    gold = record["doc"]["gold"]
    if regrade:
        return grade(text, gold)
    if record.get("acc") is None:  # lm-eval's task could not judge it: no verdict, not wrong
        return Grade(False, None, gold, "lm-eval task", "not judged inside lm-eval (grader timeout or error)",
                     status="error")
    return Grade(bool(record.get("acc")), None, gold, "lm-eval task", "as scored inside lm-eval")


def _write_imported(out, samples: list, params_b: dict, runs: list, regrade: bool) -> None:
    from cotbench.grading import grader_id
    from cotbench.report import write_run_outputs
    from cotbench.store import Store

    store = Store(out, exclusive=True)
    try:
        models = sorted({s.model for s in samples})
        store.set_meta("run", {"config": {"tasks": sorted({s.problem.task for s in samples}), "model": ", ".join(models)},
                               "model_id": ", ".join(models), "valve_id": ", ".join(sorted({s.valve for s in samples})),
                               "params_b": params_b.get(models[0]) if len(models) == 1 else None,
                               "params_b_by_model": params_b, "n_params": 0,
                               "backend": {"backend": "lm-eval", "runs": [str(r.name) for r, _ in runs]}})
        store.put_generations(samples)
        store.put_grades([(s.key, s.grade) for s in samples], grader_id("math") if regrade else "lm-eval task")
        store.set_meta("selection", [s.key for s in samples])
        write_run_outputs(store, [s.key for s in samples])
    finally:
        store.close()


def _lm_eval_runs(root: Path) -> list[tuple[Path, list[Path]]]:
    """(results file, the cotbench sample files of the same lm-eval invocation) for every invocation under root."""
    runs = []
    for results in sorted(root.rglob("results_*.json")):
        stamp = results.stem[len("results_"):]
        files = sorted(p for p in results.parent.glob(f"samples_cotbench_*_{stamp}.jsonl"))
        if files:
            runs.append((results, files))
    if not runs:
        raise CotbenchError(f"{root} holds no lm-eval samples of cotbench tasks (samples_cotbench_*.jsonl next to "
                            "results_*.json). Run lm_eval with --output_path DIR --log_samples first.")
    return runs


def _valve_id(valve) -> str:
    """The valve as a sweep records it (name@fingerprint) when its directory is here, else as lm-eval named it."""
    if not valve:
        return ""
    from cotbench.valve.apply import valve_fingerprint

    path = Path(str(valve))
    return f"{path.name}@{valve_fingerprint(path)}" if (path / "adapter_config.json").is_file() else str(valve)


def _model_args(value) -> dict:
    if isinstance(value, dict):
        return value
    pairs = [p.split("=", 1) for p in str(value or "").split(",") if "=" in p]
    return {k.strip(): v.strip() for k, v in pairs}
