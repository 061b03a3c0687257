"""The README's commands against a cluster that `ray start --head` made: `cotbench run --ray auto` joins it, a
second run resumes, and nothing of the run's workers is left on the cluster afterwards."""
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="install cotbench[ray]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    port = _free_port()
    env = dict(os.environ, RAY_ADDRESS="")
    subprocess.run([ray_cli, "start", "--head", "--num-cpus", "2", "--port", str(port), "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True, text=True, timeout=180, env=env)
    try:
        yield port
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=180)


def test_run_with_ray_auto_joins_the_cluster_and_resumes(head, tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "cotbench", "run", "--ray", "auto", "--workers", "2", "--model", str(tiny_model),
            "--valve", str(tiny_valve), "--tasks", "arithmetic", "--n", "6", "--alphas", "0,0.5,1",
            "--max-new-tokens", "6", "--batch-size", "2", "--dtype", "float32", "--out", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    first = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    assert "18 samples planned: 0 already stored, 18 to generate" in first.stderr
    assert len((out / "samples.jsonl").read_text().splitlines()) == 18
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr
    assert "18 already stored, 0 to generate" in again.stderr
    with sqlite3.connect(out / "samples.sqlite") as db:
        stats = json.loads(db.execute("SELECT value FROM meta WHERE name = 'engine_stats'").fetchone()[0])["ray"]
    assert stats["workers"] == 2 and stats["address"] == "auto"
