"""Run directories under fault: two runs at once, a full disk, a damaged store."""
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotbench.cli import main


def _run_argv(model, out, n=40):
    return [sys.executable, "-m", "cotbench", "run", "--model", str(model), "--tasks", "arithmetic", "--n", str(n),
            "--max-new-tokens", "24", "--batch-size", "2", "--dtype", "float32", "--out", str(out)]


def test_a_second_run_on_the_same_directory_is_refused(tiny_model, tmp_path):
    out = tmp_path / "shared"
    first = subprocess.Popen(_run_argv(tiny_model, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "samples.sqlite").exists() or not _rows(out):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        second = subprocess.run(_run_argv(tiny_model, out), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert "in use by another cotbench process" in second.stderr and "another --out" in second.stderr
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    with sqlite3.connect(out / "samples.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone() == (40, 40)


def _rows(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out / 'samples.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_damaged_store_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples.sqlite").write_bytes(b"SQLite format 3\0" + b"\xff" * 3000)  # a header, then garbage
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "samples.sqlite cannot be read as a cotbench store" in err and "move it aside" in err
    assert "Traceback" not in err


def test_a_truncated_store_is_a_clear_error(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model), "--tasks", "arithmetic", "--n", "6", "--max-new-tokens", "4",
                 "--grade-workers", "0", "--dtype", "float32", "--out", str(out)]) == 0
    data = (out / "samples.sqlite").read_bytes()
    (out / "samples.sqlite").write_bytes(data[: len(data) // 3])
    for leftover in out.glob("samples.sqlite-*"):
        leftover.unlink()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a cotbench store" in err and "Traceback" not in err


@pytest.fixture
def small_disk(tmp_path):
    """A 192 KiB tmpfs (needs root, as in this project's CI container; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        from conftest import unavailable

        unavailable("ROOT", f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_a_clear_error_and_the_run_resumes(tiny_model, small_disk):
    out = small_disk / "run"
    failed = subprocess.run(_run_argv(tiny_model, out, n=400), capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "disk is full" in failed.stderr and "Traceback" not in failed.stderr
    stored = _rows(out)
    assert stored > 0
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = subprocess.run(_run_argv(tiny_model, out, n=400), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "already stored" in resumed.stderr
    with sqlite3.connect(out / "samples.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone() == (400, 400)


def test_concurrent_leaderboard_adds_lose_no_rows(tmp_path):
    """Eight processes add eight different runs to one leaderboard at once: every run's row is there."""
    import pandas as pd

    runs = []
    for i in range(8):
        run = tmp_path / f"run{i}"
        run.mkdir()
        pd.DataFrame([{"model": f"model-{i}", "valve": "", "alpha": None, "task": "gsm8k", "n": 10,
                       "accuracy_pct": 50.0, "mean_tokens": 100.0 + i, "params_b": 0.1, "acu": 5.0,
                       "protocol": "math"}]).to_csv(run / "summary.csv", index=False)
        (run / "config.yaml").write_text(f"model: model-{i}\n")
        runs.append(run)
    board = tmp_path / "leaderboard.csv"
    adds = [subprocess.Popen([sys.executable, "-m", "cotbench", "leaderboard", "add", str(run), "--file", str(board)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for run in runs]
    assert all(p.wait(timeout=120) == 0 for p in adds)
    rows = pd.read_csv(board)
    assert {f"model-{i}" for i in range(8)} <= set(rows["model"])
    assert not list(tmp_path.glob(".leaderboard.csv.*.tmp"))  # no temporary file left behind
