"""Everything a run directory shows: the samples file, summary.csv, curves (PNG, SVG), report.md, report.html and
run.json (model, size, engine: what a rebuild from the samples file alone needs)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cotbench.files import atomic_write, write_text
from cotbench.report.html import write_html_report
from cotbench.report.plots import plot_curves, plot_lengths, plot_thinking
from cotbench import stats
from cotbench.report.analysis import budget_curves, group_rows, pass_at_k_table
from cotbench.report.samples_file import write_samples
from cotbench.report.tables import efficiency_table, findings, format_table, summary_frame
from cotbench.store import Store


def write_run_outputs(store: Store, keys: list[str] | None = None) -> pd.DataFrame:
    """Rebuild every output from the store (``keys``: the samples of the last run; None: all stored)."""
    out = store.run_dir
    run = store.get_meta("run") or {}
    samples = store.samples(keys)
    params_b = run.get("params_b") or run.get("params_b_by_model")  # one model, or several (an lm-eval import)
    write_samples(samples, out)
    write_text(out / "run.json", json.dumps(run, indent=1, ensure_ascii=False) + "\n")
    summary = summary_frame(samples, params_b) if params_b else pd.DataFrame()
    with atomic_write(out / "summary.csv") as handle:
        summary.to_csv(handle, index=False)
    plots = (plot_curves(summary, out) + plot_thinking(summary, out) + plot_lengths(samples, out)) if len(summary) else []
    groups = group_rows(samples)
    curves = budget_curves(groups)
    with atomic_write(out / "accuracy_under_budget.csv") as handle:  # accuracy if responses were cut at B tokens
        curves.to_csv(handle, index=False)
    passes = pass_at_k_table(groups)
    if len(passes):  # rows with K samples per problem: pass@k for every k up to K
        with atomic_write(out / "pass_at_k.csv") as handle:
            passes.to_csv(handle, index=False)
    else:
        (out / "pass_at_k.csv").unlink(missing_ok=True)
    write_text(out / "report.md", _report(summary, run, plots, store.get_meta("alpha_search"), determinism(samples)))
    write_html_report(out, summary, samples, run, [p for p in plots if p.suffix == ".svg"])
    return summary


def determinism(samples) -> str:
    """One line on whether the samples' tokens could depend on batch size, batch mates, scheduler or threads,
    from each sample's numerics record (the engine's own account: HFBackend.why_not_deterministic)."""
    records = {}
    for s in samples:
        try:
            record = json.loads(s.numerics) if s.numerics else {}
        except ValueError:
            record = {}
        flag = record.get("deterministic")
        records.setdefault(flag, []).append(record.get("because"))
    n = sum(len(v) for v in records.values())
    if not n:
        return ""
    if set(records) == {True}:
        return ("- generation: deterministic: each sample's tokens depend on its prompt, α, the model and the "
                "settings alone, not on batch size, batch mates, scheduler or threads (on this machine and dtype)")
    if False in records:
        because = sorted({b for b in records[False] if b})
        return (f"- generation: not deterministic for {len(records[False])} of {n} samples ({'; '.join(because)}): "
                "greedy text can differ by rounding with batch size, batch mates, scheduler or threads")
    return ("- generation: whether it was deterministic is not recorded for "
            f"{len(records.get(None, []))} of {n} samples (another engine, or a run from before cotbench recorded it)")


def _report(summary: pd.DataFrame, run: dict, plots: list[Path], search: dict | None = None,
            generation: str = "") -> str:
    config = run.get("config", {})
    lines = ["# cotbench report", "",
             f"- model: `{run.get('model_id', config.get('model'))}` ({run.get('n_params', 0):,} parameters; "
             f"ACU uses params_b = {run.get('params_b')})",
             f"- valve: `{run.get('valve_id') or 'none'}`",
             f"- tasks: {', '.join(config.get('tasks', []))}; limit: {config.get('limit')}; "
             f"max_new_tokens: {config.get('max_new_tokens')}; grading protocol: `{config.get('protocol')}`",
             f"- backend: `{json.dumps(run.get('backend', {}))}`", *([generation] if generation else []), "",
             "ACU = 100 × accuracy[%] / (params[billions] × mean generated tokens), as printed in the CoT-Valve paper.",
             "Generated tokens are counted with the model's own tokenizer: every token produced, the final EOS "
             "included, padding and prompt excluded.", "", "## Summary", ""]
    lines.append(format_table(summary) if len(summary) else "_no graded samples yet_")
    if len(summary):
        lines += ["", "Intervals: Wilson for accuracy; bootstrap over problems (percentile, "
                  f"{stats.N_RESAMPLES} resamples, seed {stats.SEED}) for tokens and the paired comparisons; for ACU "
                  "the bootstrap widened to hold ACU at the Wilson bounds (at 0 or n of n correct: the Wilson bounds "
                  "over the mean-length interval); McNemar's exact test on the problems whose verdict differs from "
                  "the base's, with Holm's correction over each curve's comparisons (the p shown; `distinguishable` "
                  "uses it). A point marked * has samples not graded yet (or timed out): its figures cover the "
                  "judged samples only."]
        if (summary["samples_per_problem"].fillna(1) > 1).any():
            lines += ["", "K samples per problem (`--samples`): accuracy is pass@1 averaged over the samples; its "
                      "interval, the mean length's and ACU's are a clustered bootstrap (problems resampled, then "
                      "samples within each drawn problem); comparisons with the base use each problem's mean "
                      "accuracy (clustered paired bootstrap, Wilcoxon's signed-rank test with zero differences "
                      "split, Holm-adjusted). pass@K is the unbiased estimator (Chen et al., 2021), pass@k for every "
                      "k ≤ K in pass_at_k.csv; maj@K votes on answers grouped by the grader's equivalence."]
        lines += ["", "## Where accuracy per token goes", "",
                  "Accuracy = (share that ended on their own) × (accuracy given completion) + (share cut at the cap) × "
                  "(accuracy of cut responses). Against the base, on the same problems, the accuracy change splits "
                  "exactly into what a changed completion rate did (truncation) and what changed answers did (wrong "
                  "answers); with the length ratio, a reader sees whether a point loses by truncation, by wrong "
                  "answers or gains only by brevity.", "", efficiency_table(summary)]
        said = findings(summary)
        if said:
            lines += ["", "## Against the base", "", *said]
        rho = summary.dropna(subset=["length_spearman_rho"]) if "length_spearman_rho" in summary else summary.iloc[:0]
        for (task, model, valve), g in rho.groupby(["task", "model", "valve"]):
            r = g.iloc[0]
            lines.append(f"- {task}, {valve or model}: length follows α with Spearman ρ = {r['length_spearman_rho']:.2f} "
                         f"[{r['length_spearman_ci_low']:.2f}, {r['length_spearman_ci_high']:.2f}] over {len(g)} α values.")
    if search:
        from cotbench.alpha_search import describe

        lines += ["", "## How the α points were chosen", "", *describe(search)]
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

