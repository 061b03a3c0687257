"""Valve training as the CoT-Valve paper describes it: LoRA SFT with the loss on response tokens only.

- ``cotvalve``: θ + Δθ learns the target chains (one (question, solution) per row).
- ``plusplus`` (CoT-Valve++): MixChain rows; each solution trains at its own β, the forward pass running at
  θ + β·Δθ, so the gradient reaching Δθ is scaled by β too. β = 0 samples (each question's longest chain)
  would run the base model and give Δθ no gradient at all, so they are left out and counted in the card.
- ``progressive`` (CoT-Valve+P): MixChain levels from longest to shortest, continuing the same Δθ, with an
  adapter saved after each stage (``stage_<i>_solution_<k>/``) so each stage can be swept.

The loop is ``transformers.Trainer`` (AdamW at a constant learning rate, gradient clipping at 1.0, gradient
accumulation, seeded shuffling, checkpoints of weights, optimizer and RNG state every ``save_every`` steps into
``<out>/checkpoints/``, exact resume); cotbench adds only the masked-prompt examples (``_Encoder``) and, for
CoT-Valve++, the β-scaled forward pass (``_ValveTrainer.compute_loss``). Ctrl-C or SIGTERM saves a checkpoint
and stops; the same command resumes, from the last checkpoint after a ``kill -9``. The finished valve lands in
``<out>`` with ``valve_card.json``, written last.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from cotbench.errors import ConfigError, ValveError
from cotbench.files import write_text
from cotbench.valve.data import TrainExample, level_examples, levels_longest_first, plusplus_examples, read_mixchain, read_pairs

METHODS = ("cotvalve", "plusplus", "progressive")
CARD = "valve_card.json"


@dataclass(frozen=True)
class TrainConfig:
    base: str = "smollm2"
    data: str = ""
    out: str = ""
    method: str = "cotvalve"
    question_field: str = "question"
    solution_field: str = "solution"
    rank: int = 8  # the paper: r=2 for QwQ-32B, r=32 for Llama; 8 is plenty for a 135M model
    lora_alpha: int = 16  # PEFT's own scale numerator (not the valve strength α)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lr: float = 2e-4  # the usual LoRA SFT learning rate
    epochs: int = 1  # per stage for `progressive`
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512  # prompt + solution tokens; longer examples are cut from the end
    seed: int = 0
    save_every: int = 50  # optimizer steps between checkpoints
    limit: int | None = None  # first N training rows
    device: str = "auto"
    save_dtype: str = "float32"  # float16 halves the adapter file; loading casts it back to the model's dtype

    def __post_init__(self):
        problems = []
        if isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(t.strip() for t in self.target_modules.split(",") if t.strip()))
        if self.method not in METHODS:
            problems.append(f"method '{self.method}' is not one of {', '.join(METHODS)}")
        if not self.data:
            problems.append("no training data given (--data FILE)")
        if not self.out:
            problems.append("no output directory given (--out DIR)")
        for name in ("rank", "lora_alpha", "epochs", "batch_size", "grad_accum", "max_length", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a whole number >= 1, got {value!r}")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            problems.append(f"save_dtype must be float32, float16 or bfloat16, got {self.save_dtype!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr!r}")
        if problems:
            raise ConfigError(problems)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Stage:
    name: str  # "" for single-stage methods; "stage_<i>_solution_<k>" for progressive
    examples: tuple[TrainExample, ...]


def plan_stages(cfg: TrainConfig, count_tokens) -> list[Stage]:
    if cfg.method == "cotvalve":
        examples = read_pairs(cfg.data, cfg.question_field, cfg.solution_field)
        return [Stage("", tuple(examples[:cfg.limit]))]
    rows = read_mixchain(cfg.data)[:cfg.limit]
    if cfg.method == "plusplus":
        return [Stage("", tuple(plusplus_examples(rows, count_tokens)))]
    return [Stage(f"stage_{i}_solution_{level}", tuple(level_examples(rows, level)))
            for i, level in enumerate(levels_longest_first(rows))]


class _Encoder:
    """(question, solution) -> input ids and labels; the prompt is the evaluation prompt, masked out."""

    def __init__(self, tokenizer, max_length: int):
        from cotbench.prompts import PromptConfig, build_messages
        from cotbench.records import Problem

        self.tokenizer, self.max_length = tokenizer, max_length
        self._messages = lambda q: build_messages(Problem("train", "", q, ""), PromptConfig())

    def prompt_ids(self, question: str) -> list[int]:
        messages = self._messages(question)
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        from cotbench.prompts import render_plain

        return self.tokenizer(render_plain(messages))["input_ids"]

    def __call__(self, example: TrainExample) -> tuple[list[int], list[int]]:
        prompt = self.prompt_ids(example.question)
        answer = self.tokenizer(example.solution, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        ids = (prompt + answer)[:self.max_length]
        labels = ([-100] * len(prompt) + answer)[:self.max_length]
        return ids, labels


class _Examples:
    """Encoded examples as a map-style dataset: input ids, masked labels, and the β each trains at."""

    def __init__(self, examples: Sequence[TrainExample], encode: _Encoder):
        self.rows = [(*encode(e), e.beta) for e in examples]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        ids, labels, beta = self.rows[index]
        return {"input_ids": ids, "labels": labels, "beta": beta}


class _Collator:
    """Right padding (training needs no generation alignment); padded label positions are -100."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "beta": torch.tensor([r["beta"] for r in rows], dtype=torch.float64)}


def _trainer_class():
    from transformers import Trainer, TrainerCallback

    class ValveTrainer(Trainer):
        """Trainer with one change: under CoT-Valve++ each β group of a batch runs at θ + β·Δθ."""

        loss_is_scaled_for_ga = False  # our loss is a batch mean: the Trainer divides it by the accumulation steps

        def __init__(self, *args, plusplus: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.plusplus = plusplus
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            from cotbench.valve import apply

            beta = inputs.pop("beta")
            if not self.plusplus:
                out = model(**inputs)
                return (out.loss, out) if return_outputs else out.loss
            total = None
            for b in sorted(set(beta.tolist())):
                rows = beta == b
                with apply.valve_strength(model, b):  # the gradient reaching Δθ is scaled by β as well
                    out = model(**{k: v[rows] for k, v in inputs.items()})
                part = out.loss * rows.sum() / len(beta)
                total = part if total is None else total + part
            return (total, out) if return_outputs else total

    class Progress(TrainerCallback):
        """train_log.jsonl (one line per optimizer step, rewritten from the resumed step after a kill), and
        Ctrl-C / SIGTERM turned into "save a checkpoint and stop"."""

        def __init__(self, log_path: Path, stage: str):
            self.log_path, self.stage, self.stop_requested = log_path, stage, False

        def on_train_begin(self, args, state, control, **kwargs):
            if self.log_path.is_file():  # steps after the checkpoint we resume from are done again: drop them
                kept = [line for line in self.log_path.read_text(encoding="utf-8").splitlines()
                        if json.loads(line)["stage"] != self.stage or json.loads(line)["step"] <= state.global_step]
                write_text(self.log_path, "".join(line + "\n" for line in kept))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                with open(self.log_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"stage": self.stage, "epoch": state.epoch, "step": state.global_step,
                                             "loss": logs["loss"]}) + "\n")

        def on_step_end(self, args, state, control, **kwargs):
            if self.stop_requested:
                control.should_save = control.should_training_stop = True

    return ValveTrainer, Progress


def check_out_dir(cfg: TrainConfig) -> str:
    """'fresh', 'resume' or 'done'; a directory holding another valve is an error."""
    out = Path(cfg.out)
    card, started = out / CARD, out / RUN_FILE
    for path, what in ((card, "a trained valve"), (started, "an unfinished training run")):
        if path.is_file():
            try:
                recorded = json.loads(path.read_text()).get("config")
            except (ValueError, AttributeError) as exc:
                raise ValveError(f"{path} is damaged ({exc}). Delete {out} to train from scratch.") from None
            if recorded != cfg.to_dict():
                diff = sorted(k for k in set(recorded or {}) | set(cfg.to_dict())
                              if (recorded or {}).get(k) != cfg.to_dict().get(k))
                raise ValveError(f"{out} already holds {what} with other settings ({', '.join(diff)}). "
                                 "Choose another --out, or delete that directory.")
            return "done" if path == card else "resume"
    if (out / "adapter_config.json").is_file():
        raise ValveError(f"{out} already holds an adapter that cotbench did not train here. Choose another --out.")
    return "fresh"


RUN_FILE = "train_run.json"  # the settings of an unfinished run: the same command resumes it


def train_valve(cfg: TrainConfig, progress: bool = True) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from cotbench.backends.hf import pick_device
    from cotbench.backends.loading import load_model_and_tokenizer, resolve_model

    out = Path(cfg.out)
    if check_out_dir(cfg) == "done":
        return out
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(resolve_model(cfg.base), torch.float32, device)
    encode = _Encoder(tokenizer, cfg.max_length)
    stages = plan_stages(cfg, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    skipped = sum(1 for stage in stages for e in stage.examples if e.beta == 0.0)
    stages = [Stage(s.name, tuple(e for e in s.examples if e.beta != 0.0)) for s in stages]  # no gradient at β = 0
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules), lora_dropout=0.0)
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ValveError(f"target modules {list(cfg.target_modules)} do not fit {cfg.base}: {exc}") from None
    write_text(out / RUN_FILE, json.dumps({"config": cfg.to_dict()}))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    started, steps = time.perf_counter(), 0
    for index, stage in enumerate(stages):
        if stage.name and (out / stage.name / STAGE_FILE).is_file():
            _load_adapter(model, out / stage.name)  # finished before an interruption: continue from it
            steps += json.loads((out / stage.name / STAGE_FILE).read_text())["optimizer_steps"]
            continue
        steps += _train_stage(model, cfg, stage, index, _Examples(stage.examples, encode), _Collator(pad_id),
                              device, progress)
        if stage.name:
            _save_adapter(model, out / stage.name, cfg.save_dtype, cfg.base, {"optimizer_steps": steps})
    seconds = time.perf_counter() - started
    _save_adapter(model, out, cfg.save_dtype, cfg.base)
    card = {"config": cfg.to_dict(), "method": cfg.method, "n_examples": [len(s.examples) for s in stages],
            "stages": [s.name for s in stages if s.name], "optimizer_steps": steps,
            "skipped_beta0_examples": skipped, "train_seconds": round(seconds, 1), "device": device,
            "command": command_line(cfg)}
    write_text(out / CARD, json.dumps(card, indent=2))  # written last: its presence marks the valve complete
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / RUN_FILE).unlink(missing_ok=True)
    return out


STAGE_FILE = "stage.json"


def _train_stage(model, cfg: TrainConfig, stage: Stage, index: int, data: _Examples, collate: _Collator,
                 device: str, progress: bool) -> int:
    """Train one stage to its end (resuming from its last checkpoint); returns its optimizer steps."""
    import signal

    from transformers import TrainingArguments

    ValveTrainer, Progress = _trainer_class()
    out = Path(cfg.out)
    folder = out / "checkpoints" / (stage.name or "main")
    args = TrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs, learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=cfg.seed, data_seed=cfg.seed + index,
        save_strategy="steps", save_steps=cfg.save_every, save_total_limit=1, logging_steps=1, report_to=[],
        disable_tqdm=not progress, remove_unused_columns=False, use_cpu=device == "cpu", dataloader_num_workers=0)
    callback = Progress(out / "train_log.jsonl", stage.name)
    trainer = ValveTrainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[callback],
                           plusplus=cfg.method == "plusplus")
    resume = _last_checkpoint(folder)

    def request_stop(signum, frame):
        callback.stop_requested = True

    handlers = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, request_stop)
    except ValueError:  # not the main thread: interruption is then the caller's business
        pass
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if callback.stop_requested:
        raise KeyboardInterrupt  # a checkpoint was saved at the step it stopped at: the same command resumes
    return trainer.state.global_step


def _last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint to resume from. One left half-written by a kill (its trainer_state.json,
    written last, missing or unreadable) is removed when an older complete one exists; with none, it is an
    error saying what to do."""
    import re
    import warnings

    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    broken = []
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError) as exc:
            broken.append((path, exc))
            continue
        for bad, exc in broken:
            warnings.warn(f"removing the half-written checkpoint {bad} ({exc}); resuming from {path}", stacklevel=3)
            shutil.rmtree(bad, ignore_errors=True)
        return str(path)
    if broken:
        bad, exc = broken[0]
        raise ValveError(f"the training checkpoint {bad} is damaged (trainer_state.json: {exc}). Delete {bad} to "
                         f"restart this stage, or {folder.parent} to start the training over.")
    return None


def _load_adapter(model, path: Path) -> None:
    from peft import load_peft_weights, set_peft_model_state_dict

    set_peft_model_state_dict(model, load_peft_weights(str(path)))


def _save_adapter(model, path: Path, dtype: str, base: str, stage_info: dict | None = None) -> None:
    """The adapter's files into ``path``, each replaced whole (the folder may hold the run's log and stages);
    a stage's ``stage.json`` is written last, marking it complete."""
    import tempfile

    import torch
    from peft import get_peft_model_state_dict

    from cotbench.backends.loading import portable_name

    state = {k: v.detach().to(getattr(torch, dtype)).cpu() for k, v in get_peft_model_state_dict(model).items()}
    path.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path, prefix=".adapter.", suffix=".partial"))
    try:
        model.save_pretrained(staging, state_dict=state)
        config_path = staging / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = portable_name(base)  # PEFT wrote this machine's resolved path
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for item in staging.iterdir():
            os.replace(item, path / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if stage_info is not None:
        write_text(path / STAGE_FILE, json.dumps(stage_info))


def command_line(cfg: TrainConfig) -> str:
    defaults = TrainConfig(data="x", out="x")
    flags = [f"--{k.replace('_', '-')} {','.join(v) if isinstance(v, tuple) else v}"
             for k, v in asdict(cfg).items() if v != getattr(defaults, k) or k in ("base", "data", "out", "method")]
    return "cotbench valve train " + " ".join(flags)
