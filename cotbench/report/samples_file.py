"""The samples file: every stored sample as one JSON line, the record a run directory keeps in the open.

Written as ``samples.jsonl``, or as ``samples.jsonl.gz`` once it passes 4 MiB (a 300-problem sweep's responses
run to tens of MiB; gzip shrinks them about eightfold, and pandas, ``zcat`` and this module read either). The
gzip header carries no time or name, so the same samples give the same bytes on every rebuild. One name at a
time: writing one removes the other, so a reader never meets two disagreeing copies.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Sequence

from cotbench.errors import CotbenchError
from cotbench.files import atomic_write
from cotbench.records import Generation, Grade, Problem, Sample

PLAIN, COMPRESSED = "samples.jsonl", "samples.jsonl.gz"
COMPRESS_ABOVE = 4 * 1024 * 1024  # bytes of JSON lines


def sample_record(s: Sample) -> dict:
    g = s.grade
    return {
        "key": s.key, "sample_index": s.sample_index, "model": s.model, "model_identity": s.model_identity, "valve": s.valve, "alpha": s.alpha,
        "method": s.method, "knob": s.knob, "task": s.problem.task,
        "problem_id": s.problem.problem_id, "question": s.problem.question, "metadata": dict(s.problem.metadata),
        "prompt": s.prompt, "response": s.generation.text, "extracted": g.extracted if g else None,
        "gold": s.problem.gold, "correct": g.correct if g else None, "status": g.status if g else None,
        "reason": g.reason if g else None,
        "protocol": g.protocol if g else None, "n_prompt_tokens": s.generation.n_prompt_tokens,
        "n_generated_tokens": s.generation.n_generated_tokens, "n_thinking_tokens": s.n_thinking_tokens,
        "thinking_state": s.thinking_state, "finish_reason": s.generation.finish_reason,
        "latency_s": round(s.generation.latency_s, 4), "numerics": s.numerics,
    }


def sample_from_record(row: dict, with_grade: bool = False) -> Sample:
    """The sample a record was written from; its grade too if ``with_grade`` (a rebuild grades again instead)."""
    problem = Problem(row["task"], row["problem_id"], row["question"], row["gold"], row.get("metadata") or {})
    generation = Generation(row["key"], row["response"], row["n_prompt_tokens"], row["n_generated_tokens"],
                            row["finish_reason"], row.get("latency_s") or 0.0)
    grade = None
    if with_grade and row.get("correct") is not None:
        grade = Grade(bool(row["correct"]), row.get("extracted"), row["gold"], row.get("protocol") or "",
                      row.get("reason") or "", status=row.get("status") or "")
    return Sample(row["key"], row["model"], row["valve"], row["alpha"], problem, row["prompt"], generation, grade,
                  n_thinking_tokens=row.get("n_thinking_tokens"), thinking_state=row.get("thinking_state") or "none",
                  method=row.get("method") or "valve", knob=row.get("knob", row["alpha"]),
                  numerics=row.get("numerics") or "", model_identity=row.get("model_identity") or "",
                  sample_index=row.get("sample_index") or 0)


def write_samples(samples: Sequence[Sample], run_dir: Path) -> Path:
    """Write the samples file of ``run_dir`` and return its path (plain, or gzip past ``COMPRESS_ABOVE``)."""
    text = "".join(json.dumps(sample_record(s), ensure_ascii=False) + "\n" for s in samples).encode("utf-8")
    name, other = (COMPRESSED, PLAIN) if len(text) > COMPRESS_ABOVE else (PLAIN, COMPRESSED)
    path = run_dir / name
    with atomic_write(path, "wb", None) as handle:  # never a half-written file under the final name
        if name == COMPRESSED:
            with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as packed:
                packed.write(text)
        else:
            handle.write(text)
    (run_dir / other).unlink(missing_ok=True)
    return path


def samples_path(run_dir: Path) -> Path | None:
    for name in (PLAIN, COMPRESSED):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def read_records(run_dir: Path) -> list[dict]:
    path = samples_path(run_dir)
    if path is None:
        raise CotbenchError(f"{run_dir} has neither {PLAIN} nor {COMPRESSED}: it is not a cotbench run directory")
    data = path.read_bytes()
    try:
        text = gzip.decompress(data).decode("utf-8") if path.name == COMPRESSED else data.decode("utf-8")
        return [json.loads(line) for line in io.StringIO(text) if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CotbenchError(f"{path} is damaged ({exc}); restore it from git or the run's store") from None
