"""Extraction at full rank reproduces the tuned model; an exported α-copy equals θ + α·Δθ; MixChain layout."""
import json

import pytest
import torch

from cotbench.errors import ValveError
from cotbench.valve.apply import attach_valve, valve_strength
from cotbench.valve.export import export_alpha_copies, export_merged
from cotbench.valve.extract import extract_valve


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


@pytest.fixture(scope="module")
def tuned_model(tiny_model, tmp_path_factory):
    """The tiny model with every attention/MLP weight changed, and one norm weight changed too."""
    model = _model(tiny_model)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.add_(0.05 * torch.randn_like(p))
        model.model.layers[0].input_layernorm.weight.add_(0.1)
    out = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(out)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_full_rank_extraction_reproduces_the_tuned_linear_layers(tiny_model, tuned_model, tmp_path):
    report = extract_valve(str(tiny_model), str(tuned_model), rank="full", out=tmp_path / "v", progress=False)
    assert report["max_relative_error"] < 1e-5
    assert "model.layers.0.input_layernorm.weight" in report["not_captured_non_linear_deltas"]
    # put the norm change into the base too: then α = 1 must equal the tuned model
    base = _model(tiny_model)
    with torch.no_grad():
        base.model.layers[0].input_layernorm.weight.add_(0.1)
    wrapped = attach_valve(base, tmp_path / "v")
    with valve_strength(wrapped, 1.0):
        assert torch.allclose(_logits(wrapped, IDS), _logits(_model(tuned_model), IDS), atol=1e-4)
    low = extract_valve(str(tiny_model), str(tuned_model), rank=2, out=tmp_path / "low", progress=False)
    assert 0.1 < low["max_relative_error"] < 1  # truncation is reported, not hidden


def test_extraction_refuses_bad_input(tiny_model, tuned_model, tmp_path, tmp_path_factory):
    with pytest.raises(ValveError, match="rank 64 is larger than these layers allow"):
        extract_valve(str(tiny_model), str(tuned_model), rank=64, out=tmp_path / "a", progress=False)
    from conftest import make_tiny_model

    wider = make_tiny_model(tmp_path_factory.mktemp("wider"), hidden=48)
    with pytest.raises(ValveError, match="differ in size|different parameters"):
        extract_valve(str(tiny_model), str(wider), rank=2, out=tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.5])
def test_exported_alpha_copy_equals_theta_plus_alpha_delta(tiny_model, tiny_valve, tmp_path, alpha):
    from peft import PeftModel

    (copy,) = export_alpha_copies(tiny_valve, [alpha], tmp_path)
    plain = PeftModel.from_pretrained(_model(tiny_model), copy).eval()  # no cotbench involved in loading
    ours = attach_valve(_model(tiny_model), tiny_valve)
    with valve_strength(ours, alpha):
        expected = _logits(ours, IDS)
    assert torch.allclose(_logits(plain, IDS), expected, atol=1e-5)
    (merged,) = export_merged(str(tiny_model), tiny_valve, [alpha], tmp_path / "m")
    assert torch.allclose(_logits(_model(merged), IDS), expected, atol=1e-4)
    with pytest.raises(ValveError, match="already exists"):
        export_alpha_copies(tiny_valve, [alpha], tmp_path)


def test_mixchain_build_writes_the_published_layout(tiny_model, tiny_valve, tmp_path):
    import pandas as pd

    from cotbench.valve.data import read_mixchain
    from cotbench.valve.mixchain import build_mixchain

    counts = build_mixchain(str(tiny_model), str(tiny_valve), [0.0, 1.0], "gsm8k", tmp_path / "mix.jsonl", limit=3,
                            max_new_tokens=6, keep_incorrect=True, progress=False, grade_workers=0)
    assert counts["rows"] == 3
    rows = [json.loads(line) for line in (tmp_path / "mix.jsonl").read_text().splitlines()]
    for row in rows:
        assert {"question", "answer", "target", "solution_0", "solution_1", "solution_0_token", "solution_1_token",
                "correct_0", "correct_1"} <= set(row)
        assert row["solution_0_token"] <= row["solution_1_token"]  # level 0 is the shortest chain
        assert "####" in row["answer"]  # the reference solution; `target` is its final answer
    assert len(pd.read_parquet(tmp_path / "mix.parquet")) == 3
    assert len(read_mixchain(tmp_path / "mix.parquet")) == 3  # the trainers read both formats
