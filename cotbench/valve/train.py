"""Valve training as the CoT-Valve paper describes it: LoRA SFT with the loss on response tokens only.

- ``cotvalve``: θ + Δθ learns the target chains (one (question, solution) per row).
- ``plusplus`` (CoT-Valve++): MixChain rows; each solution trains at its own β, the forward pass running at
  θ + β·Δθ, so the gradient reaching Δθ is scaled by β too. β = 0 samples (each question's longest chain)
  would run the base model and give Δθ no gradient at all, so they are skipped and counted in the log.
- ``progressive`` (CoT-Valve+P): MixChain levels from longest to shortest, continuing the same Δθ, with an
  adapter saved after each stage (``stage_<i>_solution_<k>/``) so each stage can be swept.

A run checkpoints every ``save_every`` optimizer steps into ``<out>/checkpoint`` and resumes from it when
started again with the same settings. The finished valve lands in ``<out>`` with ``valve_card.json``.
"""
from __future__ import annotations

import json
import random
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


def _batch_loss(model, encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str):
    import torch

    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (i, lab) in enumerate(encoded):  # right padding: training needs no generation alignment
        ids[row, :len(i)], labels[row, :len(lab)], mask[row, :len(i)] = torch.tensor(i), torch.tensor(lab), 1
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
    return out.loss


def check_out_dir(cfg: TrainConfig) -> str:
    """'fresh', 'resume' or 'done'; a directory holding another valve is an error."""
    out = Path(cfg.out)
    card, state = out / CARD, out / "checkpoint" / "trainer_state.json"
    for path, what in ((card, "a trained valve"), (state, "an unfinished training run")):
        if path.is_file():
            recorded = json.loads(path.read_text()).get("config")
            if recorded != cfg.to_dict():
                diff = sorted(k for k in set(recorded or {}) | set(cfg.to_dict())
                              if (recorded or {}).get(k) != cfg.to_dict().get(k))
                raise ValveError(f"{out} already holds {what} with other settings ({', '.join(diff)}). "
                                 "Choose another --out, or delete that directory.")
            return "done" if path == card else "resume"
    if (out / "adapter_config.json").is_file():
        raise ValveError(f"{out} already holds an adapter that cotbench did not train here. Choose another --out.")
    return "fresh"


def train_valve(cfg: TrainConfig, progress: bool = True) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from tqdm.auto import tqdm

    from cotbench.backends.hf import pick_device
    from cotbench.backends.loading import load_model_and_tokenizer, resolve_model
    from cotbench.valve.apply import valve_strength

    out = Path(cfg.out)
    status = check_out_dir(cfg)
    if status == "done":
        return out
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(resolve_model(cfg.base), torch.float32, device)
    encode = _Encoder(tokenizer, cfg.max_length)
    stages = plan_stages(cfg, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules), lora_dropout=0.0)
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ValveError(f"target modules {list(cfg.target_modules)} do not fit {cfg.base}: {exc}") from None
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    state = {"stage": 0, "epoch": 0, "batch": 0, "step": 0, "skipped_beta0": 0, "seconds": 0.0}
    checkpoint = out / "checkpoint"
    if status == "resume":
        from peft import load_peft_weights

        saved = json.loads((checkpoint / "trainer_state.json").read_text())
        state.update(saved["state"])
        set_peft_model_state_dict(model, load_peft_weights(str(checkpoint)))
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt"))
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train_log.jsonl", "a", encoding="utf-8")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    started = time.perf_counter() - state["seconds"]

    def save_checkpoint():
        state["seconds"] = time.perf_counter() - started
        tmp = out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"config": cfg.to_dict(), "state": state}))
        shutil.rmtree(checkpoint, ignore_errors=True)
        tmp.rename(checkpoint)  # a checkpoint is either whole or absent

    try:
        for stage_index in range(state["stage"], len(stages)):
            stage = stages[stage_index]
            for epoch in range(state["epoch"], cfg.epochs):
                order = list(range(len(stage.examples)))
                random.Random(f"{cfg.seed}:{stage_index}:{epoch}").shuffle(order)
                batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                desc = f"training {stage.name or cfg.method} epoch {epoch + 1}/{cfg.epochs}"
                bar = tqdm(total=len(batches), initial=state["batch"], desc=desc, disable=not progress)
                for b in range(state["batch"], len(batches)):
                    examples = [stage.examples[i] for i in batches[b]]
                    loss = _train_batch(model, examples, encode, pad_id, device, cfg, state, valve_strength)
                    if (b + 1) % cfg.grad_accum == 0 or b + 1 == len(batches):
                        torch.nn.utils.clip_grad_norm_(params, 1.0)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        state["step"] += 1
                    state["batch"] = b + 1
                    log.write(json.dumps({"stage": stage.name, "epoch": epoch, "batch": b, "step": state["step"],
                                          "loss": loss}) + "\n")
                    log.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if state["step"] and state["step"] % cfg.save_every == 0 and (b + 1) % cfg.grad_accum == 0:
                        save_checkpoint()
                bar.close()
                state.update(epoch=epoch + 1, batch=0)
            if stage.name:
                _save_adapter(model, out / stage.name, cfg.save_dtype, cfg.base)
            state.update(stage=stage_index + 1, epoch=0, batch=0)
    except BaseException:
        save_checkpoint()  # interrupted: keep what was learned; the same command resumes
        raise
    finally:
        log.close()
    seconds = time.perf_counter() - started
    _save_adapter(model, out, cfg.save_dtype, cfg.base)
    card = {"config": cfg.to_dict(), "method": cfg.method, "n_examples": [len(s.examples) for s in stages],
            "stages": [s.name for s in stages if s.name], "optimizer_steps": state["step"],
            "skipped_beta0_examples": state["skipped_beta0"], "train_seconds": round(seconds, 1),
            "device": device, "command": command_line(cfg)}
    (out / CARD).write_text(json.dumps(card, indent=2))  # written last: its presence marks the valve complete
    shutil.rmtree(checkpoint, ignore_errors=True)
    return out


def _save_adapter(model, path: Path, dtype: str, base: str) -> None:
    import torch
    from peft import get_peft_model_state_dict

    from cotbench.backends.loading import portable_name

    state = {k: v.detach().to(getattr(torch, dtype)).cpu() for k, v in get_peft_model_state_dict(model).items()}
    model.save_pretrained(path, state_dict=state)
    config_path = path / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = portable_name(base)  # PEFT wrote this machine's resolved path
    write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _train_batch(model, examples, encode, pad_id, device, cfg, state, valve_strength) -> float:
    """Forward + backward for one batch; returns the mean loss. CoT-Valve++ runs each β group at θ + β·Δθ."""
    if cfg.method != "plusplus":
        loss = _batch_loss(model, [encode(e) for e in examples], pad_id, device) / cfg.grad_accum
        loss.backward()
        return loss.item() * cfg.grad_accum
    total, n = 0.0, 0
    for beta in sorted({e.beta for e in examples}):
        group = [e for e in examples if e.beta == beta]
        if beta == 0.0:
            state["skipped_beta0"] += len(group)
            continue
        with valve_strength(model, beta):
            loss = _batch_loss(model, [encode(e) for e in group], pad_id, device)
            (loss * len(group) / (len(examples) * cfg.grad_accum)).backward()
        total, n = total + loss.item() * len(group), n + len(group)
    return total / n if n else 0.0


def command_line(cfg: TrainConfig) -> str:
    defaults = TrainConfig(data="x", out="x")
    flags = [f"--{k.replace('_', '-')} {','.join(v) if isinstance(v, tuple) else v}"
             for k, v in asdict(cfg).items() if v != getattr(defaults, k) or k in ("base", "data", "out", "method")]
    return "cotbench valve train " + " ".join(flags)
