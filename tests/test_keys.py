"""What a stored sample is keyed by (cotbench/keys.py): the model's and the valve's content, not their names
or paths; names are relabelled on reuse; stores keyed by name by an older cotbench are re-keyed, saying so."""
import json
import shutil
import sqlite3

import pandas as pd
import pytest

from cotbench import keys
from cotbench.config import RunConfig
from cotbench.report import leaderboard
from cotbench.runner import run_sweep
from cotbench.store import Store


def _config(model, out, valve=None, limit=2, **extra):
    return RunConfig(model=str(model), valve=str(valve) if valve else None, tasks=("arithmetic",), limit=limit,
                     max_new_tokens=4, grade_workers=0, dtype="float32", out=str(out),
                     **({"alphas": (0.0, 1.0)} if valve else {}), **extra)


def _rows(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_a_renamed_model_and_valve_keep_their_samples_under_their_new_names(tiny_model, tiny_valve, tmp_path):
    model, valve = tmp_path / "model-a", tmp_path / "valve-a"
    shutil.copytree(tiny_model, model)
    shutil.copytree(tiny_valve, valve)
    out = tmp_path / "run"
    first = run_sweep(_config(model, out, valve), progress=False)
    assert first.n_generated == 4
    model.rename(tmp_path / "model-b")
    valve.rename(tmp_path / "valve-b")
    again = run_sweep(_config(tmp_path / "model-b", out, tmp_path / "valve-b"), progress=False)
    assert again.n_generated == 0  # same content: nothing generated again
    rows = _rows(out)
    assert {r["model"] for r in rows} == {str(tmp_path / "model-b")}  # relabelled: one row per point, not two
    assert {r["valve"].split("@")[0] for r in rows} == {"valve-b"}
    assert len(again.summary) == 2
    identity = {r["model_identity"] for r in rows}
    assert len(identity) == 1 and next(iter(identity)).startswith("sha256:")
    assert set(again.summary["model_identity"]) == identity


def test_the_key_holds_content_and_settings_never_names_or_rounding(tiny_model, tmp_path):
    from cotbench.records import Problem, SamplingSettings

    problem = Problem("arithmetic", "1", "1+1?", "2", {})
    base = ("sha256:aa", "fp1", 0.5, problem, "prompt", SamplingSettings(), {"backend": "hf", "dtype": "float32"})
    key = keys.sample_key(*base)
    assert keys.sample_key("sha256:bb", *base[1:]) != key  # other weights
    assert keys.sample_key(base[0], "fp2", *base[2:]) != key  # another valve
    assert keys.sample_key(*base[:2], 0.5000001, *base[3:]) != key  # another α, however close
    assert keys.sample_key(*base, {"method": "budget-forcing", "thinking": "<think>"}) != \
        keys.sample_key(*base, {"method": "budget-forcing", "thinking": "<reason>"})
    assert keys.valve_identity("valve-a@0123abcd") == keys.valve_identity("valve-b@0123abcd") == "0123abcd"
    cfg = _config(tiny_model, tmp_path / "x")
    assert keys.model_identity(cfg).startswith("sha256:")
    served = RunConfig(model=str(tiny_model), backend="openai", base_url="http://127.0.0.1:9/v1", served_model="q")
    assert keys.model_identity(served) == "served:q"  # the weights behind the server, not the local tokenizer
    moved = RunConfig(**{**served.to_dict(), "base_url": "http://127.0.0.1:10/v1"})
    assert keys.run_identity(moved, "served:q") == keys.run_identity(served, "served:q")  # the address: not keyed


def test_a_hub_id_is_identified_by_the_revision_it_resolves_to(tmp_path, monkeypatch):
    import huggingface_hub

    cache = tmp_path / "hub"
    repo = cache / "models--some-org--some-model"

    def publish(commit):
        (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    cfg = RunConfig(model="some-org/some-model")
    assert keys.model_identity(cfg) == "name:some-org/some-model"  # nothing knows it: its name, said as such
    publish("a" * 40)
    assert keys.model_identity(cfg) == f"hub:some-org/some-model@{'a' * 40}"
    publish("b" * 40)  # the revision moved: another model
    assert keys.model_identity(cfg) == f"hub:some-org/some-model@{'b' * 40}"


def _make_legacy(out, cfg):
    """Turn a run directory into what an older cotbench wrote: samples keyed by the model's name and the
    valve's name@fingerprint, no model identity anywhere."""
    store = Store(out)
    meta = store.get_meta("run")
    identity = {k: v for k, v in store.get_meta("identity").items() if k not in ("model_identity", "valve_content")}
    store.set_meta("identity", {**identity, "model": cfg.model, "valve": cfg.valve})
    moves = []
    for s in store.samples():
        legacy = keys.legacy_sample_key(meta["model_id"], meta["valve_id"], s.alpha, s.problem, s.prompt,
                                        cfg.sampling(), meta["backend"], None)
        moves.append((legacy, s.key))
    store.close()
    db = sqlite3.connect(out / "samples.sqlite")
    with db:
        db.executemany("UPDATE samples SET key = ?, model_identity = NULL WHERE key = ?", moves)
    db.close()
    return len(moves)


def test_a_store_keyed_by_name_is_rekeyed_and_the_run_says_which(tiny_model, tiny_valve, tmp_path, capsys):
    out = tmp_path / "old"
    cfg = _config(tiny_model, out, tiny_valve)
    run_sweep(cfg, progress=False)
    before = {(r["problem_id"], r["alpha"]): r["response"] for r in _rows(out)}
    assert _make_legacy(out, cfg) == 4
    grown = RunConfig(**{**cfg.to_dict(), "limit": 3})
    result = run_sweep(grown, progress=False)
    err = capsys.readouterr().err
    assert "re-keyed 4 samples an older cotbench stored under the model's name" in err
    assert "arithmetic α=0: 2, arithmetic α=1: 2" in err and "2 planned samples are not stored and will be generated" in err
    assert result.n_generated == 2  # the new problem at both α; the four old samples reused, not regenerated
    rows = _rows(out)
    assert all(before[(r["problem_id"], r["alpha"])] == r["response"] for r in rows if (r["problem_id"], r["alpha"]) in before)
    assert len({r["model_identity"] for r in rows}) == 1 and rows[0]["model_identity"].startswith("sha256:")
    assert run_sweep(grown, progress=False).n_generated == 0
    assert "re-keyed" not in capsys.readouterr().err  # said once: the store now holds content keys


def test_a_model_retrained_under_the_same_name_is_a_new_leaderboard_row(tmp_path):
    summary = pd.DataFrame([{"model": "m", "model_identity": "sha256:aa", "valve": "", "alpha": None, "method": "valve",
                             "knob": None, "task": "gsm8k", "n_graded": 10, "n": 10, "complete": True, "params_b": 0.1,
                             "accuracy_pct": 50.0, "mean_tokens": 100.0, "acu": 5.0, "protocol": "math"}])
    settings = {"model": "m", "tasks": ["gsm8k"], "max_new_tokens": 256}
    path = tmp_path / "board.csv"
    leaderboard.add_summary(path, summary, "first", settings)
    _, replaced, added = leaderboard.add_summary(path, summary, "again", settings)
    assert (replaced, added) == (1, 0)  # the same weights: the row is replaced
    retrained = summary.assign(model_identity="sha256:bb", accuracy_pct=60.0)
    board, replaced, added = leaderboard.add_summary(path, retrained, "retrained", settings)
    assert (replaced, added) == (0, 1)
    assert sorted(board[board["model"] == "m"]["accuracy_pct"]) == [50.0, 60.0]


@pytest.mark.parametrize("identity", ["", "name:m"])
def test_a_result_without_a_content_identity_is_identified_by_its_settings(identity):
    settings = {"model": "m", "max_new_tokens": 256}
    assert keys.result_digest(settings, identity) == keys.result_digest(settings)
    assert keys.result_digest(settings, "sha256:aa") != keys.result_digest(settings)
