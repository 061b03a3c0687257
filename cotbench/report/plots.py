"""ACU-vs-length and accuracy-vs-length curves: one line per model/valve, α written on each point."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cotbench.files import atomic_write
from cotbench.report.tables import point_label


def plot_curves(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """ACU and accuracy against mean tokens: one colour per model/valve/method, 95 % error bars on both axes,
    the base point (α = 0) drawn as a star, incomplete points (samples not graded) hollow, the accuracy
    plot's Pareto front dashed, a log token axis when the lengths span more than 10x, labels that avoid
    each other."""
    summary = summary[summary["n_graded"].fillna(0) > 0] if "n_graded" in summary else summary
    if "method" not in summary:
        summary = summary.assign(method="valve", knob=summary["alpha"])
    written = []
    for metric, ylabel, stem in (("acu", "ACU", "acu_vs_tokens"), ("accuracy_pct", "accuracy (%)", "accuracy_vs_tokens")):
        fig = curve_figure(summary, metric, ylabel)
        for ext in ("png", "svg"):
            path = out_dir / f"{stem}.{ext}"
            with atomic_write(path, "wb", None) as handle:
                fig.savefig(handle, format=ext, dpi=120)
            written.append(path)
    return written


def curve_figure(summary: pd.DataFrame, metric: str, ylabel: str):
    """One panel per task of ``metric`` against mean tokens (see ``plot_curves``)."""
    # A Figure of our own on the Agg canvas: no pyplot state, and the user's matplotlib backend untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = sorted(summary["task"].unique())
    fig = Figure(figsize=(6.0 * len(tasks), 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)
    labels: list = []
    for ax, task in zip(axes[0], tasks):
        rows = summary[summary["task"] == task]
        pending: list = []
        labels.append((ax, pending))
        for colour, ((model, valve, method), curve) in zip(_colours(), rows.groupby(["model", "valve", "method"], sort=True)):
            curve = curve.sort_values("alpha" if method == "valve" else "mean_tokens")  # a valve's curve follows α
            name = model.split(" (")[0] + (f" + {valve}" if valve and method == "valve" else "")
            name += "" if method == "valve" else f" ({method})"
            ax.plot(curve["mean_tokens"], curve[metric], color=colour, linestyle="-" if method == "valve" else "--",
                    linewidth=1.2, label=name)
            for _, r in curve.iterrows():
                _point(ax, r, metric, colour)
                pending.append((r, method))
        if metric == "accuracy_pct" and "on_pareto" in rows and rows["on_pareto"].fillna(False).astype(bool).sum() > 1:
            front = rows[rows["on_pareto"].fillna(False).astype(bool)].sort_values("mean_tokens")
            ax.plot(front["mean_tokens"], front[metric], color="0.5", linestyle=":", linewidth=1.0,
                    label="Pareto front")
        tokens = rows["mean_tokens"].dropna()
        if len(tokens) and tokens.min() > 0 and tokens.max() / tokens.min() > 10:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.relim()
        ax.autoscale_view()
        ax.set_title(task)
        ax.set_xlabel("mean generated tokens (95 % CI)")
        ax.set_ylabel(f"{ylabel} (95 % CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.text(0.01, 0.01, "★ base (α = 0)   ○ hollow: samples not graded yet", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    renderer = fig.canvas.get_renderer()
    for ax, pending in labels:  # after the layout is final: labels are placed by their drawn extents
        placed: list = []
        for r, method in pending:
            _label(ax, r, metric, placed, method, renderer)
    return fig


def _colours():
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    while True:
        yield from palette


def _errors(r, column: str, prefix: str):
    low, high = r.get(f"{prefix}_low"), r.get(f"{prefix}_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return None
    return [[max(0.0, r[column] - low)], [max(0.0, high - r[column])]]


def _point(ax, r, metric: str, colour) -> None:
    prefix = {"acu": "acu_ci", "accuracy_pct": "accuracy_ci"}[metric]
    base = r.get("method", "valve") == "valve" and r.get("alpha") == 0.0
    hollow = not bool(r.get("complete", True))
    ax.errorbar([r["mean_tokens"]], [r[metric]], xerr=_errors(r, "mean_tokens", "mean_tokens_ci"),
                yerr=_errors(r, metric, prefix), fmt="*" if base else "o", markersize=10 if base else 5,
                color=colour, markerfacecolor="none" if hollow else colour, elinewidth=0.8, capsize=2)


def _label(ax, r, metric: str, placed: list, method: str, renderer) -> None:
    """α (or the budget) beside its point, at the first offset where its drawn box overlaps no label already
    placed (nor leaves the axes); the last offset tried when every one collides."""
    knob = r["alpha"] if method == "valve" else r.get("knob")
    if method != "nothink" and (knob is None or pd.isna(knob)):
        return
    text = "nothink" if method == "nothink" else (f"α={knob:g}" if method == "valve" else f"N={knob:g}")
    frame = ax.get_window_extent(renderer)
    offsets = [(dx, dy) for dy in (4, -11, 13, -20, 22, -29, 31) for dx in (4, -4 - 5 * len(text))]
    for i, (dx, dy) in enumerate(offsets):
        label = ax.annotate(text, (r["mean_tokens"], r[metric]), textcoords="offset points", xytext=(dx, dy),
                            fontsize=7)
        box = label.get_window_extent(renderer)
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        if (inside and not any(box.overlaps(b) for b in placed)) or i == len(offsets) - 1:
            placed.append(box)
            return
        label.remove()


def plot_thinking(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """For reasoning models: mean thinking and answer tokens at each point, stacked (nothing without thinking)."""
    if "mean_thinking_tokens" not in summary or not summary["mean_thinking_tokens"].notna().any():
        return []
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = summary[summary["mean_thinking_tokens"].notna()].reset_index(drop=True)
    labels = [f"{r['task']} {r.get('method', 'valve')} "
              + (f"α={r['alpha']:g}" if r.get("method", "valve") == "valve" and not pd.isna(r["alpha"])
                 else "" if pd.isna(r.get("knob")) else f"N={r['knob']:g}") for _, r in rows.iterrows()]
    fig = Figure(figsize=(max(5.0, 0.6 * len(rows) + 2), 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(range(len(rows)), rows["mean_thinking_tokens"], label="thinking")
    ax.bar(range(len(rows)), rows["mean_answer_tokens"], bottom=rows["mean_thinking_tokens"], label="answer")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean generated tokens")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written = []
    for ext in ("png", "svg"):
        path = out_dir / f"thinking_vs_answer_tokens.{ext}"
        with atomic_write(path, "wb", None) as handle:
            fig.savefig(handle, format=ext, dpi=120)
        written.append(path)
    return written


def plot_lengths(samples, out_dir: Path) -> list[Path]:
    """The distribution of generated tokens at each point (a violin per point, one panel per task)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_task: dict = {}
    for s in samples:
        label = point_label({"method": s.method, "alpha": s.alpha if s.alpha is not None else float("nan"),
                        "knob": s.knob if s.knob is not None else float("nan")})
        label = label if s.method == "valve" else f"{s.method} {label}"
        by_task.setdefault(s.problem.task, {}).setdefault((s.valve, s.method, s.knob if s.knob is not None else -1, label),
                                                          []).append(s.generation.n_generated_tokens)
    if not by_task:
        return []
    fig = Figure(figsize=(max(6.0, 1.1 * max(len(v) for v in by_task.values()) + 2) * len(by_task), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(by_task), squeeze=False)
    for ax, (task, points) in zip(axes[0], sorted(by_task.items())):
        keys = sorted(points, key=lambda k: (k[1], k[2]))
        data = [points[k] for k in keys]
        ax.violinplot(data, showmedians=True)
        ax.set_xticks(range(1, len(keys) + 1), [k[3] for k in keys], rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{task}: generated tokens per response")
        ax.set_ylabel("generated tokens")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    written = []
    for ext in ("png", "svg"):
        path = out_dir / f"token_lengths.{ext}"
        with atomic_write(path, "wb", None) as handle:
            fig.savefig(handle, format=ext, dpi=120)
        written.append(path)
    return written
