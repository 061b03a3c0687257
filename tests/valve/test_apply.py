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


@pytest.fixture(scope="module")
def rslora_valve(tiny_model, tmp_path_factory):
    """rsLoRA (scale lora_alpha/√r) with a per-layer alpha pattern: PEFT's scaling is not lora_alpha/r."""
    from conftest import make_valve

    return make_valve(tiny_model, tmp_path_factory.mktemp("rslora"), targets=("q_proj", "v_proj", "up_proj"),
                      r=4, lora_alpha=8, use_rslora=True, alpha_pattern={"up_proj": 2})


def _scalings(model):
    return {name: dict(m.scaling) for name, m in model.named_modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict)}


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.5])
def test_rslora_valve_scales_exactly_and_is_restored(tiny_model, rslora_valve, inputs, alpha):
    from peft import PeftModel

    wrapped = attach_valve(_load(tiny_model), rslora_valve)
    before = _scalings(wrapped)
    assert any(abs(v - 8 / 4 ** 0.5) < 1e-12 for s in before.values() for v in s.values())  # rsLoRA: 8/√4
    reference = PeftModel.from_pretrained(_load(tiny_model), rslora_valve).eval()
    manual = copy.deepcopy(_load(tiny_model))
    state = dict(manual.named_parameters())
    for name, module in reference.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
            with torch.no_grad():
                state[name.replace("base_model.model.", "") + ".weight"] += alpha * delta
    with valve_strength(wrapped, alpha):
        for name, scaling in _scalings(wrapped).items():
            assert scaling == {k: v * alpha for k, v in before[name].items()}
        assert torch.allclose(_logits(wrapped, inputs), _logits(manual, inputs), atol=1e-5)
    assert _scalings(wrapped) == before  # restored exactly, not recomputed


def test_merged_export_of_an_rslora_valve_is_theta_plus_alpha_delta(tiny_model, rslora_valve, inputs, tmp_path):
    from cotbench.valve.export import export_merged

    [merged_dir] = export_merged(str(tiny_model), rslora_valve, [0.5], tmp_path / "merged")
    wrapped = attach_valve(_load(tiny_model), rslora_valve)
    with valve_strength(wrapped, 0.5):
        expected = _logits(wrapped, inputs)
    assert torch.allclose(_logits(_load(merged_dir), inputs), expected, atol=1e-5)


@pytest.mark.parametrize("variant,match", [({"use_dora": True}, "DoRA"),
                                           ({"modules_to_save": ["lm_head"]}, "modules_to_save")])
def test_valves_that_cannot_be_scaled_exactly_are_refused(tiny_model, tmp_path, variant, match):
    from conftest import make_valve

    valve = make_valve(tiny_model, tmp_path / "v", **variant)
    with pytest.raises(ValveError, match=f"{match}.*Retrain it as a plain LoRA"):
        read_valve_config(valve)


def test_fingerprint_ignores_the_recorded_base_name_but_not_the_scale(tiny_model, tmp_path):
    import json
    import shutil

    from conftest import make_valve

    a = make_valve(tiny_model, tmp_path / "a")
    renamed, rescaled = tmp_path / "renamed", tmp_path / "rescaled"
    for target, change in ((renamed, {"base_model_name_or_path": "org/other-name"}), (rescaled, {"lora_alpha": 16})):
        shutil.copytree(a, target)
        config = json.loads((target / "adapter_config.json").read_text())
        (target / "adapter_config.json").write_text(json.dumps({**config, **change}))
    assert valve_fingerprint(renamed) == valve_fingerprint(a) != valve_fingerprint(rescaled)


def test_attaching_a_valve_recorded_for_another_base_name_does_not_warn(tiny_model, tmp_path):
    import json
    import warnings

    from conftest import make_valve

    valve = make_valve(tiny_model, tmp_path / "v")
    config = json.loads((valve / "adapter_config.json").read_text())
    (valve / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/portable"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attach_valve(_load(tiny_model), valve)
