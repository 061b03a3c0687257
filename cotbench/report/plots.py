"""ACU-vs-length and accuracy-vs-length curves: one line per model/valve, α written on each point."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cotbench.files import atomic_write


def plot_curves(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    # A Figure of our own on the Agg canvas: no pyplot state, and the user's matplotlib backend untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    tasks = sorted(summary["task"].unique())
    for metric, label, stem in (("acu", "ACU", "acu_vs_tokens"), ("accuracy_pct", "accuracy (%)", "accuracy_vs_tokens")):
        fig = Figure(figsize=(5.5 * len(tasks), 4.2))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(tasks), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            rows = summary[summary["task"] == task]
            if "method" not in rows:
                rows = rows.assign(method="valve", knob=rows["alpha"])
            for (model, valve, method), curve in rows.groupby(["model", "valve", "method"], sort=True):
                curve = curve.sort_values("mean_tokens")
                name = model.split(" (")[0] + (f" + {valve}" if valve and method == "valve" else "")
                name += "" if method == "valve" else f" ({method})"
                ax.plot(curve["mean_tokens"], curve[metric], marker="o" if method == "valve" else "s",
                        linestyle="-" if method == "valve" else "--", label=name)
                for _, r in curve.iterrows():
                    tag = {"valve": "α={:g}", "nothink": "nothink"}.get(method, "N={:g}")
                    knob = r["alpha"] if method == "valve" else r["knob"]
                    if method == "nothink" or not pd.isna(knob):
                        ax.annotate(tag.format(knob) if "{" in tag else tag, (r["mean_tokens"], r[metric]),
                                    textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_title(task)
            ax.set_xlabel("mean generated tokens")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        for ext in ("png", "svg"):
            path = out_dir / f"{stem}.{ext}"
            with atomic_write(path, "wb", None) as handle:
                fig.savefig(handle, format=ext, dpi=120)
            written.append(path)
    return written


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
