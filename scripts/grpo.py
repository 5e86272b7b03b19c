"""GRPO with a new LoRA adapter, rewarded by the skills checker: notebook 08's recipe as a script.

Run it from the repository root (with the course's environment, e.g. `.venv/bin/python`):

    python scripts/grpo.py --profile cpu                           # on notebook 01's SFT model (built if missing)
    python scripts/grpo.py --profile cpu --beta 0.04 --num-generations 8 --output-dir outputs/my_grpo
    python scripts/grpo.py --profile tiny --model outputs/sft_merged/tiny --max-steps 1
    accelerate launch --config_file configs/cpu_ddp_2proc.yaml scripts/grpo.py --profile tiny    # 2 processes (DDP)

Each step samples ``num_generations`` answers to each of ``grpo_prompts_per_step`` training prompts (the skills
split DPO trains on, held out from the evaluation prompts), scores every answer with the course's checker
(`helpers.grpo.correctness_reward`: 1 when the answer is right, else 0) and moves the new LoRA adapter towards the
answers that beat their group's mean. The trainer settings are notebook 08's `GRPOConfig(...)` cell
(`helpers.grpo.grpo_config_kwargs`; a test keeps the two equal). It saves the adapter with `train_info.json`
(rewards per step, the share of groups whose rewards did not vary, where the time went) and a manifest of what
ran: the SFT model's weights fingerprint, the GRPOConfig settings, the LoRA config, the reward and the prompts.

Under `accelerate launch` each process samples and scores its share of every step's answers (the global batch is
processes x ``per_device_train_batch_size``, which TRL needs to be a multiple of ``num_generations``) and the first
one writes the adapter.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers package

from helpers import Profile, setup
from helpers.errors import OutputPathError
from helpers.paths import check_replaceable, outputs_dir
from helpers.profiles import ProfileError

from sft import check_sft_model, checked_profile, positive  # noqa: E402  (scripts/sft.py, next to this file)

# torch, TRL and the models are imported in main(), after every argument and path is checked



def non_negative(text: str) -> float:
    """An argparse type for --beta: a finite number of 0 or more (0: no reference model, no KL term)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more (and finite), e.g. 0.04; 0 means no KL term")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="tiny, cpu, t4, l4, a100 (default: COURSE_PROFILE, else detected)")
    parser.add_argument("--profile-json", help="a whole profile saved with Profile.to_json (what notebooks pass)")
    parser.add_argument("--model", help="the SFT model folder GRPO starts from (default: notebook 01's adapter merged "
                                        "into the base, built if missing)")
    parser.add_argument("--max-steps", type=positive(int))
    parser.add_argument("--learning-rate", type=positive(float))
    parser.add_argument("--beta", type=non_negative, help="KL weight against the SFT model (0: no reference model)")
    parser.add_argument("--num-generations", type=positive(int), help="answers sampled per prompt (2 or more)")
    parser.add_argument("--output-dir", help="where the adapter goes (default outputs/grpo/<profile>)")
    parser.add_argument("--trained-by", default="scripts/grpo.py", help="recorded in train_info.json")
    args = parser.parse_args(argv)
    try:
        profile = checked_profile(args)
        overrides = {"grpo_steps": args.max_steps, "grpo_learning_rate": args.learning_rate, "grpo_beta": args.beta,
                     "grpo_num_generations": args.num_generations}
        # the profile checks the values (num_generations 2 or more: GRPO compares answers within a group)
        args.profile_obj = dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})
        check_sft_model(args.model)
        if args.output_dir:
            check_replaceable(args.output_dir, "--output-dir")
    except (ValueError, OutputPathError, ProfileError) as exc:
        parser.error(str(exc))   # exit 2 with the message, before any model is loaded or built
    return args


def recipe(profile: Profile, output_dir: str | Path | None = None):
    """The LoRA adapter and the trainer settings (``LoraConfig``, ``GRPOConfig``) of notebook 08's cell. Building
    the ``GRPOConfig`` also sets up the processes under ``accelerate launch`` (gloo on CPU, NCCL on GPUs)."""
    from trl import GRPOConfig

    from helpers import grpo, training

    output_dir = output_dir or outputs_dir("trainer", f"grpo_script_{profile.name}")
    return training.lora_config(profile), GRPOConfig(**grpo.grpo_config_kwargs(profile, output_dir=output_dir))


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)   # every argument and path checked before anything is loaded
    from trl import GRPOTrainer

    from helpers import data, grpo, models, pipeline, training
    from helpers.isolated import MemoryMonitor, save_run

    profile = setup(f"{args.trained_by}: GRPO, fresh process", profile=args.profile_obj)
    output_dir = check_replaceable(args.output_dir or training.adapter_dir(profile, "grpo"), "--output-dir")
    memory = MemoryMonitor()
    peft_config, config = recipe(profile)
    tokenizer = models.load_tokenizer(profile)
    rows = grpo.prompt_rows(profile)   # notebook 08's prompts: one pass of the run (steps x prompts per step)
    with config.main_process_first(desc="SFT model"):   # the first process builds it when it is missing
        sft_dir = Path(args.model) if args.model else pipeline.sft_merged(profile, tokenizer)
    reward = grpo.RewardLog(grpo.correctness_reward, config.num_generations)   # the checker, recording each group
    trainer = GRPOTrainer(
        model=models.load_model(profile, str(sft_dir)),   # beta > 0: the reference is this model, adapter off
        reward_funcs=[reward],
        args=config,
        train_dataset=data.as_dataset(rows),
        processing_class=tokenizer,
        peft_config=peft_config,   # a new LoRA adapter
        callbacks=[memory.callback],
    )
    phases = grpo.PhaseTimer(trainer, [reward])
    with training.hardware_fixes(trainer):
        trainer.train()

    return save_run(trainer, profile, output_dir, pipeline.grpo_run_inputs(config, peft_config, rows, sft_dir), memory,
                    args.trained_by, kind="grpo", prompts=len(rows), sft_model=str(sft_dir),
                    train_seconds=trainer.train_seconds, seconds_per_step=phases.summary(),
                    within_group_reward_std=reward.within_group_std(),
                    zero_variance_share=reward.zero_variance_share(), by_skill=reward.by_skill())


if __name__ == "__main__":
    main()
