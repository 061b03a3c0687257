"""Several run directories in one report: `cotbench compare RUN [RUN ...] --out DIR`.

Each run's rows keep their own figures (and their comparisons with their own base); the report overlays every
curve per task (one colour per run × model × valve × method), draws one Pareto front over all of them, and
tests rows of different runs against each other on the problems they share. A problem is shared when its task
and id match **and** its question and gold are the same text in both runs; problems that differ are left out
and counted. Rows graded by different graders are not tested against each other (their verdicts are not the
same measurement), and the report says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from cotbench import metrics
from cotbench.methods import METHODS
from cotbench.errors import CotbenchError
from cotbench.files import atomic_write, write_text
from cotbench.records import Sample
from cotbench.report.analysis import by_problem, against_base, group_rows, judged, mark_distinguishable, paired_p
from cotbench.report.html import write_html_report
from cotbench.report.plots import plot_curves
from cotbench.report.rebuild import recorded_size
from cotbench.report.samples_file import read_records, sample_from_record, samples_path
from cotbench.report.tables import format_table, point_label, summary_frame
from cotbench.store import DB_NAME, Store

PAIR_COLUMNS = ["task", "row", "against", "n_shared", "n_differing", "same_grader", "n_paired", "accuracy_change_pct",
                "accuracy_change_ci_low", "accuracy_change_ci_high", "mcnemar_p", "mcnemar_p_holm", "wilcoxon_p",
                "wilcoxon_p_holm", "distinguishable", "token_reduction_ratio", "token_reduction_ci_low", "token_reduction_ci_high", "aes",
                "accuracy_change_by_completion_pct", "accuracy_change_by_answers_pct", "detectable_difference_pct",
                "problems_needed"]


@dataclass(frozen=True)
class Run:
    name: str  # how rows of this run are labelled: the directory's name, made unique
    samples: list[Sample]
    params_b: float


def load_run(path: Path, name: str) -> Run:
    """Every graded sample of a run directory: from its store, else from its samples file (a committed report)."""
    if (path / DB_NAME).is_file():
        store = Store(path, create=False)
        try:
            samples, meta = store.samples(), store.get_meta("run") or {}
        finally:
            store.close()
    elif samples_path(path) is not None:
        samples = [sample_from_record(r, with_grade=True) for r in read_records(path)]
        meta = json.loads((path / "run.json").read_text(encoding="utf-8")) if (path / "run.json").is_file() else {}
    else:
        raise CotbenchError(f"{path} is not a cotbench run directory (no {DB_NAME} and no samples file)")
    params_b = recorded_size(path, meta)
    if not params_b:
        raise CotbenchError(f"{path} does not record its model's size: run `cotbench report {path} --params-b B` first")
    label = lambda s: replace(s, model=f"{name}: {s.model.split(' (')[0]}")  # noqa: E731
    return Run(name, [label(s) for s in samples], float(params_b))


def run_names(paths: Sequence[Path]) -> list[str]:
    """Directory names, with a parent folder added where two are alike."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def compare_runs(paths: Sequence[Path], out: Path, pairs: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    if len(paths) < 2:
        raise CotbenchError("compare needs at least two run directories")
    runs = [load_run(Path(p), n) for p, n in zip(paths, run_names(paths))]
    summary = pd.concat([summary_frame(r.samples, r.params_b).assign(run=r.name) for r in runs], ignore_index=True)
    for task, rows in summary.groupby("task"):  # one front over every run's points
        summary.loc[rows.index, "on_pareto"] = metrics.pareto_front(list(zip(rows["mean_tokens"], rows["accuracy_pct"])))
    groups = {k: v for r in runs for k, v in group_rows(r.samples).items()}
    chosen = [_parse_pair(p, runs) for p in pairs] if pairs else _default_pairs(runs, groups)
    table = _paired_table(chosen, groups)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "summary.csv") as handle:
        summary.to_csv(handle, index=False)
    with atomic_write(out / "comparison.csv") as handle:
        table.to_csv(handle, index=False)
    plots = plot_curves(summary, out)
    write_text(out / "report.md", _markdown(runs, paths, summary, table, plots))
    samples = [s for r in runs for s in r.samples]
    write_html_report(out, summary, samples, {"model_id": ", ".join(r.name for r in runs), "valve_id": "per run",
                                              "config": {"tasks": sorted(summary["task"].unique())}},
                      [p for p in plots if p.suffix == ".svg"])
    return summary, table


def _default_pairs(runs: list[Run], groups: dict) -> list[tuple[tuple, tuple]]:
    """Each row of every run against its task's base row in the first run (its α = 0, else its first row)."""
    first = group_rows(runs[0].samples)
    bases = {}
    for key in first:
        task = key[-1]
        is_base = key[3] == "valve" and key[2] == 0.0
        if task not in bases or (is_base and not (bases[task][3] == "valve" and bases[task][2] == 0.0)):
            bases[task] = key
    return [(key, bases[key[-1]]) for key in groups if key[-1] in bases and key != bases[key[-1]]]


def _parse_pair(text: str, runs: list[Run]) -> tuple[tuple, tuple]:
    """RUN:ROW=RUN:ROW, a row written as its point (α=0.5, alpha=0.5, N=100, nothink), TASK/POINT where a run has
    several tasks, METHOD:N=100 where several methods share a budget. Rows hold "=" too: the split is the one
    '=' whose two sides both name a row."""
    for i, char in enumerate(text):
        if char == "=":
            try:
                return _find_row(text[:i], runs), _find_row(text[i + 1:], runs)
            except CotbenchError:
                continue
    raise CotbenchError(f"--pair {text!r}: write RUN:ROW=RUN:ROW with rows as the report labels them, e.g. "
                        f"--pair {runs[0].name}:α=0.5={runs[1].name}:α=0 (runs: {', '.join(r.name for r in runs)})")


def _find_row(text: str, runs: list[Run]) -> tuple:
    run_name, _, row = text.rpartition(":")
    method = None
    if ":" in run_name and run_name.rpartition(":")[2] in METHODS:
        run_name, _, method = run_name.rpartition(":")
    matches = [r for r in runs if r.name == run_name or Path(r.name).name == run_name]
    if len(matches) != 1:
        raise CotbenchError(f"--pair: no run named {run_name!r} (runs: {', '.join(r.name for r in runs)})")
    task, _, point = row.rpartition("/")
    for spelled in ("alpha=", "a="):
        if point.startswith(spelled):
            point = "α=" + point[len(spelled):]
    point = f"α={float(point[2:]):g}" if point.startswith("α=") and _number(point[2:]) else point
    point = f"N={float(point[2:]):g}" if point.startswith("N=") and _number(point[2:]) else point
    found = [key for key in group_rows(matches[0].samples)
             if point_label(_row_dict(key)) == point and (not task or key[-1] == task) and (not method or key[3] == method)]
    if len(found) != 1:
        raise CotbenchError(f"--pair: {text!r} names {len(found)} rows of {run_name}; add TASK/ or METHOD: to pick one")
    return found[0]


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _row_dict(key: tuple) -> dict:
    model, valve, alpha, method, knob, task = key
    return {"method": method, "alpha": float("nan") if alpha is None else alpha,
            "knob": float("nan") if knob is None else knob}


def _paired_table(chosen: list[tuple[tuple, tuple]], groups: dict) -> pd.DataFrame:
    """Each chosen pair through the same paired comparison a run makes with its base (``against_base``), on the
    problems both rows hold with the same question and gold."""
    rows = []
    for mine, theirs in chosen:
        a, b = by_problem(groups[mine]), by_problem(groups[theirs])
        common = set(a) & set(b)
        shared = sorted(k for k in common if (a[k][0].problem.question, a[k][0].problem.gold)
                        == (b[k][0].problem.question, b[k][0].problem.gold))
        graders = {s.grade.protocol for s in judged(groups[mine]) + judged(groups[theirs])}
        row = {"task": mine[-1], "row": _label(mine), "against": _label(theirs), "n_shared": len(shared),
               "n_differing": len(common) - len(shared), "same_grader": len(graders) <= 1}
        if row["same_grader"]:
            row.update(against_base([s for k in shared for s in a[k]], [s for k in shared for s in b[k]]))
        rows.append(row)
    table = pd.DataFrame(rows, columns=PAIR_COLUMNS).astype({"distinguishable": object, "mcnemar_p_holm": object,
                                                                  "wilcoxon_p_holm": object})
    mark_distinguishable(table, ["task", "against"])  # Holm over the comparisons with one row
    return table


def _label(key: tuple) -> str:
    model, valve, alpha, method, knob, task = key
    point = point_label(_row_dict(key))
    return f"{model}{' + ' + valve if valve else ''}, {point if method == 'valve' else method + ' ' + point}"


def _markdown(runs: list[Run], paths, summary: pd.DataFrame, table: pd.DataFrame, plots: list[Path]) -> str:
    lines = ["# cotbench comparison", ""]
    lines += [f"- `{r.name}`: {p} ({len(r.samples)} samples, params_b = {r.params_b:g})" for r, p in zip(runs, paths)]
    lines += ["", "## Rows", "", format_table(summary), "", "## Paired comparisons across runs", "",
              "Each on the problems both rows answered with the same question and gold; McNemar's exact test (Wilcoxon's "
              "signed-rank test on per-problem mean accuracy where rows hold K samples per problem) with "
              "Holm's correction over the comparisons with one row; paired bootstrap intervals.", "",
              "| task | row | against | shared problems | left out (question or gold differ) | Δaccuracy [95% CI] | "
              "McNemar p (Holm) | distinguishable | × shorter [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        test, _, p_holm = paired_p(r)
        if p_holm is None:
            why = "different graders: not compared" if not r["same_grader"] else "fewer than 2 shared problems"
            lines.append(f"| {r['task']} | {r['row']} | {r['against']} | {r['n_shared']} | {r['n_differing']} | {why} | | | |")
            continue
        lines.append(f"| {r['task']} | {r['row']} | {r['against']} | {r['n_shared']} | {r['n_differing']} | "
                     f"{r['accuracy_change_pct']:+.1f} [{r['accuracy_change_ci_low']:+.1f}, {r['accuracy_change_ci_high']:+.1f}] | "
                     f"{p_holm:.3g}{'' if test.startswith('McNemar') else ' (Wilcoxon)'} | {'yes' if r['distinguishable'] else 'no'} | "
                     f"{r['token_reduction_ratio']:.2f} [{r['token_reduction_ci_low']:.2f}, {r['token_reduction_ci_high']:.2f}] |")
    if table["n_differing"].sum():
        lines += ["", f"**Note:** {int(table['n_differing'].sum())} problem pairings were left out because the runs hold "
                  "the same id with another question or gold (another dataset version or split)."]
    if (~table["same_grader"].astype(bool)).any():
        lines += ["", "**Note:** some rows were graded by different graders (protocol or version); they are shown "
                  "side by side but not tested against each other. Regrade one run (`cotbench run ... --protocol P` "
                  "on its directory) to compare them."]
    lines += [f"\n![{p.stem}]({p.name})" for p in plots if p.suffix == ".png"]
    return "\n".join(lines) + "\n"
