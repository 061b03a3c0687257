"""Named suites: a documented set of runs with fixed settings (``cotbench run --suite NAME``), each entry its own
run directory under ``--out``, and one table over them in the paper's layout beside its published rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cotbench.errors import ConfigError
from cotbench.files import atomic_write, write_text


@dataclass(frozen=True)
class Entry:
    name: str  # its run directory under the suite's --out
    settings: dict[str, Any]  # RunConfig settings the suite fixes
    source: str  # where each setting comes from: the paper, or ours where the paper does not say


@dataclass(frozen=True)
class Suite:
    description: str
    entries: tuple[Entry, ...]
    # the settings every entry fixes, so a flag cannot change them unnoticed
    fixed: tuple[str, ...] = field(default=("tasks", "split", "limit", "max_new_tokens", "samples", "temperature",
                                            "top_p", "protocol", "alphas", "n_generated", "method", "budgets"))


SUITES = {
    "cotvalve": Suite(
        "The CoT-Valve paper's evaluation as far as it states it: GSM8K's whole test set (1,319 problems) and "
        "AIME24 (30), one greedy response each, answers read from the last \\boxed{} else the last number (the "
        "`paper` protocol), α from 0 to 1. The paper states no generation cap and no sampling settings: the caps are "
        "ours (2,048 tokens on GSM8K, where QwQ-32B-Preview averages 741; 16,384 on AIME, where it averages 6,827), "
        "as is greedy decoding. It does not evaluate MATH-500, so this suite has no MATH-500 entry.",
        (Entry("gsm8k", {"tasks": ("gsm8k",), "split": "test", "limit": None, "max_new_tokens": 2048,
                         "protocol": "paper", "alphas": (0.0, 0.25, 0.5, 0.75, 1.0)},
               "paper: task, split, all problems, protocol, α range; ours: the 2,048-token cap, greedy"),
         Entry("aime24", {"tasks": ("aime24",), "split": None, "limit": None, "max_new_tokens": 16384,
                          "protocol": "paper", "alphas": (0.0, 0.25, 0.5, 0.75, 1.0)},
               "paper: task, all 30 problems, protocol, α range; ours: the 16,384-token cap, greedy"))),
    "quick": Suite(
        "A few minutes on a CPU, offline (the embedded arithmetic task): a greedy α sweep, and the same task with two "
        "sampled responses per problem (temperature 0.6, top-p 0.95). A smoke test of the whole path, run in CI; "
        "its figures are not a benchmark.",
        (Entry("arithmetic", {"tasks": ("arithmetic",), "n_generated": 10, "max_new_tokens": 128,
                              "alphas": (0.0, 0.5, 1.0)}, "ours"),
         Entry("arithmetic-k2", {"tasks": ("arithmetic",), "n_generated": 6, "max_new_tokens": 128, "alphas": (0.0, 1.0),
                                 "samples": 2, "temperature": 0.6, "top_p": 0.95}, "ours"))),
}


def suite(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"suite must be one of {', '.join(SUITES)}, got {name!r}")
    return SUITES[name]


def entry_configs(name: str, settings: dict[str, Any], out: Path) -> list:
    """The RunConfig of each entry: the user's settings (model, valve, engine, ...) with the suite's on top; a
    setting the suite fixes given by the user too is refused rather than silently overridden."""
    from cotbench.config import build_config

    chosen = suite(name)
    clash = sorted(k for k in chosen.fixed if settings.get(k) is not None)
    if clash:
        raise ConfigError(f"--suite {name} fixes {', '.join(clash)}: drop "
                          + ", ".join("--" + k.replace("_", "-") for k in clash)
                          + " (or run `cotbench run` without --suite to choose them)")
    return [build_config(None, **{**settings, **entry.settings, "out": str(out / entry.name)})
            for entry in chosen.entries]


PAPER_COLUMNS = ["entry", "task", "model", "valve", "point", "n", "samples_per_problem", "accuracy_pct",
                 "accuracy_ci_low", "accuracy_ci_high", "mean_tokens", "acu", "source"]


def suite_table(name: str, summaries: dict[str, pd.DataFrame], model_name: str) -> pd.DataFrame:
    """One row per entry, task and point in the paper's layout (accuracy, tokens, ACU), then the published rows
    of ``paper_rows.csv`` for the same base model and tasks (none for a model the paper did not evaluate)."""
    from cotbench.report.leaderboard import paper_rows
    from cotbench.report.tables import point_label

    rows = []
    for entry in suite(name).entries:
        frame = summaries.get(entry.name)
        for _, r in (frame.iterrows() if frame is not None else ()):
            rows.append({"entry": entry.name, "task": r["task"], "model": r["model"], "valve": r["valve"],
                         "point": point_label(r), "n": r.get("n_graded"),
                         "samples_per_problem": r.get("samples_per_problem"), "accuracy_pct": r.get("accuracy_pct"),
                         "accuracy_ci_low": r.get("accuracy_ci_low"), "accuracy_ci_high": r.get("accuracy_ci_high"),
                         "mean_tokens": r.get("mean_tokens"), "acu": r.get("acu"), "source": f"this run ({entry.source})"})
    tasks = {r["task"] for r in rows}
    published = paper_rows()
    stem = Path(model_name).name.lower().replace(".gguf", "")
    for _, p in published.iterrows():
        if p["task"] in tasks and stem and (stem in p["model"].lower() or p["model"].lower() in stem):
            rows.append({"entry": "published", "task": p["task"], "model": p["model"], "valve": p["valve"],
                         "point": "-", "n": p["n"], "samples_per_problem": None, "accuracy_pct": p["accuracy_pct"],
                         "accuracy_ci_low": None, "accuracy_ci_high": None, "mean_tokens": p["mean_tokens"],
                         "acu": 100 * p["accuracy_pct"] / (p["params_b"] * p["mean_tokens"]), "source": p["source"]})
    return pd.DataFrame(rows, columns=PAPER_COLUMNS)


def write_suite_report(name: str, table: pd.DataFrame, out: Path) -> None:
    with atomic_write(out / "suite.csv") as handle:
        table.to_csv(handle, index=False)
    lines = [f"# cotbench suite `{name}`", "", suite(name).description, "",
             "| entry | task | model | valve | point | responses | K | accuracy % [95% CI] | mean tokens | ACU | source |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        ci = "" if pd.isna(r["accuracy_ci_low"]) else f" [{r['accuracy_ci_low']:.1f}, {r['accuracy_ci_high']:.1f}]"
        k = "" if pd.isna(r["samples_per_problem"]) else str(int(r["samples_per_problem"]))
        lines.append(f"| {r['entry']} | {r['task']} | {r['model']} | {r['valve'] or '-'} | {r['point']} | "
                     f"{'' if pd.isna(r['n']) else int(r['n'])} | {k} | {r['accuracy_pct']:.1f}{ci} | "
                     f"{r['mean_tokens']:.1f} | {r['acu']:.3f} | {r['source']} |")
    if not (table["entry"] == "published").any():
        lines += ["", "No published rows for this model in `paper_rows.csv`: the paper evaluated other models."]
    lines += ["", "Each entry's own report: " + ", ".join(f"[{e.name}]({e.name}/report.md)" for e in suite(name).entries)]
    write_text(out / "suite.md", "\n".join(lines) + "\n")


def run_suite(name: str, settings: dict[str, Any], out: Path, progress: bool = True) -> pd.DataFrame:
    """Every entry in turn (one engine for all when they share model, valve and engine settings), then the table."""
    from cotbench.backends import make_backend
    from cotbench.runner import run_sweep

    configs = entry_configs(name, settings, out)
    backend, made_for = None, None
    summaries = {}
    try:
        for entry, config in zip(suite(name).entries, configs):
            engine = _engine_settings(config)
            if backend is not None and engine != made_for:
                backend.close()
                backend = None
            if backend is None and config.ray is None:
                backend, made_for = make_backend(config), engine
            summaries[entry.name] = run_sweep(config, backend=backend, progress=progress).summary
    finally:
        if backend is not None:
            backend.close()
    model_name = configs[0].model
    table = suite_table(name, summaries, model_name)
    write_suite_report(name, table, out)
    return table


def _engine_settings(config) -> dict:
    """What a loaded engine depends on: entries that agree on these share one."""
    keep = ("model", "valve", "backend", "device", "dtype", "batch_size", "scheduler", "threads", "engine_args",
            "vllm_python", "base_url", "served_model", "alpha_model", "max_concurrency", "seed")
    return {k: getattr(config, k) for k in keep}
