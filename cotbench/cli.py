"""``cotbench`` command line. The one place that catches CotbenchError: message, non-zero exit, no traceback
(unless --debug)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cotbench.errors import CotbenchError

EXAMPLES = """examples:
  cotbench run                                   # embedded SmolLM2 + arithmetic task, offline, a few minutes
  cotbench run --model Qwen/Qwen2.5-7B-Instruct --valve ./my_valve --alphas 0,0.25,0.5,0.75,1,1.25 \\
               --tasks gsm8k,math500 --limit 200 --max-new-tokens 1024 --out runs/qwen7b
  cotbench run --config sweep.yaml --limit 20     # file settings, flags override them
  cotbench report runs/qwen7b                    # tables + curves again, from stored results
  cotbench compare runs/a runs/b --out runs/a-vs-b  # one report over several runs, tested on shared problems
  cotbench leaderboard add runs/qwen7b           # rows into leaderboard.csv
  cotbench grade '\\frac{1}{2}' '0.5'              # one-off check of the grader
"""


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="sweep α over a valve-merged model on tasks; grade; write outputs",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
                       argument_default=argparse.SUPPRESS)
    for add in (_run_model_and_tasks, _run_prompt_and_sampling, _run_engine, _run_ray, _run_server,
                _run_grading_and_method):
        add(p)
    p.add_argument("--out", help="run directory (default runs/<model>[-<valve>]); rerunning resumes")
    p.set_defaults(func=_cmd_run)


def _run_model_and_tasks(p) -> None:
    """What is evaluated: the model, its valve and α, the tasks and their data."""
    p = p.add_argument_group("model, valve and tasks")
    p.add_argument("--config", help="YAML/TOML/JSON file with the same settings as the flags")
    p.add_argument("--suite", help="a named suite with fixed tasks, limits, caps, sampling, protocol and α grid: "
                   "cotvalve (the paper's GSM8K and AIME24 settings) | quick (minutes on a CPU); each entry a run "
                   "directory under --out (default runs/suite-NAME), and suite.md over them")
    p.add_argument("--model", help="Hub id, local directory, .gguf file, or 'smollm2' (default, embedded)")
    p.add_argument("--valve", help="PEFT LoRA adapter directory (Δθ); the model at α is θ + α·Δθ. Default: the "
                   "shipped valve for the embedded smollm2, none for other models; 'none' for no valve")
    p.add_argument("--alphas", help="comma-separated valve strengths, e.g. 0,0.5,1,1.25 (default with a valve: "
                   "0,0.25,0.5,0.75,1); auto[:N[:MAX]]: that grid from 0 to MAX (default 1), then points added "
                   "where neighbours differ most in accuracy or length, N in all (default 9)")
    p.add_argument("--target-tokens", dest="target_tokens", type=int,
                   help="find the α whose mean length is within ±5 %% of N tokens (bisection between the lowest and "
                   "highest --alphas, default 0 and 1; at most 6 steps)")
    p.add_argument("--tasks", help="comma-separated: arithmetic, gsm8k, math500, math, aime24, svamp, jsonl")
    p.add_argument("--limit", type=int, help="first N problems of each task")
    p.add_argument("--split", help="dataset split (default: the task's evaluation split)")
    p.add_argument("--data-dir", dest="data_dir", help="directory with <task>/<split>.jsonl (default: $COTBENCH_DATA_DIR, then the Hub)")
    p.add_argument("--data", dest="data_file", help="your own JSONL file, for --tasks jsonl")
    p.add_argument("--question-field", dest="question_field")
    p.add_argument("--answer-field", dest="answer_field")
    p.add_argument("--id-field", dest="id_field")
    p.add_argument("--answer-format", dest="answer_format", help="auto | gsm8k | boxed | raw")
    p.add_argument("--n", dest="n_generated", type=int, help="problems in the embedded arithmetic task")
    p.add_argument("--difficulty", type=int, help="operations per embedded arithmetic problem")


def _run_prompt_and_sampling(p) -> None:
    """How each problem is asked and decoded."""
    p = p.add_argument_group("prompt and sampling")
    p.add_argument("--system-prompt", dest="system_prompt")
    p.add_argument("--instruction", help="appended to each question (default asks for \\boxed{})")
    p.add_argument("--n-shot", dest="n_shot", type=int)
    p.add_argument("--token-budget", dest="token_budget", type=int, help="add '...using less than N tokens' (prompt baseline)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--temperature", type=float, help="0 = greedy (default)")
    p.add_argument("--top-p", dest="top_p", type=float)
    p.add_argument("--seed", type=int, help="seeds each request's own generator (with its sample key)")
    p.add_argument("--samples", type=int, help="K samples per problem and point (needs --temperature > 0); a later "
                   "run with a larger K on the same --out generates only the new ones")
    p.add_argument("--sampling-preset", dest="sampling_preset",
                   help="r1: temperature 0.6, top-p 0.95 (DeepSeek-R1's evaluation); flags given beside it win")
    p.add_argument("--stop", action="append", help="stop string (repeatable)")


def _run_engine(p) -> None:
    """The engine behind --backend and its settings."""
    p = p.add_argument_group("engine")
    p.add_argument("--batch-size", dest="batch_size", help="rows decoded together: auto (default) or a number")
    p.add_argument("--threads", help="CPU threads of the hf engine: auto (default: the CPUs this process may use, "
                   "fewer while other programs keep some busy; $OMP_NUM_THREADS when set) or a fixed number")
    p.add_argument("--scheduler", help="continuous (default: every α in one queue) | static (one α at a time)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--backend", help="hf (default: transformers) | vllm (vLLM's offline engine) | openai (a server)")
    p.add_argument("--engine-arg", dest="engine_args", action="append",
                   help="KEY=VALUE passed to vLLM (repeatable): tensor_parallel_size=2, max_num_seqs=64, ...")
    p.add_argument("--vllm-python", dest="vllm_python",
                   help="the Python that has vLLM installed (default: $COTBENCH_VLLM_PYTHON, then this one)")
    p.add_argument("--vllm-startup-timeout", dest="vllm_startup_timeout_s", type=float,
                   help="seconds the vLLM engine may take to start (default 900: vLLM-CPU compiles on first start)")
    p.add_argument("--vllm-wait-timeout", dest="vllm_wait_timeout_s", type=float,
                   help="seconds without a finished request before a vLLM run stops with an error (default 300)")


def _run_ray(p) -> None:
    """Spreading the sweep over a Ray cluster."""
    p = p.add_argument_group("Ray")
    p.add_argument("--ray", help="spread the sweep over engines on a Ray cluster: auto (the cluster `ray start` made "
                   "here, or $RAY_ADDRESS), local (a cluster of this machine alone) or HOST:PORT")
    p.add_argument("--workers", type=int, help="--ray: engines, each loading the model once (default: one per "
                   "--worker-gpus share of the cluster's GPUs, else 1)")
    p.add_argument("--worker-gpus", dest="worker_gpus", type=float, help="--ray: GPUs per worker (default 0: CPU workers)")
    p.add_argument("--worker-cpus", dest="worker_cpus", type=float,
                   help="--ray: CPU cores per worker (default: 1 beside a GPU, else the cluster's cores / workers)")


def _run_server(p) -> None:
    """A server the sweep sends its requests to."""
    p = p.add_argument_group("OpenAI-compatible server (--backend openai)")
    p.add_argument("--base-url", dest="base_url", help="--backend openai: the server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--served-model", dest="served_model", help="the server's name for the base model (default: --model)")
    p.add_argument("--alpha-model", dest="alpha_model", help="served name of α's adapter (default alpha_{alpha})")
    p.add_argument("--max-concurrency", dest="max_concurrency", type=int, help="requests in flight (default 8)")
    p.add_argument("--request-timeout", dest="request_timeout_s", type=float, help="seconds per request (default 600)")
    p.add_argument("--max-retries", dest="max_retries", type=int, help="retries on 429/5xx/dropped connections (default 5)")
    p.add_argument("--count-tokens", dest="count_tokens", help="usage (default: the server's count) | tokenizer")
    p.add_argument("--api-key-env", dest="api_key_env", help="environment variable with the API key (default OPENAI_API_KEY)")


def _run_grading_and_method(p) -> None:
    """How answers are graded and which axis is swept."""
    p = p.add_argument_group("grading and length-control method")
    p.add_argument("--protocol", help="grading preset: math (default) | math-strict-percent | paper | gsm8k-strict | "
                   "gsm8k-flexible")
    p.add_argument("--grade-timeout", dest="grade_timeout_s", type=float,
                   help="seconds per verdict, counted from when a grading worker starts it (default 5)")
    p.add_argument("--grade-workers", dest="grade_workers", type=int)
    p.add_argument("--thinking", help="auto (default: split off a <think>...</think> block) | OPEN,CLOSE | none")
    p.add_argument("--method", help="sweep axis: valve (default, --alphas) | prompt-budget | budget-forcing | nothink")
    p.add_argument("--budgets", help="token budgets for --method prompt-budget / budget-forcing, e.g. 64,128,256")
    p.add_argument("--answer-cue", dest="answer_cue", help="budget forcing: text after a forced end of thinking")
    p.add_argument("--params-b", dest="params_b", type=float, help="parameter count in billions for ACU (default: exact)")


def _cmd_run(args) -> int:
    from dataclasses import replace

    from cotbench.config import build_config
    from cotbench.runner import run_sweep
    from cotbench.report.tables import format_table, limit_advice

    settings = {k: v for k, v in vars(args).items() if k not in ("func", "debug", "config", "command",
                                                                  "openmp_prepared")}
    for name in ("stop", "engine_args"):
        if name in settings:
            settings[name] = tuple(settings[name])
    suite = settings.pop("suite", None)
    if suite:
        return _run_suite(suite, args, settings)
    config = build_config(getattr(args, "config", None), **settings)
    if config.threads is None:  # neither a flag nor the config file chose: the command owns its process
        from cotbench.threads import cli_threads

        config = replace(config, threads=cli_threads(args.openmp_prepared))
    result = run_sweep(config)
    print(format_table(result.summary) if len(result.summary) else "no graded samples")
    advice = limit_advice(result.summary) if len(result.summary) else None
    if advice:
        print(advice)
    print(f"outputs in {result.out_dir}/ (report.md, report.html, summary.csv, samples.jsonl[.gz], *_vs_tokens.png/svg)")
    return 0


def _run_suite(name: str, args, settings: dict) -> int:
    from cotbench.config import load_config_file
    from cotbench.suites import run_suite
    from cotbench.threads import cli_threads

    if getattr(args, "config", None):
        settings = {**load_config_file(args.config), **{k: v for k, v in settings.items() if v is not None}}
    settings = {k: v for k, v in settings.items() if v is not None}
    settings.setdefault("threads", cli_threads(args.openmp_prepared))
    out = Path(settings.pop("out", None) or f"runs/suite-{name}")
    table = run_suite(name, settings, out)
    print(table.to_string(index=False, max_colwidth=40))
    print(f"suite {name}: {out}/suite.md, suite.csv, and one run directory per entry")
    return 0


def _cmd_report(args) -> int:
    from cotbench.files import RunDirLock
    from cotbench.report import write_run_outputs
    from cotbench.report.rebuild import rebuild_from_samples
    from cotbench.report.samples_file import samples_path
    from cotbench.report.tables import format_table
    from cotbench.store import DB_NAME, Store

    run_dir = Path(args.run_dir)
    if not (run_dir / DB_NAME).is_file() and samples_path(run_dir) is not None:
        # a committed report: its samples file alone, graded again
        lock = RunDirLock(run_dir)
        try:
            summary = rebuild_from_samples(run_dir, args.params_b)
        finally:
            lock.release()
        how = f"graded again from {samples_path(run_dir).name}"
    else:
        store = Store(run_dir, create=False, exclusive=True)  # never rewrite outputs under a running sweep
        try:
            summary = write_run_outputs(store, None if args.all else store.get_meta("selection"))
        finally:
            store.close()
        how = "from its store"
    print(format_table(summary) if len(summary) else "no graded samples")
    print(f"rewrote {run_dir}/report.md, summary.csv, the samples file and the curves ({how})")
    return 0


def _cmd_compare(args) -> int:
    from cotbench.report.compare import compare_runs

    summary, table = compare_runs([Path(p) for p in args.run_dirs], Path(args.out), args.pair)
    tested = (table["mcnemar_p"].notna() | table["wilcoxon_p"].notna()).sum()
    print(f"{len(summary)} rows from {len(args.run_dirs)} runs; {tested} of {len(table)} pairs tested "
          f"({int(table['distinguishable'].fillna(False).astype(bool).sum())} distinguishable)")
    print(f"wrote {args.out}/report.md, report.html, comparison.csv, summary.csv and the curves")
    return 0


def _cmd_leaderboard(args) -> int:
    import pandas as pd
    import yaml

    from cotbench.report import leaderboard

    path = Path(args.file)
    if args.action == "add":
        if not args.run_dirs:
            raise CotbenchError("leaderboard add needs a run directory: cotbench leaderboard add runs/NAME [...]")
        for run_dir in map(Path, args.run_dirs):
            summary_path, config_path = run_dir / "summary.csv", run_dir / "config.yaml"
            if not summary_path.is_file():
                raise CotbenchError(f"{run_dir} has no summary.csv; run `cotbench report {run_dir}` first.")
            if not config_path.is_file():
                raise CotbenchError(f"{run_dir} has no config.yaml, so its rows' settings are unknown; "
                                    "only directories `cotbench run` wrote can be added.")
            text = ("model", "model_identity", "valve", "method", "task", "protocol", "base")  # "" is a value there
            columns = pd.read_csv(summary_path, nrows=0).columns
            summary = pd.read_csv(summary_path, keep_default_na=False,
                                  na_values={c: [""] for c in columns if c not in text})
            settings = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
            board, replaced, added = leaderboard.add_summary(path, summary, f"cotbench run {run_dir.name}", settings)
            print(f"{run_dir}: replaced {replaced} rows, added {added} in {path} ({len(board)} rows)")
    elif args.action == "init":
        with leaderboard.locked(path):
            leaderboard.write(leaderboard.merge(leaderboard.read(path), leaderboard.paper_rows())[0], path)
        print(f"{path}: published CoT-Valve rows present")
    else:
        print(leaderboard.read(path).to_string(index=False))
    return 0


def _cmd_grade(args) -> int:
    from cotbench.grading import explain, grader_id

    told = explain(args.response, args.gold, protocol=args.protocol, timeout_s=args.timeout)
    verdict = told.grade
    if args.explain:
        print(f"protocol: {args.protocol} (grader {grader_id(args.protocol)})")
        for step in told.steps:
            print(f"  {step}")
        if told.families:
            print(f"  family rule{'s' if len(told.families) > 1 else ''}: {'; '.join(told.families)}")
        print(f"  took {told.seconds:.3f}s")
    print(f"{verdict.status}: extracted {verdict.extracted!r}, gold {verdict.gold!r} ({verdict.reason})")
    return {"correct": 0, "incorrect": 1}.get(verdict.status, 3)


def _cmd_lm_eval(args) -> int:
    from cotbench.lmeval import TASKS_DIR

    rest = list(args.lm_eval_args)
    if rest[:1] == ["tasks-path"]:
        print(TASKS_DIR)
        return 0
    if rest[:1] == ["import"]:
        sub = argparse.ArgumentParser(prog="cotbench lm-eval import")
        sub.add_argument("lm_eval_dir")
        sub.add_argument("--out", required=True)
        sub.add_argument("--regrade", action="store_true", help="grade again with cotbench's grader")
        sub.add_argument("--tokenizer", help="count responses that carry no token count with this model's tokenizer "
                         "(without it, such samples are refused)")
        opts = sub.parse_args(rest[1:])
        from cotbench.lmeval.shim import import_samples

        out = import_samples(opts.lm_eval_dir, opts.out, opts.regrade, opts.tokenizer)
        print(f"cotbench run written to {out} (report.md, summary.csv); add it with: cotbench leaderboard add {out}")
        return 0
    from cotbench.lmeval.shim import run_lm_eval

    return run_lm_eval(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotbench", description="Accuracy, token counts and ACU of "
                                     "length-compressible chain-of-thought (CoT-Valve) models.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    rep = sub.add_parser("report", help="rebuild tables, curves and report.md from a run directory")
    rep.add_argument("run_dir")
    rep.add_argument("--all", action="store_true", help="every stored sample, not just the last run's selection")
    rep.add_argument("--params-b", dest="params_b", type=float,
                     help="model size in billions, for a directory without a store that does not record it")
    rep.set_defaults(func=_cmd_report)
    cmp = sub.add_parser("compare", help="one report over several run directories: curves overlaid, one Pareto "
                         "front, paired tests across runs on the problems they share")
    cmp.add_argument("run_dirs", nargs="+", metavar="run_dir")
    cmp.add_argument("--out", required=True, help="the comparison's directory (report.md, report.html, comparison.csv)")
    cmp.add_argument("--pair", action="append", default=[], metavar="RUN:ROW=RUN:ROW",
                     help="test these two rows against each other (repeatable); default: each row against its task's "
                          "base row in the first run")
    cmp.set_defaults(func=_cmd_compare)
    board = sub.add_parser("leaderboard", help="leaderboard.csv: add a run's rows, init, or show")
    board.add_argument("action", choices=["add", "show", "init"])
    board.add_argument("run_dirs", nargs="*", metavar="run_dir")
    board.add_argument("--file", default="leaderboard.csv")
    board.set_defaults(func=_cmd_leaderboard)
    lm = sub.add_parser("lm-eval", help="lm_eval with cotbench's `valve` model and tasks; `import DIR --out RUN`; "
                        "`tasks-path`", add_help=False)
    lm.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    lm.set_defaults(func=_cmd_lm_eval)
    from cotbench.valve.commands import add_commands

    add_commands(sub)
    grade = sub.add_parser("grade", help="grade one response against a gold answer (exit 0 correct, 1 incorrect, "
                           "3 timeout or grader error)")
    grade.add_argument("response")
    grade.add_argument("gold")
    grade.add_argument("--protocol", default="math", help="a grading preset (see README: Grading)")
    grade.add_argument("--timeout", type=float, default=5.0, help="seconds for the whole verdict")
    grade.add_argument("--explain", action="store_true",
                       help="print each step: extracted answer, normal forms, the check that decided, time taken")
    grade.set_defaults(func=_cmd_grade)
    return parser


def _stop_on_sigterm():
    """SIGTERM (a scheduler's stop, `kill`) ends the command as Ctrl-C does: workers stopped, everything
    already generated and graded kept, the same command resumes."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _restore_sigterm(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"] or argv[:2] == ["--debug", "lm-eval"]:
        # everything after `lm-eval` belongs to lm_eval's own parser, flags included
        debug = argv[0] == "--debug"
        args = argparse.Namespace(func=_cmd_lm_eval, debug=debug, lm_eval_args=argv[2 if debug else 1:])
    else:
        args = build_parser().parse_args(argv)
    from cotbench.threads import prepare_process

    args.openmp_prepared = prepare_process()  # torch's pool sized to the CPUs we may use, before torch loads
    previous = _stop_on_sigterm()
    try:
        return args.func(args)
    except CotbenchError as exc:
        if args.debug:
            raise
        print(f"cotbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cotbench: interrupted; every stored sample is kept, rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        _restore_sigterm(previous)


if __name__ == "__main__":
    sys.exit(main())
