"""SQLite store of a run directory: each sample is written as soon as it is generated and again when
graded, so ``kill -9`` loses at most the batch in flight and a rerun skips what is done."""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from cotbench.errors import CotbenchError, RunDirError, StorageError
from cotbench.files import RunDirLock
from cotbench.records import Generation, Grade, Problem, Sample

SCHEMA_VERSION = 1
DB_NAME = "samples.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partial (key TEXT PRIMARY KEY, generation TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, valve TEXT NOT NULL, alpha REAL, task TEXT NOT NULL,
    problem_id TEXT NOT NULL, question TEXT NOT NULL, gold TEXT NOT NULL, metadata TEXT NOT NULL,
    prompt TEXT NOT NULL, response TEXT NOT NULL, n_prompt_tokens INTEGER NOT NULL,
    n_generated_tokens INTEGER NOT NULL, finish_reason TEXT NOT NULL, latency_s REAL NOT NULL,
    extracted TEXT, correct INTEGER, protocol TEXT, reason TEXT, grader_version TEXT, created_at TEXT NOT NULL,
    status TEXT, n_thinking_tokens INTEGER, thinking_state TEXT, method TEXT, knob REAL, numerics TEXT,
    model_identity TEXT, sample_index INTEGER
);
"""


def _guarded(method):
    """A damaged file or a full disk, met while reading or writing: a CotbenchError naming the file."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from None

    return wrapper


class Store:
    """``exclusive``: this process is the run directory's only writer (``files.RunDirLock``) until ``close``;
    a second ``cotbench run`` on it is refused at once instead of interleaving with the first."""

    def __init__(self, run_dir: str | Path, create: bool = True, exclusive: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        self._lock = None
        if not create and not self.path.is_file():
            raise RunDirError(f"{self.run_dir} is not a cotbench run directory (no {DB_NAME}). "
                              "Pass the --out directory of an earlier `cotbench run`.")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {self.run_dir}: {exc.strerror or exc}") from None
        if exclusive:
            self._lock = RunDirLock(self.run_dir)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")  # readers (cotbench report) never block the writer
            self.db.executescript(_SCHEMA)
            self._check_schema()
        except sqlite3.Error as exc:
            self.close()
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: sqlite3.Error) -> CotbenchError:
        text = str(exc)
        if "full" in text:
            return StorageError(f"cannot write {self.path}: the disk is full. Free some space and rerun the same "
                                "command: what is stored is kept and the run goes on from there.")
        return RunDirError(f"{self.path} cannot be read as a cotbench store ({text}). It is damaged or not a "
                           "cotbench file: move it aside (`mv samples.sqlite samples.sqlite.bad`) and rerun to "
                           "generate again, or restore it from a copy. samples.jsonl beside it holds the samples "
                           "of the last completed report.")

    def _check_schema(self) -> None:
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(samples)")}
        with self.db:  # columns added since schema 1; rows without them are regraded
            if "grader_version" not in columns:
                self.db.execute("ALTER TABLE samples ADD COLUMN grader_version TEXT")
            for name, kind in (("status", "TEXT"), ("n_thinking_tokens", "INTEGER"), ("thinking_state", "TEXT"),
                               ("method", "TEXT"), ("knob", "REAL"), ("numerics", "TEXT"),
                               ("model_identity", "TEXT"), ("sample_index", "INTEGER")):
                if name not in columns:
                    self.db.execute(f"ALTER TABLE samples ADD COLUMN {name} {kind}")
        found = self.get_meta("schema_version")
        if found is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif found != SCHEMA_VERSION:
            raise RunDirError(f"{self.run_dir} was written by a cotbench store of schema {found}; this version "
                              f"reads schema {SCHEMA_VERSION}. Use a new --out directory.")

    @_guarded
    def get_meta(self, name: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, name: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(name, json.dumps(value))])

    def claim(self, identity: dict[str, Any]) -> None:
        """Record the settings this directory is for (after checking them); a setting an older cotbench did
        not record (the model's content) is recorded from now on."""
        self.check_identity(identity)
        stored = self.get_meta("identity")
        if stored is None or set(identity) - set(stored):
            self.set_meta("identity", {**identity, **(stored or {})})

    def check_identity(self, identity: dict[str, Any]) -> None:
        """Refuse a run directory written with settings that would make its samples incomparable. A setting
        the directory never recorded (written by an older cotbench) cannot be compared and is not."""
        stored = self.get_meta("identity")
        if stored is None:
            return
        diffs = [f"{k}: stored {stored.get(k)!r}, now {identity.get(k)!r}"
                 for k in sorted(set(stored) & set(identity)) if stored.get(k) != identity.get(k)]
        if diffs:
            raise RunDirError(f"run directory {self.run_dir} was written by an incompatible config ("
                              + "; ".join(diffs) + "). Use a new --out directory, or the same settings to resume.")

    def _rows_for(self, select: str, keys: Iterable[str]) -> Iterator[tuple]:
        """``select`` ("SELECT ... FROM t") over the rows whose key is among ``keys``, 500 keys per query
        (SQLite bounds the number of parameters of one statement)."""
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            yield from self.db.execute(f"{select} WHERE key IN ({','.join('?' * len(chunk))})", chunk)

    @_guarded
    def done_keys(self, keys: Iterable[str]) -> set[str]:
        return {key for (key,) in self._rows_for("SELECT key FROM samples", keys)}

    def put_generations(self, samples: Sequence[Sample]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [(s.key, s.model, s.valve, s.alpha, s.problem.task, s.problem.problem_id, s.problem.question,
                 s.problem.gold, json.dumps(dict(s.problem.metadata), default=str), s.prompt, s.generation.text,
                 s.generation.n_prompt_tokens, s.generation.n_generated_tokens, s.generation.finish_reason,
                 s.generation.latency_s, now, s.n_thinking_tokens, s.thinking_state, s.method, s.knob, s.numerics,
                 s.model_identity or None, s.sample_index) for s in samples]
        self._write(  # one transaction per batch
            "INSERT OR REPLACE INTO samples (key, model, valve, alpha, task, problem_id, question, gold, "
            "metadata, prompt, response, n_prompt_tokens, n_generated_tokens, finish_reason, latency_s, "
            "created_at, n_thinking_tokens, thinking_state, method, knob, numerics, model_identity, sample_index) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def rekey(self, pairs: Sequence[tuple[str, str]], model: str, valve: str, identity: str) -> None:
        """Move samples from old keys to new ones (``keys.legacy_sample_key`` -> ``keys.sample_key``), kept
        phase-1 generations with them, in one transaction; the samples take this run's model and valve names."""
        try:
            with self.db:
                self.db.executemany("UPDATE samples SET key = ?, model = ?, valve = ?, model_identity = ? WHERE key = ?",
                                    [(new, model, valve, identity, old) for old, new in pairs])
                self.db.executemany("UPDATE partial SET key = ? WHERE key = ?", [(new, old) for old, new in pairs])
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from None

    def relabel(self, keys: Iterable[str], model: str, valve: str) -> None:
        """Reused samples take this run's names for their model and valve (a renamed directory: same key,
        new name), so a report never splits one model's row in two."""
        self._write("UPDATE samples SET model = ?, valve = ? WHERE key = ? AND (model != ? OR valve != ?)",
                    [(model, valve, key, model, valve) for key in keys])

    def put_partial(self, generations: Sequence[Generation]) -> None:
        """A first phase of a sample's generation (budget forcing's thinking), kept until the sample is done: a
        run killed in the second phase resumes without generating the first again."""
        self._write("INSERT OR REPLACE INTO partial VALUES (?, ?)",
                    [(g.request_id, json.dumps(asdict(g))) for g in generations])

    @_guarded
    def partial(self, keys: Iterable[str]) -> dict[str, Generation]:
        """The kept first phases among ``keys``."""
        found = {}
        for key, text in self._rows_for("SELECT key, generation FROM partial", keys):
            fields = json.loads(text)
            ids = fields.pop("token_ids")  # JSON has no tuples
            found[key] = Generation(**fields, token_ids=tuple(ids) if ids is not None else None)
        return found

    @_guarded
    def numerics_of(self, keys: Iterable[str]) -> dict[str, int]:
        """How many of the stored samples among ``keys`` were generated under each numerics record."""
        return dict(Counter(n or "" for (n,) in self._rows_for("SELECT numerics FROM samples", keys)))

    def put_grades(self, grades: Sequence[tuple[str, Grade]], grader: str) -> None:
        """Store verdicts with the identity of the grader that gave them (``grading.grader_id``)."""
        self._write("UPDATE samples SET extracted = ?, correct = ?, protocol = ?, reason = ?, grader_version = ?, "
                    "status = ? WHERE key = ?", [(g.extracted, int(g.correct), g.protocol, g.reason, grader, g.status,
                                                  key) for key, g in grades])

    @_guarded
    def needing_grade(self, keys: Iterable[str], grader: str) -> list[tuple[str, str, str, str, bool]]:
        """(key, response, gold, prompt, truncated) of stored samples without a verdict of ``grader``: ungraded,
        graded by another grader (protocol, code, library version, thinking delimiters), or left as a timeout
        or error. ``truncated``: the response stopped at the length cap."""
        wanted = set(keys)
        rows = self.db.execute("SELECT key, response, gold, prompt, finish_reason, grader_version, status FROM samples")
        return [(key, response, gold, prompt, finish == "length")
                for key, response, gold, prompt, finish, version, status in rows
                if key in wanted and (version != grader or status in ("timeout", "error", None))]

    @_guarded
    def count_unjudged(self, keys: Iterable[str]) -> int:
        """Samples among ``keys`` whose verdict is a timeout or a grader error."""
        wanted = set(keys)
        rows = self.db.execute("SELECT key FROM samples WHERE status IN ('timeout', 'error')")
        return sum(1 for (key,) in rows if key in wanted)

    @_guarded
    def samples(self, keys: Iterable[str] | None = None) -> list[Sample]:
        cursor = self.db.execute("SELECT * FROM samples ORDER BY task, alpha, problem_id, sample_index")
        names = [d[0] for d in cursor.description]
        wanted = None if keys is None else set(keys)
        out = []
        for values in cursor:
            row = dict(zip(names, values))
            if wanted is None or row["key"] in wanted:
                out.append(_to_sample(row))
        return out

    def close(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _write(self, sql: str, rows) -> None:
        """One transaction; a full disk or a damaged file is a CotbenchError that says what to do."""
        try:
            with self.db:
                self.db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from None


def _to_sample(row: dict[str, Any]) -> Sample:
    problem = Problem(row["task"], row["problem_id"], row["question"], row["gold"], json.loads(row["metadata"]))
    generation = Generation(row["key"], row["response"], row["n_prompt_tokens"], row["n_generated_tokens"],
                            row["finish_reason"], row["latency_s"])
    grade = None
    if row["correct"] is not None:
        grade = Grade(bool(row["correct"]), row["extracted"], row["gold"], row["protocol"], row["reason"],
                      status=row.get("status") or "")
    return Sample(row["key"], row["model"], row["valve"], row["alpha"], problem, row["prompt"], generation, grade,
                  row.get("n_thinking_tokens"), row.get("thinking_state") or "none", row.get("method") or "valve",
                  row.get("knob") if row.get("method") not in (None, "valve") else row["alpha"], row.get("numerics") or "",
                  row.get("model_identity") or "", row.get("sample_index") or 0)
