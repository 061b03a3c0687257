"""The command line: every bad input gets one clear message and exit code 2, no traceback, nothing lost."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from cotbench.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_args(tiny_model, out, *extra):
    return ["run", "--model", str(tiny_model), "--tasks", "arithmetic", "--limit", "2", "--max-new-tokens", "4",
            "--grade-workers", "0", "--out", str(out), *extra]


@pytest.mark.parametrize("argv,message", [
    (["run", "--valve", "v", "--alphas", "0,half,1"], "alpha 'half' is not a number"),
    (["run", "--tasks", "gsm8k,gsm9k"], "Unknown task 'gsm9k'. Did you mean 'gsm8k'? Available: aime24, arithmetic"),
    (["run", "--model", "./no/such/model"], "model path ./no/such/model does not exist"),
    (["run", "--model", "no-such-org/no-such-model-xyz", "--out", "{tmp}/hub"], "cannot load model 'no-such-org/no-such-model-xyz'"),
    (["run", "--tasks", "jsonl"], "task 'jsonl' needs --data FILE"),
    (["run", "--protocol", "strict"], "Unknown grading protocol 'strict'"),
    (["report", "{tmp}/not-a-run"], "is not a cotbench run directory"),
])
def test_bad_input_gets_one_clear_message(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2
    assert message in err and "Traceback" not in err


def test_malformed_dataset_line(capsys, tmp_path, tiny_model):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "oops"\n')
    code, _, err = run_cli(capsys, *tiny_args(tiny_model, tmp_path / "o"), "--tasks", "jsonl", "--data", str(data))
    assert code == 2 and f"{data}:2: not valid JSON" in err


def test_adapter_that_does_not_fit(capsys, tmp_path, tiny_model, foreign_valve):
    code, _, err = run_cli(capsys, *tiny_args(tiny_model, tmp_path / "o"), "--valve", str(foreign_valve))
    assert code == 2 and "does not fit the base model" in err and "size mismatch" in err


def test_incompatible_run_dir_keeps_its_samples(capsys, tmp_path, tiny_model):
    out = tmp_path / "run"
    assert run_cli(capsys, *tiny_args(tiny_model, out))[0] == 0
    code, _, err = run_cli(capsys, *tiny_args(tiny_model, out), "--max-new-tokens", "8")
    assert code == 2 and "written by an incompatible config" in err
    assert sqlite3.connect(out / "samples.sqlite").execute("SELECT count(*) FROM samples").fetchone()[0] == 2


def test_config_file_and_flag_override(capsys, tmp_path, tiny_model):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"model: {tiny_model}\ntasks: [arithmetic]\nlimit: 3\nmax_new_tokens: 4\ngrade_workers: 0\n")
    code, out, _ = run_cli(capsys, "run", "--config", str(cfg), "--limit", "2", "--out", str(tmp_path / "r"))
    assert code == 0 and "| arithmetic |" in out
    assert "limit: 2" in (tmp_path / "r" / "config.yaml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "x"\nmax_tokens = 5\n')
    code, _, err = run_cli(capsys, "run", "--config", str(bad))
    assert code == 2 and "unknown setting 'max_tokens'" in err


def test_report_and_leaderboard_add_updates_rows(capsys, tmp_path, tiny_model):
    out = tmp_path / "run"
    run_cli(capsys, *tiny_args(tiny_model, out))
    (out / "report.md").unlink()
    assert run_cli(capsys, "report", str(out))[0] == 0 and (out / "report.md").is_file()
    board = tmp_path / "leaderboard.csv"
    outputs = [run_cli(capsys, "leaderboard", "add", str(out), "--file", str(board)) for _ in range(2)]
    assert [code for code, _, _ in outputs] == [0, 0]
    assert "replaced 0 rows, added 1" in outputs[0][1]
    assert "replaced 1 rows, added 0" in outputs[1][1]  # adding again replaces its own row, never duplicates
    import pandas as pd

    rows = pd.read_csv(board)
    assert len(rows) == 4  # 3 published CoT-Valve rows + 1 from this run
    assert rows["source"].str.contains("CoT-Valve paper").sum() == 3
    gsm8k = rows[rows["task"] == "gsm8k"]
    assert list(gsm8k["acu"]) == sorted(gsm8k["acu"], reverse=True)
    assert 0.40 in list(gsm8k["acu"].round(2))


def test_report_waits_for_no_one_but_never_rewrites_a_directory_a_run_holds(capsys, tmp_path, tiny_model):
    from cotbench.files import RunDirLock

    out = tmp_path / "run"
    run_cli(capsys, *tiny_args(tiny_model, out))
    before = (out / "report.md").read_bytes()
    lock = RunDirLock(out)  # a sweep still writing this directory
    try:
        code, _, err = run_cli(capsys, "report", str(out))
    finally:
        lock.release()
    assert code == 2 and "in use by another cotbench process" in err and "Wait for it to finish" in err
    assert (out / "report.md").read_bytes() == before
    assert run_cli(capsys, "report", str(out))[0] == 0  # free again


def test_a_run_with_other_settings_adds_rows_beside_never_over(capsys, tmp_path, tiny_model):
    """The same model, valve, task and point under another cap or protocol is another result: its rows go
    beside the first run's; re-adding either replaces exactly its own."""
    import pandas as pd

    board = tmp_path / "leaderboard.csv"
    first, other_cap = tmp_path / "first", tmp_path / "cap"

    def add(*runs):
        code, out, _ = run_cli(capsys, "leaderboard", "add", *map(str, runs), "--file", str(board))
        assert code == 0
        return out

    run_cli(capsys, *tiny_args(tiny_model, first))
    run_cli(capsys, *tiny_args(tiny_model, other_cap), "--max-new-tokens", "3")
    assert "replaced 0 rows, added 1" in add(first)
    assert "replaced 0 rows, added 1" in add(other_cap)
    run_cli(capsys, *tiny_args(tiny_model, first), "--protocol", "paper")  # regraded: another result
    assert "protocol: paper" in (first / "config.yaml").read_text()
    assert "replaced 0 rows, added 1" in add(first)
    assert add(first, other_cap).count("replaced 1 rows, added 0") == 2
    rows = pd.read_csv(board, keep_default_na=False)
    ours = rows[rows["source"].str.startswith("cotbench run")]
    assert len(ours) == 3 and ours["settings"].nunique() == 3
    assert set(ours["max_new_tokens"].astype(str)) == {"3", "4"}


def test_leaderboard_add_refuses_a_directory_without_its_settings(capsys, tmp_path, tiny_model):
    out = tmp_path / "run"
    run_cli(capsys, *tiny_args(tiny_model, out))
    (out / "config.yaml").unlink()
    code, _, err = run_cli(capsys, "leaderboard", "add", str(out), "--file", str(tmp_path / "b.csv"))
    assert code == 2 and "no config.yaml" in err


def test_grade_command(capsys):
    assert run_cli(capsys, "grade", "\\frac{1}{2}", "0.5")[0] == 0
    code, out, _ = run_cli(capsys, "grade", "the answer is 7", "8")
    assert code == 1 and "incorrect" in out and "'7'" in out


def test_grade_explain_prints_each_step(capsys):
    code, out, _ = run_cli(capsys, "grade", "--explain", "Answer: 2x + 3", "3+2x")
    assert code == 0
    assert "extracted '2x + 3' ('answer is ...')" in out
    assert "normalised: answer '2x + 3', gold '3+2x'" in out
    assert "symbolic: equal" in out and "took" in out and "grader math-" in out


def test_kill_minus_9_loses_at_most_the_batch_in_flight(tmp_path, tiny_model):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "cotbench", "run", "--model", str(tiny_model), "--tasks", "arithmetic",
            "--n", "40", "--max-new-tokens", "24", "--batch-size", "2", "--grade-workers", "0", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "samples.sqlite"
    stored, deadline = 0, time.monotonic() + 120
    while stored < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("SELECT count(*) FROM samples").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = sqlite3.connect(db).execute("SELECT count(*) FROM samples").fetchone()[0]
    assert kept >= stored >= 4
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{kept} already stored, {40 - kept} to generate" in done.stderr
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 40 and all(r["correct"] is not None for r in records)


def test_valve_commands(capsys, tmp_path, tiny_model, tiny_valve):
    code, out, _ = run_cli(capsys, "valve", "export", "--valve", str(tiny_valve), "--alphas", "0.5,1", "--out",
                           str(tmp_path / "served"), "--base", str(tiny_model))
    assert code == 0 and "vllm.entrypoints.openai.api_server" in out and "alpha_0.5=" in out and "--backend openai" in out
    assert (tmp_path / "served" / "alpha_0.5" / "adapter_model.safetensors").is_file()
    code, _, err = run_cli(capsys, "valve", "export", "--valve", str(tiny_valve), "--alphas", "0.5,x", "--out",
                           str(tmp_path / "s2"))
    assert code == 2 and "alpha 'x' is not a number" in err
    code, _, err = run_cli(capsys, "valve", "extract", "--base", str(tiny_model), "--tuned", str(tiny_model),
                           "--rank", "4", "--out", str(tmp_path / "same"))
    assert code == 2 and "identical linear layers" in err
    code, _, err = run_cli(capsys, "valve", "train", "--base", str(tiny_model), "--data", str(tmp_path / "none.jsonl"),
                           "--out", str(tmp_path / "t"))
    assert code == 2 and "cannot read" in err and "none.jsonl" in err
