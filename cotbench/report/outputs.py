"""Everything a run directory shows: samples.jsonl, summary.csv, curves (PNG, SVG) and report.md."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cotbench.files import atomic_write, write_text
from cotbench.report.plots import plot_curves, plot_thinking
from cotbench.report.tables import format_table, summary_frame, write_samples_jsonl
from cotbench.store import Store


def write_run_outputs(store: Store, keys: list[str] | None = None) -> pd.DataFrame:
    """Rebuild every output from the store (``keys``: the samples of the last run; None: all stored)."""
    out = store.run_dir
    run = store.get_meta("run") or {}
    samples = store.samples(keys)
    params_b = run.get("params_b") or run.get("params_b_by_model")  # one model, or several (an lm-eval import)
    write_samples_jsonl(samples, out / "samples.jsonl")
    summary = summary_frame(samples, params_b) if params_b else pd.DataFrame()
    with atomic_write(out / "summary.csv") as handle:
        summary.to_csv(handle, index=False)
    plots = (plot_curves(summary, out) + plot_thinking(summary, out)) if len(summary) else []
    write_text(out / "report.md", _report(summary, run, plots))
    return summary


def _report(summary: pd.DataFrame, run: dict, plots: list[Path]) -> str:
    config = run.get("config", {})
    lines = ["# cotbench report", "",
             f"- model: `{run.get('model_id', config.get('model'))}` ({run.get('n_params', 0):,} parameters; "
             f"ACU uses params_b = {run.get('params_b')})",
             f"- valve: `{run.get('valve_id') or 'none'}`",
             f"- tasks: {', '.join(config.get('tasks', []))}; limit: {config.get('limit')}; "
             f"max_new_tokens: {config.get('max_new_tokens')}; grading protocol: `{config.get('protocol')}`",
             f"- backend: `{json.dumps(run.get('backend', {}))}`", "",
             "ACU = 100 × accuracy[%] / (params[billions] × mean generated tokens), as printed in the CoT-Valve paper.",
             "Generated tokens are counted with the model's own tokenizer: every token produced, the final EOS "
             "included, padding and prompt excluded.", "", "## Summary", ""]
    lines.append(format_table(summary) if len(summary) else "_no graded samples yet_")
    for _, row in summary.iterrows() if len(summary) else ():
        if row.get("median_tokens", 2) <= 1:
            lines += ["", f"**Warning:** most responses of {row['task']} at α = {row['alpha']} are empty (the "
                      "end-of-sequence token alone): check that the model gets its chat template."]
    if len(summary) and (summary["n_timeout"].sum() or summary["n_ungraded"].sum()):
        lines += ["", f"**Warning:** {int(summary['n_timeout'].sum())} verdicts timed out or failed and "
                  f"{int(summary['n_ungraded'].sum())} samples are not graded yet; both are left out of accuracy "
                  "(`n` counts only real verdicts). Rerun the same command to grade them again."]
    for path in plots:
        if path.suffix == ".png":
            lines += ["", f"![{path.stem}]({path.name})"]
    return "\n".join(lines) + "\n"
