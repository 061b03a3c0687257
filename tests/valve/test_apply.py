"""θ + α·Δθ: α = 0 is exactly the base model, α = 1 exactly the adapter, any α matches a merged copy."""
import copy

import pytest
import torch

from cotbench.errors import ValveError
from cotbench.valve.apply import attach_valve, read_valve_config, valve_fingerprint, valve_strength


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(0)
    return torch.randint(3, 300, (2, 12))


def _logits(model, inputs):
    with torch.inference_mode():
        return model(input_ids=inputs).logits


def test_alpha_zero_is_exactly_the_base_model(tiny_model, tiny_valve, inputs):
    base_logits = _logits(_load(tiny_model), inputs)
    wrapped = attach_valve(_load(tiny_model), tiny_valve)
    with valve_strength(wrapped, 0.0):
        assert torch.equal(_logits(wrapped, inputs), base_logits)
    assert not torch.allclose(_logits(wrapped, inputs), base_logits)  # the valve really changes the model


def test_alpha_one_is_exactly_the_adapter(tiny_model, tiny_valve, inputs):
    from peft import PeftModel

    reference = PeftModel.from_pretrained(_load(tiny_model), tiny_valve).eval()
    wrapped = attach_valve(_load(tiny_model), tiny_valve)
    with valve_strength(wrapped, 1.0):
        ours = _logits(wrapped, inputs)
    assert torch.equal(ours, _logits(reference, inputs))
    merged = reference.merge_and_unload()
    assert torch.allclose(ours, _logits(merged, inputs), atol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 1.25, -0.5])
def test_any_alpha_equals_theta_plus_alpha_delta(tiny_model, tiny_valve, inputs, alpha):
    """Compare against weights built by hand: W + α·(lora_alpha/r)·B·A for every targeted layer."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(_load(tiny_model), tiny_valve)
    manual = copy.deepcopy(_load(tiny_model))
    state = dict(manual.named_parameters())
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
            target = name.replace("base_model.model.", "") + ".weight"
            with torch.no_grad():
                state[target] += alpha * delta
    wrapped = attach_valve(_load(tiny_model), tiny_valve)
    with valve_strength(wrapped, alpha):
        assert torch.allclose(_logits(wrapped, inputs), _logits(manual, inputs), atol=1e-5)


def test_strength_is_restored_after_an_error(tiny_model, tiny_valve, inputs):
    wrapped = attach_valve(_load(tiny_model), tiny_valve)
    at_one = _logits(wrapped, inputs)
    with pytest.raises(RuntimeError):
        with valve_strength(wrapped, 0.0):
            raise RuntimeError("boom")
    assert torch.equal(_logits(wrapped, inputs), at_one)


def test_adapter_with_other_shapes_is_refused(tiny_model, foreign_valve):
    with pytest.raises(ValveError, match="does not fit the base model"):
        attach_valve(_load(tiny_model), foreign_valve)


def test_adapter_with_missing_target_modules_is_refused(tiny_model, misnamed_valve):
    with pytest.raises(ValveError, match="does not fit the base model"):
        attach_valve(_load(tiny_model), misnamed_valve)


def test_not_an_adapter_directory(tmp_path, tiny_model):
    with pytest.raises(ValveError, match="does not exist"):
        read_valve_config(tmp_path / "nope")
    with pytest.raises(ValveError, match="no adapter_config.json"):
        read_valve_config(tiny_model)


def test_fingerprint_changes_with_the_weights(tiny_model, tmp_path):
    from conftest import make_valve

    a = make_valve(tiny_model, tmp_path / "a", seed=1)
    b = make_valve(tiny_model, tmp_path / "b", seed=2)
    assert valve_fingerprint(a) != valve_fingerprint(b) and len(valve_fingerprint(a)) == 12
