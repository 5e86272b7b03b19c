"""Supervised fine-tuning with LoRA or QLoRA: notebook 01's recipe as a script.

Run it from the repository root (with the course's environment, e.g. `.venv/bin/python`):

    python scripts/sft.py --profile cpu                      # LoRA on the full-precision model, as notebook 01
    python scripts/sft.py --profile cpu --qlora              # the same LoRA on an NF4 base: QLoRA (notebook 06)
    python scripts/sft.py --profile tiny --qlora --quant-type fp4 --lora-r 32 --output-dir outputs/my_run
    python scripts/sft.py --profile cpu --qlora --base DIR/base --init-adapter DIR/adapter   # LoftQ start (notebook 06)

It saves the adapter (`save_pretrained`) with `train_info.json`: loss history, seconds, and the peak memory of
this process (RSS, and CUDA memory on a GPU). Notebook 06 runs it in a fresh process for each arm, because peak
memory belongs to a whole process (`helpers.isolated.train_isolated`); the pipeline runs it for notebook 01's adapter.

On several processes (README, "Scaling out"), each trains on its share of every batch (the global batch is
processes x batch x accumulation) and the first one writes the adapter:

    accelerate launch --config_file configs/cpu_ddp_2proc.yaml scripts/sft.py --profile tiny   # 2 CPU processes, gloo
    accelerate launch --config_file configs/fsdp.yaml scripts/sft.py --profile a100            # 8 GPUs, FSDP
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers package

from helpers import Profile, get_profile, setup
from helpers.errors import OutputPathError
from helpers.paths import as_sentence, check_replaceable, outputs_dir
from helpers.profiles import ProfileError

# torch, transformers, TRL and PEFT are imported where they are used: a bad argument is refused in about a second,
# before any of them (or a model) is loaded


def positive(kind):
    """An argparse type: a number of ``kind`` above 0, or a usage error that says so."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}")
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} must be above 0 (and finite)")
        return value
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="tiny, cpu, t4, l4, a100 (default: COURSE_PROFILE, else detected)")
    parser.add_argument("--profile-json", help="a whole profile saved with Profile.to_json (what notebooks pass)")
    parser.add_argument("--qlora", action="store_true", help="train on a 4-bit bitsandbytes base (QLoRA)")
    parser.add_argument("--quant-type", default="nf4", choices=["nf4", "fp4"], help="4-bit format of the QLoRA base")
    parser.add_argument("--no-double-quant", dest="double_quant", action="store_false",
                        help="keep the block scales of the QLoRA base in fp32")
    parser.add_argument("--quant-storage", default="uint8", choices=["uint8", "bf16", "fp16"],
                        help="dtype the QLoRA base's 4-bit weights are stored in; FSDP needs the compute dtype (bf16)")
    parser.add_argument("--lora-r", type=positive(int), help="LoRA rank (alpha follows as 2 x rank)")
    parser.add_argument("--learning-rate", type=positive(float))
    parser.add_argument("--max-steps", type=positive(int))
    parser.add_argument("--base", help="a model folder to train on instead of the profile's model (e.g. a LoftQ base)")
    parser.add_argument("--init-adapter", help="a saved LoRA adapter to start from (e.g. LoftQ's initialisation) "
                                               "instead of a new one")
    parser.add_argument("--output-dir", help="where the adapter goes (default outputs/sft_<kind>_script/<profile>)")
    parser.add_argument("--trained-by", default="scripts/sft.py", help="recorded in train_info.json")
    args = parser.parse_args(argv)
    try:
        args.profile_obj = checked_profile(args)
        if args.base and (problem := model_folder_problem(args.base)):   # checked without loading it
            raise ValueError(f"--base: {as_sentence(problem)} Give the folder "
                             "that holds the model's config.json and weights (or leave --base out to train on the "
                             "profile's model).")
        if args.init_adapter and not (Path(args.init_adapter) / "adapter_config.json").is_file():
            raise ValueError(f"--init-adapter {args.init_adapter}: no adapter_config.json there, so it is not a saved "
                             "LoRA adapter. Give the folder save_pretrained wrote (notebook 06's LoftQ cell makes one), "
                             "or leave --init-adapter out to start from a new adapter.")
        if args.output_dir:
            check_replaceable(args.output_dir, "--output-dir")
    except (ValueError, OutputPathError, ProfileError) as exc:
        parser.error(str(exc))   # exit 2 with the message, before anything is loaded
    return args


def model_folder_problem(path: str) -> str | None:
    """Why ``path`` cannot be loaded as a model (a mistyped folder, a file, a folder without config.json)."""
    from helpers.models import local_folder_problem

    return local_folder_problem(path)


def check_sft_model(path: str | None) -> None:
    """``--model`` of scripts/dpo.py and grpo.py: ValueError saying what to do when ``path`` (given) is not a model
    folder; nothing when it is, or when it is left out (notebook 01's model is used)."""
    if path and (problem := model_folder_problem(path)):
        raise ValueError(f"--model: {as_sentence(problem)} Give the SFT "
                         "model folder (config.json and weights), or leave --model out to use notebook 01's.")


def checked_profile(args: argparse.Namespace) -> Profile:
    """The profile of ``--profile-json`` (a file Profile.to_json wrote) or ``--profile``, or ValueError saying what
    to do: the same check for every script."""
    if not args.profile_json:
        return get_profile(args.profile)
    path = Path(args.profile_json)
    if args.profile:
        raise ValueError(f"give --profile or --profile-json, not both (got {args.profile!r} and {path}).")
    if not path.is_file():
        raise ValueError(f"--profile-json {path}: no such file. Write one with "
                         "Path(...).write_text(profile.to_json()), or give --profile tiny|cpu|t4|a100 instead.")
    try:
        return Profile.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as exc:   # not JSON, a field missing, a field unknown
        raise ValueError(f"--profile-json {path} is not a saved profile ({type(exc).__name__}: {exc}). Write it "
                         "with profile.to_json(), or give --profile tiny|cpu|t4|a100 instead.") from None


def recipe(profile: Profile, output_dir: str):
    """The LoRA adapter and the trainer settings (``LoraConfig``, ``SFTConfig``): notebook 01's section 4, cell
    for cell."""
    from peft import LoraConfig
    from trl import SFTConfig

    from helpers import training

    peft_config = LoraConfig(
        r=profile.lora_r, lora_alpha=profile.lora_alpha, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=profile.sft_steps,
        per_device_train_batch_size=profile.train_batch_size,
        gradient_accumulation_steps=profile.grad_accum,
        learning_rate=profile.sft_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, profile.sft_steps // 12),
        max_length=profile.max_length,                      # longer examples would be cut (none are, see notebook 01)
        gradient_checkpointing=profile.gradient_checkpointing,
        logging_steps=max(1, profile.sft_steps // 20),
        save_strategy="no",
        report_to="none",
        seed=0,
        data_seed=0,
        **training.precision_kwargs(profile),               # use_cpu / bf16 / fp16: decided by the hardware
    )
    return peft_config, args


STORAGE = {"uint8": "uint8", "bf16": "bfloat16", "fp16": "float16"}   # --quant-storage -> torch dtype name


def load_base(profile: Profile, qlora: bool, quant_type: str = "nf4", double_quant: bool = True,
              path: str | None = None, quant_storage: str = "uint8"):
    """The model LoRA trains on (the profile's, or the folder ``path``): full precision, or (QLoRA) 4-bit and
    prepared for training (``quant_storage``: the dtype the packed 4-bit weights are stored in)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    from helpers import models

    if not qlora:
        return models.load_model(profile, path)
    bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                    bnb_4bit_use_double_quant=double_quant,
                                    bnb_4bit_compute_dtype=profile.compute_dtype_4bit,
                                    bnb_4bit_quant_storage=getattr(torch, STORAGE[quant_storage]))   # FSDP: the compute dtype
    model = models.load_model(profile, path, quantization_config=bnb_config)
    # freezes the base, casts the norms to fp32, lets gradients flow into checkpointed frozen layers
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=profile.gradient_checkpointing)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)   # every argument and path checked before anything is loaded
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from trl import SFTTrainer

    from helpers import data, manifests, models, training
    from helpers.isolated import MemoryMonitor, save_run

    profile = args.profile_obj
    overrides = {"sft_steps": args.max_steps, "sft_learning_rate": args.learning_rate,
                 "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r if args.lora_r else None}
    profile = dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})
    kind = "qlora" if args.qlora else "lora"
    profile = setup(f"{args.trained_by}: {kind}, fresh process", profile=profile)
    output_dir = check_replaceable(args.output_dir or training.adapter_dir(profile, f"sft_{kind}_script"),
                                   "--output-dir")

    memory = MemoryMonitor()   # samples this process's memory from here on, model loading included
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tokenizer = models.load_tokenizer(profile)
    peft_config, sft_args = recipe(profile, str(outputs_dir("trainer", f"{kind}_{profile.name}")))
    # the data is read and checked before the model is loaded: a bad row costs seconds, not a model load
    rows = data.within_length(tokenizer, data.sft_rows(profile), sft_args.max_length)   # longer rows: counted, left out
    model = load_base(profile, args.qlora, args.quant_type, args.double_quant, args.base, args.quant_storage)
    if args.init_adapter:   # start from a saved adapter (LoftQ): it brings its own LoraConfig
        model = PeftModel.from_pretrained(model, args.init_adapter, is_trainable=True)
        peft_config = None
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[memory.callback],
    )
    with training.hardware_fixes(trainer):
        trainer.train()

    settings = manifests.recipe_settings(profile.model_id, peft_config or model.peft_config["default"], sft_args, rows,
                                        kind, args.quant_type, args.double_quant,
                                        manifests.start_settings(args.base, args.init_adapter))
    return save_run(trainer, profile, output_dir, settings, memory, args.trained_by, kind=kind)


if __name__ == "__main__":
    main()
