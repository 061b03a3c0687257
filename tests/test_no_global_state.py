"""cotbench changes nothing it does not own: other libraries' registries, loggers, backends and tokenizers
are as they were after it ran."""
import logging

import pandas as pd

from cotbench.backends import HFBackend
from cotbench.records import GenerationRequest, SamplingSettings


def test_generation_registers_nothing_with_transformers(tiny_model, tiny_valve):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    attention, masks = dict(AttentionInterface._global_mapping), dict(AttentionMaskInterface._global_mapping)
    backend = HFBackend(str(tiny_model), str(tiny_valve), dtype="float32", batch_size=3)
    implementation = backend.model.config._attn_implementation
    requests = [GenerationRequest(f"r{i}", f"<|user|>q{i}</s><|assistant|>", 0.5 * i, SamplingSettings(max_new_tokens=6))
                for i in range(4)]
    assert sum(len(batch) for batch in backend.generate(requests)) == 4
    assert dict(AttentionInterface._global_mapping) == attention
    assert dict(AttentionMaskInterface._global_mapping) == masks
    assert backend.model.config._attn_implementation == implementation


def test_a_borrowed_tokenizer_is_left_as_it_was(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.padding_side = "right"
    HFBackend.from_loaded(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, "tiny")
    assert tokenizer.padding_side == "right"


def test_grading_adds_no_filter_to_math_verify_loggers():
    from cotbench.grading import grade

    assert grade("\\boxed{(x+1)^2}", "x^2+2x+1").correct  # symbolic: math-verify ran (in a worker)
    for name in ("math_verify.parser", "math_verify.grader"):
        assert logging.getLogger(name).filters == []


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from cotbench.report.plots import plot_curves

    before = matplotlib.get_backend()
    summary = pd.DataFrame([{"model": "m", "valve": "v", "alpha": a, "task": "t", "mean_tokens": 10 + a,
                             "acu": 1.0, "accuracy_pct": 50.0} for a in (0.0, 1.0)])
    assert len(plot_curves(summary, tmp_path)) == 4
    assert matplotlib.get_backend() == before
