"""MixChain data: sweep α over a training split, grade, and keep each question's solutions from shortest
(``solution_0``) to longest, in the published MixChain column layout (JSONL and Parquet)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from cotbench.config import RunConfig
from cotbench.errors import ConfigError
from cotbench.files import atomic_write, write_text


def build_mixchain(model: str, valve: str, alphas: Sequence[float], task: str, out: str | Path,
                   split: str = "train", limit: int | None = None, max_new_tokens: int = 512,
                   keep_incorrect: bool = False, progress: bool = True, **run_settings) -> dict:
    """Returns counts; writes ``out`` (.jsonl) and the same rows as Parquet beside it.

    The sweep itself is an ordinary cotbench run in ``<out>.run/``, so an interrupted build resumes."""
    from cotbench.runner import run_sweep
    from cotbench.store import Store

    out = Path(out)
    if out.suffix != ".jsonl":
        raise ConfigError(f"--out must name a .jsonl file (a .parquet copy is written beside it), got {out}")
    run_dir = out.with_name(out.stem + ".run")
    cfg = RunConfig(model=model, valve=valve, alphas=tuple(alphas), tasks=(task,), split=split, limit=limit,
                    max_new_tokens=max_new_tokens, out=str(run_dir), **run_settings)
    run_sweep(cfg, progress=progress)
    store = Store(run_dir, create=False)
    try:
        samples = store.samples(store.get_meta("selection"))
    finally:
        store.close()
    by_problem = defaultdict(list)
    for s in samples:
        by_problem[s.problem.problem_id].append(s)
    rows, dropped = [], 0
    for members in by_problem.values():
        kept = [s for s in members if keep_incorrect or (s.grade and s.grade.correct)]
        if not kept:
            dropped += 1
            continue
        kept.sort(key=lambda s: (s.generation.n_generated_tokens, -(s.alpha or 0)))
        problem = kept[0].problem
        row = {"question": problem.question, "answer": problem.metadata.get("reference") or problem.gold,
               "target": problem.gold}
        for k, s in enumerate(kept):
            row[f"solution_{k}"] = s.generation.text
            row[f"solution_{k}_token"] = s.generation.n_generated_tokens
            row[f"correct_{k}"] = bool(s.grade and s.grade.correct)
            row[f"alpha_{k}"] = s.alpha
        rows.append(row)
    write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if rows:
        import pandas as pd

        with atomic_write(out.with_suffix(".parquet"), "wb", None) as handle:
            pd.DataFrame(rows).to_parquet(handle, index=False)
    return {"rows": len(rows), "questions_without_a_correct_solution": dropped, "run_dir": str(run_dir)}
