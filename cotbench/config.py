"""RunConfig: every setting of a sweep, from the CLI or a YAML/TOML file; it checks itself when built."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cotbench.adapters import DataOptions
from cotbench.errors import ConfigError
from cotbench.prompts import PromptConfig
from cotbench.records import SamplingSettings

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the grid of issue #3's monotonicity check
# --sampling-preset NAME: settings filled in where neither a file nor a flag gives them (build_config).
# r1: DeepSeek-R1's evaluation (temperature 0.6, top-p 0.95, pass@1 averaged over k samples), the settings
# QwQ-32B's model card recommends too; K is left to --samples (R1 used 4 to 64).
SAMPLING_PRESETS = {"r1": {"temperature": 0.6, "top_p": 0.95}}


_DATA, _PROMPT, _SAMPLING = DataOptions(), PromptConfig(), SamplingSettings()  # each default defined once, there


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a sweep. Defaults of data, prompt and sampling settings are those of the records the
    stages use (``DataOptions``, ``PromptConfig``, ``SamplingSettings``), so each is defined in one place."""

    model: str = "smollm2"  # the embedded SmolLM2-135M-Instruct: works offline on a fresh machine
    # PEFT LoRA adapter directory; "default": the shipped SmolLM2 valve when the model is the embedded
    # smollm2 (none otherwise); "none": no valve.
    valve: str | None = "default"
    alphas: tuple[float, ...] | None = None  # None: DEFAULT_ALPHAS with a valve, no α without one
    # "auto[:N[:MAX]]" (given as --alphas): refine a coarse grid from 0 to MAX where points differ most, N in
    # all (alpha_search.py); alphas is then None
    alpha_search: str | None = None
    target_tokens: int | None = None  # find the α whose mean length is within ±5 % of this (bisection)
    tasks: tuple[str, ...] = ("arithmetic",)  # the embedded task needs no data files
    limit: int | None = None  # first N problems of each task
    # Data
    split: str | None = _DATA.split
    data_dir: str | None = None
    data_file: str | None = None
    question_field: str = _DATA.question_field
    answer_field: str = _DATA.answer_field
    id_field: str | None = _DATA.id_field
    answer_format: str = _DATA.answer_format
    n_generated: int = _DATA.n_generated
    difficulty: int = _DATA.difficulty
    # Prompt
    instruction: str | None = None  # None: the task's own instruction (its `instruction`), else prompts.DEFAULT_INSTRUCTION
    system_prompt: str | None = _PROMPT.system_prompt
    n_shot: int = _PROMPT.n_shot
    token_budget: int | None = _PROMPT.token_budget
    # Generation
    backend: str = "hf"  # hf | vllm | openai (cotbench.backends)
    # None: the tasks' own cap (a task may carry one, as the embedded arithmetic task does; the largest of the
    # run's tasks), else SamplingSettings' default. Resolved by generation_cap(); files record the number.
    max_new_tokens: int | None = None
    temperature: float = _SAMPLING.temperature
    top_p: float = _SAMPLING.top_p
    seed: int = _SAMPLING.seed
    stop: tuple[str, ...] = _SAMPLING.stop
    # K samples per (problem, point); > 1 needs temperature > 0. Not part of a run directory's identity: K may
    # grow on the same --out (sample 0's key is the K = 1 key), but it is part of a result's (leaderboard).
    samples: int = 1
    sampling_preset: str | None = None  # the preset build_config applied (recorded; the values are in the fields)
    batch_size: int | str = "auto"  # rows decoded together; auto: 256, fewer if the KV cache would not fit
    scheduler: str = "continuous"  # continuous (the whole α grid in one queue) | static (one α at a time)
    device: str = "auto"
    dtype: str = "auto"
    # Engines other than hf
    engine_args: tuple[str, ...] = ()  # KEY=VALUE options passed to vLLM (tensor_parallel_size=2, max_num_seqs=64)
    vllm_python: str | None = None  # the Python with vLLM installed; None: $COTBENCH_VLLM_PYTHON, then this one
    # vLLM deadlines: the engine's start (vLLM-CPU compiles on its first start) and then each wait for the next
    # finished request; past either the run stops with an error saying what to check, finished samples kept
    vllm_startup_timeout_s: float = 900.0
    vllm_wait_timeout_s: float = 300.0
    base_url: str | None = None  # --backend openai: the server, e.g. http://127.0.0.1:8000/v1
    served_model: str | None = None  # the server's name for the base model; None: the same as `model`
    alpha_model: str = "alpha_{alpha}"  # served name of α's adapter, as `cotbench valve export` names them
    max_concurrency: int = 8  # requests in flight at once: enough to keep a server's batch full
    request_timeout_s: float = 600.0  # per request, long reasoning chains included
    max_retries: int = 5  # on 429 / 5xx / dropped connections, with exponential backoff (the OpenAI client's)
    count_tokens: str = "usage"  # usage: the server's exact completion_tokens | tokenizer: count the text here
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; the key itself is never stored
    # CPU threads of the hf engine (cotbench/threads.py): None leaves torch's as they are (library use); "auto"
    # (the CLI's default) the usable CPUs, fewer while other programs keep some busy; a number fixes it.
    # Not part of a run's identity: it changes speed, never outputs.
    threads: str | int | None = None
    # Scale-out (cotbench/backends/ray_workers.py): None runs here, as always; "auto" joins the cluster `ray start`
    # made, "local" starts one of this machine alone, else host:port or ray://host:port. Not part of a run's
    # identity: the same sweep on 1 worker or 8 has the same keys and continues in the same directory.
    ray: str | None = None
    workers: int | None = None  # engines; None: one per --worker-gpus share of the cluster's GPUs, else 1
    worker_gpus: float = 0.0  # GPUs per worker (0: CPU workers)
    worker_cpus: float | None = None  # CPU cores per worker; None: 1 beside a GPU, else the cluster's cores / workers
    # Grading and metrics
    protocol: str = "math"
    # Reasoning models: "auto" splits off a <think>...</think> block where a response has one (its answer is
    # graded, its tokens counted apart); "OPEN,CLOSE" for other delimiters; "none" to grade whole responses.
    thinking: str = "auto"
    # The sweep axis (cotbench/methods.py): valve (α) | prompt-budget | budget-forcing | nothink (baselines,
    # on the base model); `budgets` are the token budgets of the first two.
    method: str = "valve"
    budgets: tuple[int, ...] = ()
    answer_cue: str = "\n\nFinal Answer: "  # budget forcing: what follows a forced end of thinking (s1's cue)
    grade_timeout_s: float = 5.0  # per verdict, from when a worker starts it; math-verify's default per comparison
    grade_workers: int = 1  # worker processes beside generation; 0: in this process (sympy still in a helper)
    params_b: float | None = None  # None: exact count of the base model; set 32 to match the paper's nominal size
    out: str | None = None  # None: runs/<model>[-<valve>]

    def __post_init__(self):
        problems = self._parse()
        self._resolve_valve()
        problems += self._check()
        if problems:
            raise ConfigError(problems)

    def _check_search(self) -> list[str]:
        """--alphas auto[:N[:MAX]] and --target-tokens: a valve sweep's α, one search at a time."""
        problems = []
        if self.alpha_search is not None:
            from cotbench.alpha_search import parse_auto

            try:
                parse_auto(self.alpha_search)
            except ValueError as exc:
                problems.append(str(exc))
        if self.target_tokens is not None and (not isinstance(self.target_tokens, int)
                                               or isinstance(self.target_tokens, bool) or self.target_tokens < 1):
            problems.append(f"target_tokens must be a whole number of tokens >= 1, got {self.target_tokens!r}")
        searching = [name for name, on in (("--alphas auto", self.alpha_search), ("--target-tokens", self.target_tokens))
                     if on is not None]
        if len(searching) == 2:
            problems.append("--alphas auto and --target-tokens search α in different ways: give one (--target-tokens "
                            "searches between the lowest and highest of --alphas, default 0 and 1)")
        if searching and (self.valve is None or self.method != "valve"):
            problems.append(f"{searching[0]} searches the valve's α: it needs --valve and --method valve")
        return problems

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _parse(self) -> list[str]:
        """Values as files and flags give them ("0,0.5,1", "64") -> the types the fields hold."""
        problems = []
        if isinstance(self.alphas, str) and self.alphas.strip().startswith("auto"):
            self._set("alpha_search", self.alphas.strip())
            self._set("alphas", None)
        for name in ("alphas", "tasks", "stop", "engine_args", "budgets"):  # "0,0.5,1" or a list from a file -> tuple
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,) if name in ("stop", "engine_args") else _split(value)
            if value is not None:
                self._set(name, tuple(value))
        if self.alphas is not None:
            parsed = []
            for a in self.alphas:
                try:
                    value = float(a)
                except (TypeError, ValueError):
                    problems.append(f"alpha {a!r} is not a number; give alphas like 0,0.5,1 (negatives and >1 are allowed)")
                    continue
                if not math.isfinite(value):
                    problems.append(f"alpha {a!r} is not a finite number")
                parsed.append(value)
            self._set("alphas", tuple(parsed))
        if self.budgets and all(str(b).strip().isdigit() for b in self.budgets):
            self._set("budgets", tuple(int(b) for b in self.budgets))
        if isinstance(self.batch_size, str) and self.batch_size.strip().isdigit():
            self._set("batch_size", int(self.batch_size))
        if isinstance(self.threads, str) and self.threads.strip().isdigit():
            self._set("threads", int(self.threads))
        return problems

    def _resolve_valve(self) -> None:
        """"default" -> the shipped valve for the embedded model (none for others); "none"/"" -> None."""
        if self.valve in ("default", "none", ""):
            from cotbench.valve.default import default_valve

            shipped = default_valve() if self.valve == "default" and self.model == "smollm2" else None
            self._set("valve", str(shipped) if shipped else None)

    def _check(self) -> list[str]:
        """Every problem with the settings, all at once: numbers, names, the method, the engine."""
        return (self._check_numbers() + self._check_names() + self._check_method() + self._check_engine()
                + self._check_search())

    def _check_numbers(self) -> list[str]:
        problems = []
        if self.valve is None and self.alphas:
            problems.append("alphas were given but no valve: pass --valve DIR (α scales the valve)")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool)
                                          or self.batch_size < 1):
            problems.append(f"batch_size must be 'auto' or a whole number >= 1, got {self.batch_size!r}")
        if self.threads not in (None, "auto") and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                                   or self.threads < 1):
            problems.append(f"threads must be 'auto' or a whole number >= 1, got {self.threads!r}")
        if isinstance(self.samples, int) and self.samples > 1 and isinstance(self.temperature, (int, float)) \
                and self.temperature <= 0:
            problems.append(f"--samples {self.samples} needs --temperature > 0: greedy decoding gives the same response "
                            "every time (try --sampling-preset r1: temperature 0.6, top-p 0.95)")
        if self.sampling_preset is not None and self.sampling_preset not in SAMPLING_PRESETS:
            problems.append(f"sampling_preset must be one of {', '.join(SAMPLING_PRESETS)}, got {self.sampling_preset!r}")
        for name, low in (("limit", 1), ("samples", 1), ("max_new_tokens", 1), ("n_generated", 1),
                          ("difficulty", 1), ("n_shot", 0), ("grade_workers", 0), ("token_budget", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                problems.append(f"{name} must be a whole number >= {low}, got {value!r}")
        for name in ("temperature", "grade_timeout_s", "params_b", "top_p", "request_timeout_s",
                     "vllm_startup_timeout_s", "vllm_wait_timeout_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                problems.append(f"{name} must be a non-negative number, got {value!r}")
        if self.params_b == 0:
            problems.append("params_b must be > 0 (billions of parameters)")
        if isinstance(self.top_p, (int, float)) and not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (the share of probability mass sampled from), got {self.top_p!r}")
        return problems

    def _check_names(self) -> list[str]:
        """Tasks, grading protocol, backend and scheduler: names their registries know, and what a task or
        backend needs besides (a data file, a server address, KEY=VALUE engine arguments)."""
        from cotbench.adapters import TASKS
        from cotbench.backends import BACKENDS
        from cotbench.backends.hf import SCHEDULERS
        from cotbench.grading import PROTOCOLS

        problems = []
        if not self.tasks:
            problems.append("no tasks given")
        problems += [_registry_message(TASKS, task) for task in self.tasks if task not in TASKS]
        if self.protocol not in PROTOCOLS:
            problems.append(_registry_message(PROTOCOLS, self.protocol))
        if self.backend not in BACKENDS:
            problems.append(_registry_message(BACKENDS, self.backend))
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if "jsonl" in self.tasks and not self.data_file:
            problems.append("task 'jsonl' needs --data FILE")
        bad_args = [a for a in self.engine_args if "=" not in a]
        if bad_args:
            problems.append(f"engine arguments must be KEY=VALUE, got {', '.join(map(repr, bad_args))}")
        if self.backend == "openai" and not self.base_url:
            problems.append("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return problems

    def _check_method(self) -> list[str]:
        """The thinking delimiters and what the length-control method needs of the other settings."""
        problems = []
        try:
            from cotbench.thinking import parse_option

            parse_option(self.thinking)
        except ValueError as exc:
            problems.append(str(exc))
        from cotbench.methods import METHODS

        method = METHODS.get(self.method)
        if method is None:
            problems.append(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        elif method.needs_budgets and not self.budgets:
            problems.append(f"--method {self.method} needs --budgets, e.g. --budgets 64,128,256")
        elif self.budgets and not method.needs_budgets:
            problems.append("--budgets is for --method " + " or ".join(n for n, m in METHODS.items() if m.needs_budgets))
        if any(not isinstance(b, int) or b < 1 for b in self.budgets):
            problems.append(f"budgets must be whole numbers of tokens >= 1, got {self.budgets!r}")
        if method is not None and method.needs_thinking and self.thinking == "none":
            problems.append(f"--method {self.method} needs thinking delimiters: drop --thinking none")
        return problems

    def _check_engine(self) -> list[str]:
        """Settings of the engine behind --backend: served models, Ray workers, engine arguments."""
        problems = []
        if self.count_tokens not in ("usage", "tokenizer"):
            problems.append(f"count_tokens must be usage or tokenizer, got {self.count_tokens!r}")
        if "{alpha}" not in self.alpha_model:
            problems.append(f"alpha_model must hold {{alpha}}, got {self.alpha_model!r} (e.g. alpha_{{alpha}})")
        for name in ("max_concurrency", "max_retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "max_concurrency" else 0):
                problems.append(f"{name} must be a whole number >= {1 if name == 'max_concurrency' else 0}, got {value!r}")
        if self.ray is not None:
            if not str(self.ray).strip():
                problems.append("--ray needs an address: auto (the cluster `ray start` made), local, or HOST:PORT")
            if self.backend not in ("hf", "vllm"):
                problems.append(f"--ray runs --backend hf or vllm in its workers, not {self.backend}")
        elif self.workers is not None or self.worker_gpus or self.worker_cpus is not None:
            problems.append("--workers, --worker-gpus and --worker-cpus are for --ray (e.g. --ray auto --workers 8)")
        if self.workers is not None and (not isinstance(self.workers, int) or isinstance(self.workers, bool)
                                         or self.workers < 1):
            problems.append(f"workers must be a whole number >= 1, got {self.workers!r}")
        for name in ("worker_gpus", "worker_cpus"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
                problems.append(f"{name} must be a non-negative number, got {value!r}")
        if self.engine_args and self.backend == "hf":
            problems.append("--engine-arg is for --backend vllm; the hf backend takes --dtype, --batch-size, --scheduler")
        return problems

    # -- views used by the pipeline stages
    def sweep_alphas(self) -> tuple[float | None, ...]:
        if self.valve is None:
            return (None,)
        return self.alphas or DEFAULT_ALPHAS

    def data_options(self) -> DataOptions:
        return DataOptions(
            data_dir=Path(self.data_dir) if self.data_dir else None, split=self.split,
            data_file=Path(self.data_file) if self.data_file else None, question_field=self.question_field,
            answer_field=self.answer_field, id_field=self.id_field, answer_format=self.answer_format,
            n_generated=self.n_generated, difficulty=self.difficulty, seed=self.seed)

    def prompt_config(self, task_instruction: str | None = None) -> PromptConfig:
        """The prompt settings for one task: an instruction given in the config wins over the task's own."""
        return PromptConfig(self.instruction or task_instruction or _PROMPT.instruction, self.system_prompt,
                            self.n_shot, self.token_budget)

    def generation_cap(self) -> int:
        """max_new_tokens as given, else the largest cap of the run's tasks (the default for a task without one)."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        from cotbench.adapters import TASKS

        return max(getattr(TASKS.get(task), "max_new_tokens", _SAMPLING.max_new_tokens) for task in self.tasks)

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.generation_cap(), float(self.temperature), float(self.top_p), self.seed, self.stop)

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        slug = Path(self.model).name.replace(".gguf", "")
        return Path("runs") / (slug + (f"-{Path(self.valve).name}" if self.valve else ""))

    def identity(self) -> dict[str, Any]:
        """Settings a run directory must keep: changing any would mix incomparable samples in its summary."""
        return identity(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The settings as files record them: portable, so a config.yaml runs on another machine (the
        shipped valve is "default", not this install's path)."""
        settings = {k: _jsonable(v) for k, v in asdict(self).items()}
        settings["max_new_tokens"] = self.generation_cap()  # the number generation used, not "the tasks' own"
        from cotbench.valve.default import default_valve

        shipped = default_valve()
        if shipped is not None and self.valve and Path(self.valve).resolve() == shipped.resolve():
            settings["valve"] = "default"
        return settings


# What a run directory must keep (its samples stay comparable); a larger limit or another protocol may follow.
RUN_IDENTITY = ("model", "valve", "instruction", "system_prompt", "n_shot", "token_budget", "max_new_tokens",
                "temperature", "top_p", "seed", "stop", "backend", "dtype", "params_b", "engine_args", "served_model")
# What else changes a summary row's numbers: which problems (set, split, limit), how they are graded and how
# thinking is split off. A leaderboard row is identified by these and the run identity together.
RESULT_IDENTITY = RUN_IDENTITY + ("samples", "limit", "split", "data_file", "question_field", "answer_field", "id_field",
                                  "answer_format", "n_generated", "difficulty", "protocol", "thinking", "answer_cue")


def identity(settings: dict[str, Any], keys: tuple[str, ...] = RUN_IDENTITY) -> dict[str, Any]:
    """The identifying part of ``settings`` (as ``RunConfig.to_dict`` or a run's config.yaml gives them): the
    run identity by default, ``RESULT_IDENTITY`` for results. A setting a file does not record takes
    RunConfig's default, so an older config.yaml identifies the same as a new one with the same values."""
    defaults = {f.name: _jsonable(f.default) for f in fields(RunConfig)}
    return {k: _jsonable(settings.get(k, defaults.get(k))) for k in keys}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _registry_message(registry, name: str) -> str:
    try:
        registry.get(name)
    except KeyError as exc:
        return str(exc)
    return ""


CONFIG_KEYS = tuple(f.name for f in fields(RunConfig))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a .yaml/.yml/.toml/.json file; unknown keys are an error, not silently ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: use .yaml, .toml or .json")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"config file {path} cannot be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError([f"config file {path}: unknown setting '{k}'" for k in unknown]
                          + [f"known settings: {', '.join(CONFIG_KEYS)}"])
    return data


def build_config(file: str | Path | None = None, **overrides: Any) -> RunConfig:
    """File settings first, then explicit overrides (CLI flags)."""
    settings = load_config_file(file) if file else {}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    preset = SAMPLING_PRESETS.get(settings.get("sampling_preset"), {})
    return RunConfig(**{**preset, **settings})  # a preset's values where the file and the flags are silent
