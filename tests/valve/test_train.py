"""Valve training on a tiny random model: the loss falls, β scales each sample, stages save adapters."""
import json

import pytest

from cotbench.errors import DataError, ValveError
from cotbench.valve.data import plusplus_examples, read_mixchain
from cotbench.valve.train import TrainConfig, train_valve


def _pairs(path, n=16):
    rows = [{"question": f"What is {i} plus {i + 1}?", "solution": f"{i} + {i + 1} = {2 * i + 1}\n\\boxed{{{2 * i + 1}}}"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _mixchain(path, n=8):
    rows = []
    for i in range(n):
        short = f"\\boxed{{{2 * i}}}"
        mid = f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}"
        long = f"We add {i} and {i}. First {i}, then {i} more, so {i} + {i} = {2 * i}. The answer is \\boxed{{{2 * i}}}"
        rows.append({"question": f"Double {i}?", "answer": str(2 * i), "target": str(2 * i),
                     "solution_0": short, "solution_1": mid, "solution_2": long,
                     "correct_0": True, "correct_1": True, "correct_2": True})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def _cfg(tiny_model, data, out, **extra):
    settings = dict(base=str(tiny_model), data=str(data), out=str(out), batch_size=4, epochs=4, lr=3e-2,
                    target_modules=("q_proj", "v_proj", "up_proj"))
    settings.update(extra)
    return TrainConfig(**settings)


def test_cotvalve_loss_falls_and_adapter_loads(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = train_valve(_cfg(tiny_model, _pairs(tmp_path / "d.jsonl"), tmp_path / "v", epochs=8), progress=False)
    losses = _losses(out)
    assert sum(losses[-4:]) / 4 < 0.97 * sum(losses[:4]) / 4  # a frozen random head limits how far it can fall
    card = json.loads((out / "valve_card.json").read_text())
    assert card["optimizer_steps"] == 32 and card["command"].startswith("cotbench valve train")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out)  # any PEFT user can load it
    assert not (out / "checkpoint").exists()


def test_prompt_tokens_are_masked(tiny_model):
    from transformers import AutoTokenizer

    from cotbench.valve.data import TrainExample
    from cotbench.valve.train import _Encoder

    encode = _Encoder(AutoTokenizer.from_pretrained(tiny_model), 512)
    ids, labels = encode(TrainExample("What is 1+1?", "2"))
    n_prompt = len(encode.prompt_ids("What is 1+1?"))
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert labels[-1] == encode.tokenizer.eos_token_id


def test_beta_follows_the_definition():
    from cotbench.valve.data import MixChainRow

    row = MixChainRow("q", ("a", "bb", "cccc"), (10, 20, 30), (True, True, True), "f:1")
    betas = [e.beta for e in plusplus_examples([row], count_tokens=len)]
    assert betas == [1.0, 0.5, 0.0]
    counted = MixChainRow("q", ("aa", "aaaaaa"), (None, None), (True, True), "f:2")
    assert [e.beta for e in plusplus_examples([counted], count_tokens=len)] == [1.0, 0.0]
    wrong_dropped = MixChainRow("q", ("a", "bb", "ccc"), (1, 2, 3), (True, False, True), "f:3")
    assert [e.beta for e in plusplus_examples([wrong_dropped], count_tokens=len)] == [1.0, 0.0]


def test_plusplus_runs_each_sample_at_its_beta(tiny_model, tmp_path, monkeypatch):
    import cotbench.valve.apply as apply

    seen = []
    real = apply.valve_strength

    def spy(model, alpha):
        seen.append(alpha)
        return real(model, alpha)

    monkeypatch.setattr(apply, "valve_strength", spy)
    data = _mixchain(tmp_path / "m.jsonl")
    out = train_valve(_cfg(tiny_model, data, tmp_path / "pp", method="plusplus"), progress=False)
    card = json.loads((out / "valve_card.json").read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    expected = {e.beta for e in plusplus_examples(read_mixchain(data), lambda t: len(tok(t)["input_ids"]))}
    assert set(seen) == expected - {0.0} and 1.0 in seen and all(0 < b < 1 for b in expected - {0.0, 1.0})
    assert card["skipped_beta0_examples"] == 8  # each question's longest chain, counted once (not per epoch)
    losses = _losses(out)
    assert losses[-1] < losses[0]


def test_progressive_saves_one_adapter_per_stage(tiny_model, tmp_path):
    from safetensors.torch import load_file

    out = train_valve(_cfg(tiny_model, _mixchain(tmp_path / "m.jsonl"), tmp_path / "p", method="progressive",
                           epochs=1), progress=False)
    stages = ["stage_0_solution_2", "stage_1_solution_1", "stage_2_solution_0"]  # longest first
    weights = [load_file(str(out / s / "adapter_model.safetensors")) for s in stages]
    assert json.loads((out / "valve_card.json").read_text())["stages"] == stages
    key = next(k for k in weights[0] if "lora_B" in k)
    assert not (weights[0][key] == weights[2][key]).all()  # the same Δθ kept training


def _adapter(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def _same_weights(a, b):
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _interrupted_at(step, real):
    """train._trainer_class, with a Ctrl-C (a real SIGINT) arriving during optimizer step ``step``."""
    import os
    import signal

    def classes():
        trainer, progress = real()

        class Interrupting(progress):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    os.kill(os.getpid(), signal.SIGINT)
                return super().on_step_end(args, state, control, **kwargs)

        return trainer, Interrupting

    return classes


def test_interrupted_training_resumes_to_the_same_weights(tiny_model, tmp_path, monkeypatch):
    import cotbench.valve.train as train

    data = _pairs(tmp_path / "d.jsonl")
    uninterrupted = train_valve(_cfg(tiny_model, data, tmp_path / "whole", save_every=2), progress=False)
    cfg = _cfg(tiny_model, data, tmp_path / "r", save_every=2)
    real = train._trainer_class
    monkeypatch.setattr(train, "_trainer_class", _interrupted_at(7, real))  # Ctrl-C arrives during step 7
    with pytest.raises(KeyboardInterrupt):
        train_valve(cfg, progress=False)
    assert list((tmp_path / "r" / "checkpoints" / "main").glob("checkpoint-7"))  # saved where it stopped
    assert not (tmp_path / "r" / "valve_card.json").exists()  # not complete, and does not look complete
    monkeypatch.setattr(train, "_trainer_class", real)
    out = train_valve(cfg, progress=False)
    assert json.loads((out / "valve_card.json").read_text())["optimizer_steps"] == 16
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == list(range(1, 17))
    _same_weights(_adapter(out), _adapter(uninterrupted))  # resumed exactly: optimizer, data order, RNG
    assert not (out / "checkpoints").exists()


def test_kill_minus_9_during_training_resumes_to_the_same_weights(tiny_model, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data = _pairs(tmp_path / "d.jsonl")
    uninterrupted = train_valve(_cfg(tiny_model, data, tmp_path / "whole", save_every=3), progress=False)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "cotbench", "valve", "train", "--base", str(tiny_model), "--data", str(data),
            "--out", str(out), "--batch-size", "4", "--epochs", "4", "--lr", "0.03", "--save-every", "3",
            "--target-modules", "q_proj,v_proj,up_proj"]
    run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints" / "main").glob("checkpoint-*/trainer_state.json")):
        assert run.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (out / "valve_card.json").exists()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_weights(_adapter(out), _adapter(uninterrupted))
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))  # steps redone after the kill are logged once


def test_a_damaged_checkpoint_is_a_clear_error(tiny_model, tmp_path, monkeypatch):
    import cotbench.valve.train as train

    cfg = _cfg(tiny_model, _pairs(tmp_path / "d.jsonl"), tmp_path / "r", save_every=2)
    real = train._trainer_class
    monkeypatch.setattr(train, "_trainer_class", _interrupted_at(4, real))
    with pytest.raises(KeyboardInterrupt):
        train_valve(cfg, progress=False)
    monkeypatch.setattr(train, "_trainer_class", real)
    [state] = (tmp_path / "r" / "checkpoints" / "main").glob("checkpoint-*/trainer_state.json")
    state.write_text("{ not json")
    with pytest.raises(ValveError, match="damaged.*Delete"):
        train_valve(cfg, progress=False)
    (tmp_path / "r" / "train_run.json").write_text("nonsense")
    with pytest.raises(ValveError, match="train_run.json is damaged"):
        train_valve(cfg, progress=False)


def test_bad_training_input(tiny_model, tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"question": "q", "solution_0": "a"}) + "\n")
    with pytest.raises(DataError, match="one.jsonl:1: 1 correct solution"):
        train_valve(_cfg(tiny_model, one, tmp_path / "x", method="plusplus"), progress=False)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match="missing.jsonl:1: missing field 'solution'"):
        train_valve(_cfg(tiny_model, missing, tmp_path / "y"), progress=False)


def test_output_dir_holding_another_valve_is_refused(tiny_model, tmp_path):
    data = _pairs(tmp_path / "d.jsonl", n=4)
    train_valve(_cfg(tiny_model, data, tmp_path / "v", epochs=1), progress=False)
    with pytest.raises(ValveError, match="already holds a trained valve with other settings \\(lr\\)"):
        train_valve(_cfg(tiny_model, data, tmp_path / "v", epochs=1, lr=1e-3), progress=False)
