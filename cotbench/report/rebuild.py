"""A run directory rebuilt from its samples file: what ``cotbench report`` does where the store is absent.

A committed report keeps its samples file, ``config.yaml`` and ``run.json``, never ``samples.sqlite`` (the working
store). Every stored response is graded again with today's grader and every output written anew; nothing is
generated. The responses, token counts and finish reasons are the stored ones.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from cotbench.errors import CotbenchError
from cotbench.grading import grader_id
from cotbench.grading.pool import GradingPool
from cotbench.report.outputs import write_run_outputs
from cotbench.report.samples_file import COMPRESSED, PLAIN, read_records, sample_from_record
from cotbench.store import DB_NAME, Store
from cotbench import thinking


def rebuild_from_samples(run_dir: Path, params_b: float | None = None) -> pd.DataFrame:
    config = _config(run_dir)
    samples = [sample_from_record(r) for r in read_records(run_dir)]
    if not samples:
        raise CotbenchError(f"{run_dir}'s samples file is empty: there is nothing to report")
    run = _run_meta(run_dir, config, samples, params_b)
    protocol = config.get("protocol", "math")
    fmt = thinking.parse_option(config.get("thinking", "auto"))
    pool = GradingPool(protocol, float(config.get("grade_timeout_s", 5.0)), int(config.get("grade_workers", 1)))
    for s in samples:
        answer = thinking.split(s.generation.text, fmt, thinking.prompt_opens_thinking(s.prompt, fmt)).answer
        pool.submit(s.key, answer, s.problem.gold, s.generation.finish_reason == "length")
    grades = pool.finish()
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".rebuild-") as tmp:
        store = Store(tmp)
        try:
            store.set_meta("run", run)
            store.put_generations(samples)
            store.put_grades(grades, f"{grader_id(protocol)}|thinking={fmt.describe() if fmt else 'none'}")
            summary = write_run_outputs(store)
        finally:
            store.close()
        written = [p for p in Path(tmp).iterdir() if p.is_file() and p.name != DB_NAME and not p.name.startswith(".")]
        for path in written:  # each output replaces its old copy whole
            shutil.move(str(path), run_dir / path.name)
    for name in {PLAIN, COMPRESSED} - {p.name for p in written}:  # one samples file: the one just written
        (run_dir / name).unlink(missing_ok=True)
    return summary


def _config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CotbenchError(f"{run_dir} has a samples file but no config.yaml, so its grading settings are unknown; "
                            "only directories `cotbench run` wrote can be reported")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _run_meta(run_dir: Path, config: dict, samples: list, params_b: float | None) -> dict:
    """run.json where the run wrote one; for older directories, the model's size from summary.csv."""
    path = run_dir / "run.json"
    run = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {
        "config": config, "model_id": samples[0].model, "valve_id": samples[0].valve,
        "backend": {"engine": config.get("backend", "hf")}}
    size = params_b or config.get("params_b") or recorded_size(run_dir, run)
    if not size:
        raise CotbenchError(f"{run_dir} does not record the model's size, which ACU needs: pass --params-b "
                            "(billions of parameters)")
    run["params_b"] = size
    run.setdefault("n_params", round(size * 1e9))
    run["backend"] = {**run.get("backend", {}), "rebuilt": "responses as stored, graded again by `cotbench report`"}
    return run


def recorded_size(run_dir: Path, run: dict) -> float | None:
    """The model's size in billions as a run directory records it: its run meta, else its summary.csv's one value."""
    if run.get("params_b"):
        return float(run["params_b"])
    path = run_dir / "summary.csv"
    if not path.is_file():
        return None
    sizes = pd.read_csv(path, usecols=lambda c: c == "params_b")
    values = sizes["params_b"].dropna().unique() if "params_b" in sizes else []
    return float(values[0]) if len(values) == 1 else None
