"""The transformers backend on a tiny random model: stop strings, sampling seeds, dtypes, CUDA."""
import pytest
import torch

from cotbench.backends import HFBackend
from cotbench.errors import ConfigError, ModelLoadError
from cotbench.records import GenerationRequest, SamplingSettings

PROMPT = "<|user|>How many eggs?</s><|assistant|>"


def _one(backend, sampling, prompt=PROMPT, alpha=None):
    return [g for batch in backend.generate([GenerationRequest("r", prompt, alpha, sampling)]) for g in batch][0]


@pytest.fixture(scope="module")
def backend(tiny_model):
    # fp32: the expected tokens come from model.generate, which bf16 decode (C kernel vs SDPA) may round apart
    return HFBackend(str(tiny_model), dtype="float32", batch_size=4)


def test_stop_string_cuts_text_and_counts_tokens_up_to_it(backend):
    encoded = backend.tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False)
    ids = backend.model.generate(**encoded, max_new_tokens=30, do_sample=False, pad_token_id=2)[0, encoded["input_ids"].shape[1]:].tolist()
    text = backend.tokenizer.decode(ids, skip_special_tokens=True)
    stop = text[len(text) // 2:][:2]  # a string the model is known to produce
    expected_n = next(n for n in range(1, len(ids) + 1) if stop in backend.tokenizer.decode(ids[:n], skip_special_tokens=True))
    cut = _one(backend, SamplingSettings(max_new_tokens=30, stop=(stop,)))
    assert cut.finish_reason == "stop" and cut.n_generated_tokens == expected_n
    assert stop not in cut.text and text.startswith(cut.text) and len(cut.text) < len(text)


def test_sampling_is_reproducible_with_a_seed(backend):
    settings = SamplingSettings(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    a, b = _one(backend, settings), _one(backend, settings)
    c = _one(backend, SamplingSettings(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=8))
    assert a.text == b.text and (a.text != c.text or a.n_generated_tokens != c.n_generated_tokens)


def test_bfloat16_runs_and_is_recorded(tiny_model):
    b = HFBackend(str(tiny_model), dtype="bfloat16")
    assert b.describe()["dtype"] == "bfloat16" and next(b.model.parameters()).dtype == torch.bfloat16
    assert _one(b, SamplingSettings(max_new_tokens=3)).n_generated_tokens >= 1


def test_bad_dtype_and_missing_cuda_are_config_errors(tiny_model):
    with pytest.raises(ConfigError, match="dtype 'fp8'"):
        HFBackend(str(tiny_model), dtype="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            HFBackend(str(tiny_model), device="cuda")


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model"):
        HFBackend(str(tmp_path))


@pytest.mark.gpu
def test_cuda_greedy_matches_cpu(tiny_model, tiny_valve):
    cpu = HFBackend(str(tiny_model), str(tiny_valve), device="cpu", dtype="float32")
    gpu = HFBackend(str(tiny_model), str(tiny_valve), device="cuda", dtype="float32")
    for alpha in (0.0, 1.0):
        settings = SamplingSettings(max_new_tokens=10)
        assert _one(cpu, settings, alpha=alpha).text == _one(gpu, settings, alpha=alpha).text


def test_converted_copy_that_cannot_be_written_warns_and_loses_nothing(tiny_model, tmp_path):
    from cotbench.backends.loading import ModelSource, _from_pretrained, _save_converted

    source = ModelSource(str(tiny_model), None, "tiny")
    model, tokenizer = _from_pretrained(source, str(tiny_model), {}, torch.float32)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not cache the converted GGUF.*COTBENCH_CACHE_DIR"):
        _save_converted(model, tokenizer, blocker / "copy")
    _save_converted(model, tokenizer, tmp_path / "cache" / "copy")  # a writable place: a loadable directory
    again, _ = _from_pretrained(source, str(tmp_path / "cache" / "copy"), {}, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["copy"]  # no staging directory left behind


def test_cached_conversion_that_no_longer_loads_is_dropped_and_rebuilt(tiny_model, tmp_path):
    import shutil

    from cotbench.backends.loading import ModelSource, _load_converted

    broken = tmp_path / "copy"
    broken.mkdir()
    shutil.copy(tiny_model / "config.json", broken / "config.json")  # the weights are gone
    with pytest.warns(UserWarning, match="does not load.*reading the GGUF again"):
        assert _load_converted(ModelSource(str(tiny_model), "m.gguf", "tiny"), broken, torch.float32) is None
    assert not broken.exists()  # the next load writes a fresh copy
