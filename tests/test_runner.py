"""The sweep end to end on a tiny random model and a real LoRA valve: outputs, resume, bad run dirs."""
import json

import pandas as pd
import pytest

from cotbench.config import RunConfig
from cotbench.errors import RunDirError
from cotbench.runner import run_sweep
from cotbench.store import Store


def config(tiny_model, tiny_valve, out, **extra):
    # fp32: on a CPU with bf16 matmuls "auto" would pick bf16, whose rounding follows batch shapes
    settings = dict(model=str(tiny_model), valve=str(tiny_valve), alphas=(0.0, 0.5, 1.0), tasks=("gsm8k",),
                    limit=3, max_new_tokens=6, batch_size=2, grade_workers=0, dtype="float32", out=str(out))
    settings.update(extra)
    return RunConfig(**settings)


def test_sweep_writes_every_output(tiny_model, tiny_valve, tmp_path):
    result = run_sweep(config(tiny_model, tiny_valve, tmp_path / "run"), progress=False)
    out = result.out_dir
    for name in ("samples.sqlite", "samples.jsonl", "summary.csv", "report.md", "config.yaml",
                 "acu_vs_tokens.png", "acu_vs_tokens.svg", "accuracy_vs_tokens.png", "accuracy_vs_tokens.svg"):
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["alpha"]) == [0.0, 0.5, 1.0] and set(summary["n"]) == {3}
    assert set(summary["task"]) == {"gsm8k"}
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 9
    for r in records:
        assert 1 <= r["n_generated_tokens"] <= 6 and r["finish_reason"] in ("stop", "length")
        assert r["finish_reason"] == "stop" or r["n_generated_tokens"] == 6
        assert r["correct"] is not None and r["gold"] and r["prompt"].startswith("<|user|>")
    # token statistics and ACU are computed from the stored samples, exactly
    for _, row in summary.iterrows():
        rows = [r for r in records if r["alpha"] == row["alpha"]]
        mean = sum(r["n_generated_tokens"] for r in rows) / len(rows)
        assert row["mean_tokens"] == pytest.approx(mean)
        params_b = row["params_b"]
        assert row["acu"] == pytest.approx(100 * row["accuracy_pct"] / (params_b * mean))
    assert "| task |" in (out / "report.md").read_text()


def test_accuracy_and_acu_on_rows_neither_all_wrong_nor_all_right(tiny_model, tiny_valve, tmp_path):
    """The tiny random model is always wrong, so ACU checks on its rows compare 0 with 0. Here some stored
    responses are replaced by known answers (right, wrong, cut without an answer) and the same command regrades
    them through the real grader and report path: every figure has a known value."""
    import sqlite3

    cfg = config(tiny_model, tiny_valve, tmp_path / "run", limit=4)
    run_sweep(cfg, progress=False)
    db = sqlite3.connect(cfg.out_dir() / "samples.sqlite")
    with db:
        rows = db.execute("SELECT key, alpha, gold FROM samples ORDER BY alpha, problem_id").fetchall()
        # α = 0: 1 of 4 right; α = 0.5: 3 of 4 right; α = 1: 2 right, 1 wrong, 1 cut before answering
        plan = {0.0: ["right", "wrong", "wrong", "wrong"], 0.5: ["right", "right", "right", "wrong"],
                1.0: ["right", "right", "wrong", "cut"]}
        seen: dict = {}
        for key, alpha, gold in rows:
            kind = plan[alpha][seen.setdefault(alpha, 0)]
            seen[alpha] += 1
            text = {"right": f"so the answer is \\boxed{{{gold}}}", "wrong": "so the answer is \\boxed{-1}",
                    "cut": f"we add {gold} and then"}[kind]
            db.execute("UPDATE samples SET response = ?, n_generated_tokens = ?, finish_reason = ?, "
                       "grader_version = NULL, status = NULL, correct = NULL WHERE key = ?",
                       (text, 10 if kind != "cut" else 6, "length" if kind == "cut" else "stop", key))
    db.close()
    result = run_sweep(cfg, progress=False)
    assert result.n_generated == 0  # regraded from the store, nothing generated again
    summary = result.summary.set_index("alpha")
    assert list(summary.loc[[0.0, 0.5, 1.0], "accuracy_pct"]) == pytest.approx([25.0, 75.0, 50.0])
    assert summary.loc[1.0, "n_truncated_no_answer"] == 1  # its last number is the gold, but it never committed
    assert list(summary.loc[[0.0, 0.5, 1.0], "mean_tokens"]) == pytest.approx([10.0, 10.0, 9.0])
    for alpha in (0.0, 0.5, 1.0):
        row = summary.loc[alpha]
        assert row["acu"] == pytest.approx(100 * row["accuracy_pct"] / (row["params_b"] * row["mean_tokens"]))
        assert 0 < row["acu"] and row["acu_ci_low"] < row["acu"] < row["acu_ci_high"]
    assert summary.loc[0.5, "accuracy_change_pct"] == pytest.approx(50.0)


def test_generated_token_count_is_exact(tiny_model, tmp_path):
    """Count = tokens the model emitted up to and including EOS; re-tokenising is not how we count."""
    from cotbench.backends import HFBackend
    from cotbench.records import GenerationRequest, SamplingSettings

    backend = HFBackend(str(tiny_model), batch_size=4, dtype="float32")  # exact comparison with generate: no bf16
    prompts = ["<|user|>1+1?</s><|assistant|>", "<|user|>a much longer question about eggs and ducks</s><|assistant|>"]
    requests = [GenerationRequest(str(i), p, None, SamplingSettings(max_new_tokens=7)) for i, p in enumerate(prompts)]
    batch = [g for b in backend.generate(requests) for g in b]
    for g, prompt in zip(sorted(batch, key=lambda g: g.request_id), prompts):
        alone = backend.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        full = backend.model.generate(**alone, max_new_tokens=7, do_sample=False, pad_token_id=2)
        new = full[0, alone["input_ids"].shape[1]:].tolist()
        expected = new.index(2) + 1 if 2 in new else len(new)
        assert g.n_generated_tokens == expected
        assert g.n_prompt_tokens == alone["input_ids"].shape[1]


def test_rerun_skips_what_is_done(tiny_model, tiny_valve, tmp_path):
    cfg = config(tiny_model, tiny_valve, tmp_path / "run")
    assert run_sweep(cfg, progress=False).n_generated == 9
    again = run_sweep(cfg, progress=False)
    assert again.n_generated == 0 and again.summary["n"].sum() == 9
    wider = run_sweep(config(tiny_model, tiny_valve, tmp_path / "run", alphas=(0.0, 0.5, 1.0, 1.25)), progress=False)
    assert wider.n_generated == 3  # only the new α


class _Killed(Exception):
    pass


def test_resume_after_interrupted_run(tiny_model, tiny_valve, tmp_path):
    """Die after the first batch: that batch stays stored and graded; the rerun does only the rest."""
    from cotbench.backends import HFBackend

    cfg = config(tiny_model, tiny_valve, tmp_path / "run")
    backend = HFBackend(cfg.model, cfg.valve, batch_size=2, dtype=cfg.dtype)
    real_generate = backend.generate

    def dies_after_one_batch(requests):
        iterator = real_generate(requests)
        yield next(iterator)
        raise _Killed()

    backend.generate = dies_after_one_batch
    with pytest.raises(_Killed):
        run_sweep(cfg, backend=backend, progress=False)
    store = Store(cfg.out_dir(), create=False)
    kept = store.samples()
    store.close()
    assert len(kept) == 2
    resumed = run_sweep(cfg, progress=False)
    assert resumed.n_generated == 7 and resumed.summary["n"].sum() == 9


def test_changed_protocol_regrades_without_regenerating(tiny_model, tiny_valve, tmp_path):
    run_sweep(config(tiny_model, tiny_valve, tmp_path / "run"), progress=False)
    again = run_sweep(config(tiny_model, tiny_valve, tmp_path / "run", protocol="paper"), progress=False)
    assert again.n_generated == 0 and set(again.summary["protocol"]) == {"paper"}


def test_incompatible_run_dir_is_refused_and_kept(tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "run"
    run_sweep(config(tiny_model, tiny_valve, out), progress=False)
    with pytest.raises(RunDirError, match="max_new_tokens: stored 6, now 9"):
        run_sweep(config(tiny_model, tiny_valve, out, max_new_tokens=9), progress=False)
    store = Store(out, create=False)
    assert len(store.samples()) == 9
    store.close()


def test_without_valve_there_is_one_point_per_task(tiny_model, tmp_path):
    cfg = RunConfig(model=str(tiny_model), tasks=("arithmetic", "svamp"), limit=2, max_new_tokens=4,
                    grade_workers=0, out=str(tmp_path / "novalve"))
    summary = run_sweep(cfg, progress=False).summary
    assert len(summary) == 2 and summary["alpha"].isna().all() and (summary["valve"] == "").all()


def test_grading_in_worker_processes(tiny_model, tmp_path):
    cfg = RunConfig(model=str(tiny_model), tasks=("arithmetic",), limit=3, max_new_tokens=4, grade_workers=1,
                    out=str(tmp_path / "pool"))
    summary = run_sweep(cfg, progress=False).summary
    assert summary["n"].sum() == 3 and summary["n_ungraded"].sum() == 0


def test_verdicts_of_an_older_grader_are_regraded(tiny_model, tiny_valve, tmp_path):
    import sqlite3

    from cotbench.grading import grader_id

    cfg = config(tiny_model, tiny_valve, tmp_path / "run")
    run_sweep(cfg, progress=False)
    db = sqlite3.connect(cfg.out_dir() / "samples.sqlite")
    with db:  # as if graded by another version of the code or of math-verify
        db.execute("UPDATE samples SET grader_version = 'math-000000000000', reason = 'stale'")
    assert run_sweep(cfg, progress=False).n_generated == 0
    rows = db.execute("SELECT DISTINCT grader_version, reason = 'stale' FROM samples").fetchall()
    assert rows == [(f"{grader_id('math')}|thinking=<think>,</think>", 0)]


def test_params_override_sets_acu_scale(tiny_model, tmp_path):
    cfg = RunConfig(model=str(tiny_model), tasks=("arithmetic",), limit=2, max_new_tokens=4, grade_workers=0,
                    params_b=32, out=str(tmp_path / "p"))
    row = run_sweep(cfg, progress=False).summary.iloc[0]
    assert row["params_b"] == 32
    assert row["acu"] == pytest.approx(100 * row["accuracy_pct"] / (32 * row["mean_tokens"]))


def test_a_model_that_fails_to_load_does_not_claim_the_run_dir(tiny_model, tmp_path):
    from cotbench.errors import ModelLoadError

    out = tmp_path / "run"
    with pytest.raises(ModelLoadError):
        run_sweep(RunConfig(model="no-such-org/no-such-model-xyz", out=str(out), tasks=("arithmetic",)), progress=False)
    ok = run_sweep(RunConfig(model=str(tiny_model), out=str(out), tasks=("arithmetic",), limit=1, max_new_tokens=2,
                             grade_workers=0), progress=False)
    assert ok.n_generated == 1


def test_another_served_model_is_refused_in_the_same_run_directory(tiny_model, tmp_path):
    """--backend openai: the served name picks the weights behind one --model label; a run directory of one
    served model refuses another before any request (its samples would be reported as the first's)."""
    out = tmp_path / "served"
    first = RunConfig(model=str(tiny_model), backend="openai", base_url="http://127.0.0.1:9/v1", served_model="a",
                      tasks=("arithmetic",), limit=2, grade_workers=0, out=str(out))
    store = Store(out)
    store.claim(first.identity())
    store.close()
    other = RunConfig(**{**first.to_dict(), "served_model": "b", "valve": None})
    with pytest.raises(RunDirError, match="served_model: stored 'a', now 'b'"):
        run_sweep(other, progress=False)


def test_a_model_retrained_in_place_is_another_model(tiny_model, tmp_path):
    """Same path, other weights (a LoRA merged into the middle layers changes no header): the directory of
    the first refuses the second instead of reporting its samples as the new model's."""
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cfg = RunConfig(model=str(model), tasks=("arithmetic",), limit=2, max_new_tokens=4, grade_workers=0,
                    dtype="float32", out=str(tmp_path / "run"))
    run_sweep(cfg, progress=False)
    assert run_sweep(cfg, progress=False).n_generated == 0  # unchanged: resumes
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(k for k in tensors if "layers.0." in k and k.endswith("weight"))[0]
    tensors[name] = tensors[name] + 1e-3  # one layer nudged, the file's size and header unchanged
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(RunDirError, match="model_content"):
        run_sweep(cfg, progress=False)


def test_the_content_fingerprint_is_cached_against_the_file(tiny_model, tmp_path, monkeypatch):
    from cotbench.backends import loading

    source = loading.resolve_model(str(tiny_model))
    first = loading.content_fingerprint(source)
    calls = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: calls.append(str(path)) or real_open(path, *a, **k))
    assert loading.content_fingerprint(source) == first
    assert not [c for c in calls if c.endswith(".safetensors")]  # the cache answered: no weight file read again


def test_numerics_are_recorded_per_sample_never_keyed_and_mixed_rows_are_flagged(tiny_model, tiny_valve, tmp_path,
                                                                                capsys):
    """Deterministic generation (the CPU path as shipped) records no batch size: another one changes no token
    and nothing is flagged. With a path switched off, batch size and scheduler are recorded and mixed rows
    flagged."""
    import sqlite3

    from cotbench.backends import HFBackend

    def recorded(out):
        with sqlite3.connect(out / "samples.sqlite") as db:
            return [json.loads(n) for (n,) in db.execute("SELECT numerics FROM samples")]

    out = tmp_path / "run"
    run_sweep(config(tiny_model, tiny_valve, out, limit=2, batch_size=2), progress=False)
    capsys.readouterr()
    grown = run_sweep(config(tiny_model, tiny_valve, out, limit=3, batch_size=3), progress=False)
    assert grown.n_generated == 3 and "other numerics" not in capsys.readouterr().err
    assert all(r["deterministic"] is True and "batch_size" not in r for r in recorded(out))
    assert not grown.summary["mixed_numerics"].any()
    assert "- generation: deterministic" in (out / "report.md").read_text()

    def not_deterministic(batch_size):
        backend = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=batch_size)
        backend.lean_prefill = False  # prefill through SDPA: rows depend on their batch mates
        return backend

    out = tmp_path / "sdpa"
    run_sweep(config(tiny_model, tiny_valve, out, limit=2, batch_size=2), backend=not_deterministic(2), progress=False)
    capsys.readouterr()
    grown = run_sweep(config(tiny_model, tiny_valve, out, limit=3, batch_size=3), backend=not_deterministic(3),
                      progress=False)
    assert grown.n_generated == 3  # another batch size reuses the 6 stored samples: numerics are not keyed
    err = capsys.readouterr().err
    assert "6 stored samples were generated under other numerics" in err and '"batch_size": 2' in err
    records = recorded(out)
    assert sorted(r["batch_size"] for r in records) == [2] * 6 + [3] * 3
    assert all(r["scheduler"] == "continuous" and "torch" in r and r["deterministic"] is False for r in records)
    assert grown.summary["mixed_numerics"].all()
    report = (out / "report.md").read_text()
    assert "more than one setting of batch size" in report
    assert "- generation: not deterministic for 9 of 9 samples (switched off: lean_prefill)" in report
