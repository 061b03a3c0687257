"""``cotbench valve ...`` and ``cotbench mixchain ...`` subcommands (parsers and thin handlers)."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from cotbench.files import write_text
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

    data = vsub.add_parser("data", help="short target chains (question, solution) from GSM8K train, for `valve train`")
    data.add_argument("--style", choices=("solutions", "equations"), default="solutions",
                      help="solutions: the reference text without calculator notes; equations: the equations alone")
    data.add_argument("--limit", type=int, default=1000, help="first N train rows (default 1000)")
    data.add_argument("--data-dir", help="directory with gsm8k/train.jsonl (default: $COTBENCH_DATA_DIR, then the Hub)")
    data.add_argument("--out", required=True, help="a .jsonl file")
    data.set_defaults(func=_cmd_data)

    default = vsub.add_parser("default", help="rebuild the shipped default valve for SmolLM2 from GSM8K train")
    default.add_argument("--data-dir", help="directory with gsm8k/train.jsonl (default: $COTBENCH_DATA_DIR, then the Hub)")
    default.add_argument("--out", default="valves/default")
    default.set_defaults(func=_cmd_default)

    extract = vsub.add_parser("extract", help="a valve from two checkpoints: ΔW per linear layer, truncated SVD")
    extract.add_argument("--base", required=True)
    extract.add_argument("--tuned", required=True)
    extract.add_argument("--rank", type=_rank, required=True, help="a whole number, or 'full' (each layer's own full rank)")
    extract.add_argument("--out", required=True)
    extract.set_defaults(func=_cmd_extract)

    export = vsub.add_parser("export", help="one adapter per α (lora_B × α) for multi-LoRA servers; --merged for full models")
    export.add_argument("--valve", required=True)
    export.add_argument("--alphas", required=True, help="comma-separated, e.g. 0.25,0.5,0.75")
    export.add_argument("--out", required=True)
    export.add_argument("--merged", action="store_true", help="also write merged checkpoints θ + α·Δθ (needs --base)")
    export.add_argument("--base", help="base model, for --merged and the serve command")
    export.set_defaults(func=_cmd_export)

    mix = sub.add_parser("mixchain", help="build MixChain data: sweep α on a training split, keep correct chains")
    msub = mix.add_subparsers(dest="mixchain_command", required=True)
    build = msub.add_parser("build")
    build.add_argument("--model", required=True)
    build.add_argument("--valve", required=True)
    build.add_argument("--alphas", required=True)
    build.add_argument("--task", default="gsm8k")
    build.add_argument("--split", default="train")
    build.add_argument("--limit", type=int)
    build.add_argument("--data-dir")
    build.add_argument("--max-new-tokens", type=int, default=512)
    build.add_argument("--keep-incorrect", action="store_true", help="keep wrong chains too (correct_k = false)")
    build.add_argument("--out", required=True, help="a .jsonl file; a .parquet copy is written beside it")
    build.set_defaults(func=_cmd_mixchain)


def _cmd_train(args) -> int:
    from cotbench.valve.train import train_valve

    settings = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    out = train_valve(TrainConfig(**settings))
    print(f"valve written to {out} (card: {out / 'valve_card.json'})")
    return 0


def _cmd_data(args) -> int:
    from cotbench.valve.targets import write_training_data

    n = write_training_data(args.data_dir, args.out, args.limit, args.style)
    print(f"{n} (question, solution) rows in {args.out}; train with: cotbench valve train --data {args.out} ...")
    return 0


def _cmd_default(args) -> int:
    import shutil

    from cotbench.valve.default import N_TRAIN, STRENGTH_SCALE, card_markdown, default_config, write_training_data
    from cotbench.valve.export import export_alpha_copies
    from cotbench.valve.train import train_valve

    out = Path(args.out)
    data_file = out.parent / f"{out.name}_data" / "gsm8k_train_equations.jsonl"
    n = write_training_data(args.data_dir, data_file)
    print(f"{n} training rows in {data_file}")
    trained = train_valve(default_config(data_file, out.with_name(out.name + "_trained")))
    scaled = export_alpha_copies(trained, [STRENGTH_SCALE], out.with_name(out.name + "_scaled"))[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(scaled, out, dirs_exist_ok=False)
    shutil.rmtree(scaled.parent)
    card = json.loads((trained / "valve_card.json").read_text())
    card["strength_scale"] = STRENGTH_SCALE
    card_path = out / "valve_card.json"
    card["data"] = (f"first {N_TRAIN} GSM8K train rows (openai/grade-school-math, MIT), reference solutions "
                    f"shortened to their calculator equations + boxed answer: {n} rows kept")
    card["reproduce"] = f"cotbench valve default --data-dir {args.data_dir or '$COTBENCH_DATA_DIR'} --out {args.out}"
    write_text(out / "README.md", card_markdown(card))
    write_text(card_path, json.dumps(card, indent=2))
    print(f"valve written to {out} (trained adapter, before scaling: {trained})")
    return 0


def _rank(text: str):
    if text == "full":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rank must be a whole number or 'full', got {text!r}") from None


def _alphas(text: str) -> list[float]:
    from cotbench.config import RunConfig

    return list(RunConfig(valve="-", alphas=text).alphas)  # the same checks and messages as `run --alphas`


def _cmd_extract(args) -> int:
    from cotbench.valve.extract import extract_valve

    report = extract_valve(args.base, args.tuned, args.rank, args.out)
    print(f"valve written to {args.out}: {len(report['layers'])} layers, max relative reconstruction error "
          f"{report['max_relative_error']:.3g} (per layer: {args.out}/extraction_report.json)")
    for name, info in report["not_captured_non_linear_deltas"].items():
        print(f"  not captured (not a linear layer): {name}, relative change {info['relative']:.3g}")
    return 0


def _cmd_export(args) -> int:
    from cotbench.valve.apply import read_valve_config
    from cotbench.valve.export import export_alpha_copies, export_merged, serve_command

    alphas = _alphas(args.alphas)
    if args.merged and not args.base:
        from cotbench.errors import ConfigError

        raise ConfigError("--merged needs --base MODEL (the model the valve was trained on)")
    copies = export_alpha_copies(args.valve, alphas, args.out)
    print(f"{len(copies)} α-scaled adapters in {args.out}: {', '.join(p.name for p in copies)}")
    if args.merged:
        merged = export_merged(args.base, args.valve, alphas, args.out)
        print(f"{len(merged)} merged checkpoints: {', '.join(p.name for p in merged)}")
    base = args.base or read_valve_config(args.valve).base_model_name_or_path or "BASE_MODEL"
    if base == "HuggingFaceTB/SmolLM2-135M-Instruct" and not args.base:
        base = "smollm2"  # the shipped valve's base: the embedded GGUF, no download
    print("serve them with:\n  " + serve_command(base, copies, read_valve_config(args.valve).r))
    print("then: cotbench run --backend openai --base-url http://127.0.0.1:8000/v1 --model " + base
          + f" --valve {args.valve} --alphas {','.join(f'{a:g}' for a in alphas)}")
    return 0


def _cmd_mixchain(args) -> int:
    from cotbench.valve.mixchain import build_mixchain

    counts = build_mixchain(args.model, args.valve, _alphas(args.alphas), args.task, args.out, split=args.split,
                            limit=args.limit, max_new_tokens=args.max_new_tokens, keep_incorrect=args.keep_incorrect,
                            data_dir=args.data_dir)
    print(f"{counts['rows']} MixChain rows in {args.out} (+ .parquet); {counts['questions_without_a_correct_solution']} "
          f"questions had no correct chain; the sweep is stored in {counts['run_dir']}")
    return 0
