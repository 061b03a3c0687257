"""leaderboard.csv: one row per result (task × method × point, under one set of settings), sorted by ACU
within task. A row's ``settings`` is ``keys.result_digest`` of its run's config.yaml and the model's identity
(its content, where the run recorded it): model, valve, problems and limit, token cap, prompt, sampling,
grading protocol, params. Adding a run replaces exactly the
rows with its own settings and points, and adds rows beside those of the same model under other settings.
The paper's published rows come from a source file."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from cotbench.errors import CotbenchError
from cotbench.files import atomic_write, locked
from cotbench.keys import result_digest
from cotbench.metrics import acu

COLUMNS = ["task", "model", "valve", "alpha", "method", "knob", "params_b", "n", "complete", "accuracy_pct",
           "accuracy_ci", "mean_tokens", "acu", "acu_ci", "protocol", "max_new_tokens", "limit", "sampling", "settings",
           "source", "date"]
# a published row's settings are its source; a run's, the digest of everything that changes its numbers
KEY = ["task", "model", "valve", "alpha", "method", "knob", "settings"]
PAPER_ROWS = Path(__file__).with_name("paper_rows.csv")


def paper_rows() -> pd.DataFrame:
    rows = pd.read_csv(PAPER_ROWS, keep_default_na=False, na_values={"alpha": [""]})
    rows["acu"] = [round(acu(a, p, t), 3) for a, p, t in zip(rows["accuracy_pct"], rows["params_b"], rows["mean_tokens"])]
    rows["date"] = "2025-02-13"  # arXiv v1 of the paper
    rows["settings"] = rows["source"]
    return _with_method(rows)[COLUMNS]


def _with_method(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows written before the method columns existed are valve points, their knob the α."""
    frame = frame.copy()
    if "method" not in frame:
        frame["method"] = "valve"
    if "knob" not in frame:
        frame["knob"] = frame["alpha"]
    for column in ("accuracy_ci", "acu_ci", "complete", "max_new_tokens", "limit", "sampling"):  # none for published rows
        if column not in frame:
            frame[column] = ""
    if "settings" not in frame:  # written before rows carried their settings: each row its own source's
        frame["settings"] = frame["source"]
    return frame


def read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return paper_rows()
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in ("alpha", "acu", "knob")},
                            dtype={c: str for c in ("accuracy_ci", "acu_ci", "complete", "max_new_tokens", "limit",
                                                    "sampling", "settings")})
    except Exception as exc:
        raise CotbenchError(f"cannot read leaderboard {path}: {exc}") from None
    frame = _with_method(frame)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise CotbenchError(f"{path} is not a cotbench leaderboard (missing columns: {', '.join(missing)}).")
    return frame[COLUMNS]


def rows_from_summary(summary: pd.DataFrame, source: str, settings: dict) -> pd.DataFrame:
    """Leaderboard rows of a run's summary.csv; ``settings``: the run's config.yaml."""
    rows = summary[summary["n_graded"] > 0].copy() if "n_graded" in summary else summary.copy()
    identities = rows["model_identity"] if "model_identity" in rows else [""] * len(rows)
    rows["settings"] = [result_digest(settings, "" if pd.isna(m) else str(m)) for m in identities]
    rows["max_new_tokens"] = "" if settings.get("max_new_tokens") is None else str(settings["max_new_tokens"])
    rows["limit"] = "" if settings.get("limit") is None else str(settings["limit"])
    rows["sampling"] = sampling_label(settings)
    if "n_graded" in rows:  # n: the samples the accuracy is over; complete: no sample left ungraded or timed out
        rows["n"] = rows["n_graded"].astype(int)
        rows["complete"] = rows["complete"].map(lambda c: "yes" if bool(c) else "no")
    rows["source"] = source
    rows["date"] = date.today().isoformat()
    for col, digits in (("accuracy_pct", 2), ("mean_tokens", 1), ("acu", 4), ("params_b", 4)):
        rows[col] = rows[col].round(digits)
    for column, prefix, digits in (("accuracy_ci", "accuracy_ci", 2), ("acu_ci", "acu_ci", 4)):
        if f"{prefix}_low" in rows:
            rows[column] = [f"[{lo:.{digits}f}, {hi:.{digits}f}]" if pd.notna(lo) and pd.notna(hi) else ""
                            for lo, hi in zip(rows[f"{prefix}_low"], rows[f"{prefix}_high"])]
    return _with_method(rows)[COLUMNS]


def sampling_label(settings: dict) -> str:
    """How a run's responses were drawn, as a row shows it: "greedy", or "K=4 T=0.6 top-p=0.95 seed=0"."""
    temperature = float(settings.get("temperature") or 0.0)
    if temperature <= 0:
        return "greedy"
    return (f"K={int(settings.get('samples') or 1)} T={temperature:g} top-p={float(settings.get('top_p') or 1.0):g} "
            f"seed={int(settings.get('seed') or 0)}")


def merge(board: pd.DataFrame, new_rows: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """(the merged board, rows replaced, rows added): a new row replaces the one with its exact key."""
    def keys(frame):
        return pd.Series([_row_key(row) for row in frame[KEY].itertuples(index=False)], index=frame.index)

    new_keys = set(keys(new_rows))
    replacing = keys(board).isin(new_keys)
    kept = board[~replacing]
    merged = pd.concat([kept, new_rows], ignore_index=True) if len(kept) else new_rows.copy()
    merged = merged.sort_values(["task", "acu"], ascending=[True, False], na_position="last")
    replaced = int(replacing.sum())
    return merged.reset_index(drop=True)[COLUMNS], replaced, len(new_rows) - replaced


def _row_key(row) -> str:
    task, model, valve, alpha, method, knob, settings = row

    def number(v):
        # repr, not :g, so 0.1234567 and 0.1234572 stay two points
        return "" if pd.isna(v) or v == "" else repr(float(v))

    return "|".join([str(task), str(model), "" if pd.isna(valve) else str(valve), number(alpha), str(method),
                     number(knob), str(settings)])


def write(board: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as handle:
        board.to_csv(handle, index=False)


def add_summary(path: Path, summary: pd.DataFrame, source: str, settings: dict) -> tuple[pd.DataFrame, int, int]:
    """Read, merge and write under one lock: concurrent adds never lose each other's rows. Returns the board,
    the rows replaced and the rows added."""
    with locked(path):
        board, replaced, added = merge(read(path), rows_from_summary(summary, source, settings))
        write(board, path)
    return board, replaced, added
