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

from datasets import Dataset
from trl import DPOTrainer

from helpers import Profile, get_profile, setup
from helpers import data, dpo, models, pipeline, training
from helpers.artifacts import content_hash
from helpers.isolated import MemoryMonitor, save_run
from helpers.paths import outputs_dir

from sft import positive  # noqa: E402  (scripts/sft.py, next to this file)


def columns(text: str) -> dict[str, str]:
    """An argparse type: ``prompt=question,chosen=good,rejected=bad`` as a dict (the course's column -> yours)."""
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: write course=yours pairs, e.g. prompt=question,chosen=good,rejected=bad")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="tiny, cpu, t4, a100 (default: COURSE_PROFILE, else detected)")
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.columns and not args.data:
        sys.exit("--columns maps the columns of your --data file; give --data too.")
    profile = Profile.from_json(Path(args.profile_json).read_text()) if args.profile_json else get_profile(args.profile)
    overrides = {"dpo_steps": args.max_steps, "dpo_learning_rate": args.learning_rate, "dpo_beta": args.beta,
                 "preference_dataset": args.preference_dataset}
    profile = dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})
    profile = setup(f"{args.trained_by}: DPO, fresh process", profile=profile)
    output_dir = Path(args.output_dir or training.adapter_dir(profile, "dpo"))
    memory = MemoryMonitor()
    # DPOConfig(...) of notebook 02's section 4 (helpers.dpo.dpo_config_kwargs); building it also sets up the
    # processes under `accelerate launch` (gloo on CPU, NCCL on GPUs)
    config = dpo.dpo_config(profile, str(outputs_dir("trainer", f"dpo_script_{profile.name}")))
    tokenizer = models.load_tokenizer(profile)
    with config.main_process_first(desc="SFT model and pairs"):   # the first process builds what is missing
        sft_dir = Path(args.model) if args.model else pipeline.sft_merged(profile, tokenizer)
        pairs = (data.load_own(args.data, "preference", args.columns) if args.data
                 else dpo.preference_rows(profile, "dpo_train"))
    pairs = dpo.check_lengths(tokenizer, dpo.clean_pairs(pairs, name="DPO training pairs"), config.max_length)
    trainer = DPOTrainer(
        model=models.load_model(profile, str(sft_dir)),   # the reference is this model with the new adapter off
        args=config,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=training.lora_config(profile),
        callbacks=[memory.callback],
    )
    with training.hardware_fixes(trainer):
        trainer.train()

    inputs = pipeline.dpo_inputs(profile, sft_dir)   # what notebook 02's adapter is checked against
    if args.data:
        inputs["pairs_sha256"] = content_hash(pairs)
    return save_run(trainer, profile, output_dir, inputs, memory, args.trained_by, kind="dpo", pairs=len(pairs),
                    train_seconds=trainer.state.log_history[-1].get("train_runtime"), sft_model=str(sft_dir),
                    data=args.data or profile.preference_dataset)


if __name__ == "__main__":
    main()
