"""A committed report holds its samples file, config.yaml and run.json, not the store: `cotbench report` rebuilds
every output from them, reading the samples file plain or gzip-compressed."""
import gzip
import json

import pandas as pd
import pytest
import yaml

import cotbench.report.samples_file as samples_file
from cotbench.cli import main
from cotbench.config import RunConfig
from cotbench.report import write_run_outputs
from cotbench.store import DB_NAME, Store
from report_samples import sweep

COLUMNS = ["alpha", "n", "accuracy_pct", "accuracy_ci_low", "mean_tokens", "mean_tokens_ci_high", "acu", "acu_ci_high",
           "mcnemar_p_holm", "truncation_pct"]


def _run_dir(tmp_path, samples):
    """A run directory as `cotbench run` leaves it, then stripped to what a commit keeps."""
    out = tmp_path / "run"
    store = Store(out)
    config = RunConfig(model="tiny", tasks=("arithmetic",), out=str(out)).to_dict()
    store.set_meta("run", {"config": config, "model_id": "tiny (test)", "valve_id": "v@000000000000",
                           "n_params": 134_515_008, "params_b": 0.134515008, "backend": {"engine": "hf"}})
    store.put_generations(samples)
    store.put_grades([(s.key, s.grade) for s in samples], "test")
    write_run_outputs(store)
    store.close()
    summary = pd.read_csv(out / "summary.csv")
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / DB_NAME).unlink()
    return out, summary


def test_report_rebuilds_a_committed_directory_from_its_samples_file(tmp_path, capsys):
    out, before = _run_dir(tmp_path, sweep(n=30))
    (out / "summary.csv").unlink()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "graded again from samples.jsonl" in capsys.readouterr().out
    after = pd.read_csv(out / "summary.csv")
    # the hand-set verdicts are what the grader gives these responses: every figure comes back
    pd.testing.assert_frame_equal(after[COLUMNS], before[COLUMNS], check_dtype=False)
    assert "graded again by `cotbench report`" in (out / "report.md").read_text()
    assert not (out / DB_NAME).exists() and (out / "run.json").is_file()


def test_a_samples_file_over_the_limit_is_written_compressed_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(samples_file, "COMPRESS_ABOVE", 2_000)
    out, before = _run_dir(tmp_path, sweep(n=30))
    assert not (out / "samples.jsonl").exists()
    packed = (out / "samples.jsonl.gz").read_bytes()
    rows = [json.loads(line) for line in gzip.decompress(packed).decode().splitlines()]
    assert len(rows) == 90 and pd.read_json(out / "samples.jsonl.gz", lines=True).shape[0] == 90
    assert main(["report", str(out)]) == 0
    again = [json.loads(line) for line in gzip.decompress((out / "samples.jsonl.gz").read_bytes()).decode().splitlines()]
    assert [(r["key"], r["response"]) for r in again] == [(r["key"], r["response"]) for r in rows]
    graded = (out / "samples.jsonl.gz").read_bytes()
    assert main(["report", str(out)]) == 0
    assert (out / "samples.jsonl.gz").read_bytes() == graded  # no time in the header: same samples, same bytes
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv")[COLUMNS], before[COLUMNS], check_dtype=False)
    monkeypatch.setattr(samples_file, "COMPRESS_ABOVE", 10**9)  # below the limit again: plain, and one copy only
    assert main(["report", str(out)]) == 0
    assert (out / "samples.jsonl").is_file() and not (out / "samples.jsonl.gz").exists()


def test_a_directory_that_lost_its_size_or_its_file_says_what_to_do(tmp_path, capsys):
    out, _ = _run_dir(tmp_path, sweep(n=6))
    (out / "run.json").unlink()
    (out / "summary.csv").unlink()
    assert main(["report", str(out)]) == 2
    assert "--params-b" in capsys.readouterr().err
    assert main(["report", str(out), "--params-b", "0.5"]) == 0
    assert pd.read_csv(out / "summary.csv")["params_b"].eq(0.5).all()
    (out / "samples.jsonl.gz").write_bytes(b"\x1f\x8b not gzip")
    (out / "samples.jsonl").unlink()
    assert main(["report", str(out)]) == 2
    assert "damaged" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["default-arithmetic", "smollm2-gsm8k100", "default-valve-gsm8k200"])
def test_each_committed_report_rebuilds_to_the_figures_it_shows(tmp_path, name):
    import shutil
    from pathlib import Path

    committed = Path(__file__).resolve().parent.parent / "reports" / name
    copy = tmp_path / name
    shutil.copytree(committed, copy)
    assert main(["report", str(copy)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(copy / "summary.csv")[COLUMNS],
                                  pd.read_csv(committed / "summary.csv")[COLUMNS], check_dtype=False)
