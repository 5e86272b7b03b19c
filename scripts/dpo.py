"""Direct Preference Optimization with a new LoRA adapter: notebook 02's recipe as a script.

Run it from the repository root (with the course's environment, e.g. `.venv/bin/python`):

    python scripts/dpo.py --profile cpu                          # on notebook 01's SFT model (built if missing)
    python scripts/dpo.py --profile t4 --preference-dataset Anthropic/hh-rlhf
    python scripts/dpo.py --profile tiny --data data/examples/my_preferences.jsonl \
        --columns prompt=instruction,chosen=good,rejected=bad --output-dir outputs/my_dpo
    accelerate launch --config_file configs/cpu_ddp_2proc.yaml scripts/dpo.py --profile tiny    # 2 processes (DDP)

It trains on the profile's pairs (the skills pairs, or `preference_dataset` from the Hub), or on your own file, and
saves the adapter with `train_info.json` and a manifest of what decided it. With the defaults its manifest equals
what the pipeline asks of notebook 02's adapter (`helpers.pipeline.dpo_inputs`), so notebooks 03-07 reuse it; the
pipeline itself runs this script when the adapter is missing (`helpers.isolated.dpo_isolated`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers package

from helpers import setup
from helpers.errors import DataError, OutputPathError
from helpers.paths import check_replaceable, outputs_dir
from helpers.profiles import ProfileError

from sft import check_sft_model, checked_profile, positive  # noqa: E402  (scripts/sft.py, next to this file)

# torch, TRL and the models are imported in main(), after every argument, path and the --data file are checked


def columns(text: str) -> dict[str, str]:
    """An argparse type: ``prompt=question,chosen=good,rejected=bad`` as a dict (the course's column -> yours)."""
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: write course=yours pairs, e.g. prompt=question,chosen=good,rejected=bad")
    ours = [k.strip() for k, _ in pairs]
    if twice := sorted({k for k in ours if ours.count(k) > 1}):
        raise argparse.ArgumentTypeError(f"{text!r} maps {', '.join(twice)} more than once; give each of the course's "
                                         "columns one column of your file, e.g. prompt=question,chosen=good,rejected=bad")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="tiny, cpu, t4, l4, a100 (default: COURSE_PROFILE, else detected)")
    parser.add_argument("--profile-json", help="a whole profile saved with Profile.to_json (what notebooks pass)")
    parser.add_argument("--model", help="the SFT model folder DPO starts from (default: notebook 01's adapter merged "
                                        "into the base, built if missing)")
    parser.add_argument("--preference-dataset", help="'skills' or a Hub id, e.g. Anthropic/hh-rlhf (default: the profile's)")
    parser.add_argument("--data", help="your own .jsonl or .csv preference file instead")
    parser.add_argument("--columns", type=columns, help="with --data: prompt=...,chosen=...,rejected=... (your column names)")
    parser.add_argument("--max-steps", type=positive(int))
    parser.add_argument("--learning-rate", type=positive(float))
    parser.add_argument("--beta", type=positive(float))
    parser.add_argument("--output-dir", help="where the adapter goes (default outputs/dpo/<profile>: notebook 02's)")
    parser.add_argument("--trained-by", default="scripts/dpo.py", help="recorded in train_info.json")
    args = parser.parse_args(argv)
    try:
        if args.columns and not args.data:
            raise ValueError("--columns maps the columns of your --data file; give --data too.")
        if args.data and args.preference_dataset:
            raise ValueError(f"give --data (your file) or --preference-dataset ({args.preference_dataset}), not both.")
        args.profile_obj = checked_profile(args)
        check_sft_model(args.model)
        if args.output_dir:
            check_replaceable(args.output_dir, "--output-dir")
        args.pairs = own_pairs(args.data, args.columns) if args.data else None   # your file: read and checked now
    except (ValueError, OutputPathError, ProfileError) as exc:
        parser.error(str(exc))   # exit 2 with the message, before any model is loaded or built
    return args


def own_pairs(path: str, mapping: dict[str, str] | None) -> list[dict]:
    """The usable pairs of your ``--data`` file (``helpers.data.load_own``; rows it cannot use are listed and left
    out), or DataError, before the SFT model is built."""
    from helpers import data

    try:
        return data.load_own(path, "preference", mapping)
    except DataError as exc:
        raise ValueError(f"--data {path}: {exc}" + ("" if mapping else " (--columns maps your column names to "
                         "prompt, chosen and rejected)")) from None


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)   # every argument, path and your --data file checked before anything is loaded
    from datasets import Dataset
    from trl import DPOTrainer

    from helpers import dpo, models, pipeline, training
    from helpers.isolated import MemoryMonitor, save_run

    profile = args.profile_obj
    overrides = {"dpo_steps": args.max_steps, "dpo_learning_rate": args.learning_rate, "dpo_beta": args.beta,
                 "preference_dataset": args.preference_dataset}
    profile = dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})
    profile = setup(f"{args.trained_by}: DPO, fresh process", profile=profile)
    output_dir = check_replaceable(args.output_dir or training.adapter_dir(profile, "dpo"), "--output-dir")
    memory = MemoryMonitor()
    # DPOConfig(...) of notebook 02's section 4 (helpers.dpo.dpo_config_kwargs); building it also sets up the
    # processes under `accelerate launch` (gloo on CPU, NCCL on GPUs)
    config = dpo.dpo_config(profile, str(outputs_dir("trainer", f"dpo_script_{profile.name}")))
    tokenizer = models.load_tokenizer(profile)
    with config.main_process_first(desc="pairs"):   # the first process reads (or streams) the pairs
        pairs = args.pairs if args.pairs is not None else dpo.preference_rows(profile, "dpo_train")
    # the pairs are checked before the SFT model is built (minutes on a GPU profile) or loaded
    pairs = dpo.check_lengths(tokenizer, dpo.clean_pairs(pairs, name="DPO training pairs"), config.max_length)
    with config.main_process_first(desc="SFT model"):   # the first process builds it when it is missing
        sft_dir = Path(args.model) if args.model else pipeline.sft_merged(profile, tokenizer)
    trainer = DPOTrainer(
        model=models.load_model(profile, str(sft_dir)),   # the reference is this model with the new adapter off
        args=config,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=(peft_config := training.lora_config(profile)),
        callbacks=[memory.callback],
    )
    with training.hardware_fixes(trainer):
        trainer.train()

    # the manifest records what ran (config, LoRA, pairs); with the defaults it equals pipeline.dpo_inputs
    inputs = pipeline.dpo_run_inputs(config, peft_config, pairs, sft_dir)
    return save_run(trainer, profile, output_dir, inputs, memory, args.trained_by, kind="dpo", pairs=len(pairs),
                    train_seconds=trainer.state.log_history[-1].get("train_runtime"), sft_model=str(sft_dir),
                    data=args.data or profile.preference_dataset)


if __name__ == "__main__":
    main()
