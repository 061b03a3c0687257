"""``cotbench valve ...`` and ``cotbench mixchain ...`` subcommands (parsers and thin handlers)."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from cotbench.valve.train import TrainConfig

_TRAIN_HELP = {
    "base": "base model: Hub id, directory, .gguf file or 'smollm2'",
    "data": "training data: JSONL (question, solution) for cotvalve; MixChain JSONL/Parquet for plusplus, progressive",
    "out": "output directory for the adapter (checkpoints go in <out>/checkpoint; rerun to resume)",
    "method": "cotvalve | plusplus (CoT-Valve++) | progressive (CoT-Valve+P)",
    "target_modules": "comma-separated module names to adapt",
    "epochs": "epochs (per stage for progressive)",
}


def add_commands(sub) -> None:
    valve = sub.add_parser("valve", help="train, build, extract or export valves (LoRA Δθ)")
    vsub = valve.add_subparsers(dest="valve_command", required=True)

    train = vsub.add_parser("train", help="train a valve: CoT-Valve, CoT-Valve++ or CoT-Valve+P",
                            argument_default=argparse.SUPPRESS)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
        train.add_argument(flag, dest=f.name, type=kind, help=_TRAIN_HELP.get(f.name))
    train.set_defaults(func=_cmd_train)

    default = vsub.add_parser("default", help="rebuild the shipped default valve for SmolLM2 from GSM8K train")
    default.add_argument("--data-dir", help="directory with gsm8k/train.jsonl (default: $COTBENCH_DATA_DIR, then the Hub)")
    default.add_argument("--out", default="valves/default")
    default.set_defaults(func=_cmd_default)


def _cmd_train(args) -> int:
    from cotbench.valve.train import train_valve

    settings = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    out = train_valve(TrainConfig(**settings))
    print(f"valve written to {out} (card: {out / 'valve_card.json'})")
    return 0


def _cmd_default(args) -> int:
    from cotbench.valve.default import N_TRAIN, default_config, write_training_data
    from cotbench.valve.train import train_valve

    out = Path(args.out)
    data_file = out.parent / f"{out.name}_data" / "gsm8k_train_equations.jsonl"
    n = write_training_data(args.data_dir, data_file)
    print(f"{n} training rows in {data_file}")
    result = train_valve(default_config(data_file, out))
    card_path = result / "valve_card.json"
    card = json.loads(card_path.read_text())
    card["data"] = (f"first {N_TRAIN} GSM8K train rows (openai/grade-school-math, MIT), reference solutions "
                    f"shortened to their calculator equations + boxed answer: {n} rows kept")
    card["reproduce"] = f"cotbench valve default --data-dir {args.data_dir or '$COTBENCH_DATA_DIR'} --out {args.out}"
    card_path.write_text(json.dumps(card, indent=2))
    print(f"valve written to {result}")
    return 0
