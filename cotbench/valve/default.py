"""The default valve shipped with cotbench: SmolLM2-135M-Instruct trained (CoT-Valve) to answer GSM8K with
its equations only. The target chains are GSM8K train reference solutions shortened programmatically: each
calculator annotation ``<<48/2=24>>`` becomes one line, then ``The final answer is \\boxed{N}.``"""
from __future__ import annotations

from pathlib import Path

from cotbench.valve import targets
from cotbench.valve.train import TrainConfig

SHIPPED = Path(__file__).with_name("default")  # the packaged adapter (adapter_config.json, weights, card)
N_TRAIN = 800  # first 800 GSM8K train rows: enough to learn the style in ~50 steps (~20 min on 2 CPU cores)
# After training, lora_B is multiplied by this, so that α in [0, 1] spans the whole switch from the base
# model's chains to equations only. Trained as is, the switch was complete by α ≈ 0.5 (measured on 16 GSM8K
# test problems: 228, 195, 135, 130, 42 mean tokens at α = 0.1 ... 0.5), leaving half the range flat.
STRENGTH_SCALE = 0.6


def write_training_data(data_dir: str | Path | None, out_file: str | Path, n_rows: int = N_TRAIN) -> int:
    """The shipped valve's data: the first ``n_rows`` GSM8K train rows as equations-only chains."""
    return targets.write_training_data(data_dir, out_file, n_rows, "equations")


def default_config(data_file: str | Path, out: str | Path) -> TrainConfig:
    return TrainConfig(base="smollm2", data=str(data_file), out=str(out), method="cotvalve", rank=4, lora_alpha=16,
                       lr=1e-3, epochs=1, batch_size=16, max_length=384, seed=0, save_every=20,
                       save_dtype="float16")


def default_valve() -> Path | None:
    """The shipped valve directory, or None when this install has none."""
    return SHIPPED if (SHIPPED / "adapter_config.json").is_file() else None


def card_markdown(card: dict) -> str:
    """The human-readable card shipped beside the default valve's weights."""
    cfg = card["config"]
    return "\n".join([
        "# cotbench default valve: SmolLM2-135M-Instruct, GSM8K equations-only chains",
        "",
        "A CoT-Valve LoRA Δθ for the embedded SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32).",
        "At α = 0 the model is unchanged; at α = 1 it answers with the bare equations of its solution.",
        f"After training, lora_B was multiplied by {card.get('strength_scale', 1)} so that α in [0, 1] spans the "
        "whole switch (trained as is, it was complete by α ≈ 0.5).",
        "",
        f"- data: {card.get('data', cfg['data'])}",
        f"- method: {card['method']}; rank {cfg['rank']}, lora_alpha {cfg['lora_alpha']}, modules "
        f"{', '.join(cfg['target_modules'])}",
        f"- lr {cfg['lr']}, {cfg['epochs']} epoch, batch {cfg['batch_size']}, max length {cfg['max_length']}, "
        f"seed {cfg['seed']}, {card['optimizer_steps']} optimizer steps, weights stored as {cfg['save_dtype']}",
        f"- training time: {card['train_seconds'] / 60:.1f} min on {card['device']} (2 cores)",
        f"- reproduce: `{card.get('reproduce', card['command'])}`",
        "",
    ])
