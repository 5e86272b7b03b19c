import pytest
import torch

from helpers import dpo, evaluation, manifests
from helpers.data import DataError
from helpers.models import load_model_and_tokenizer
from helpers.profiles import get_profile


@pytest.fixture(scope="module")
def trained():
    profile = get_profile("tiny")
    model, tok, _ = load_model_and_tokenizer(profile)
    pairs = dpo.preference_rows(profile, n=8)
    # a large learning rate so three steps move the adapter well away from the reference
    trainer = dpo.train_dpo(profile, model, tok, pairs, max_steps=3, learning_rate=5e-3, logging_steps=1)
    return profile, tok, trainer, pairs


def test_from_scratch_loss_matches_trl_on_the_same_batch(trained):
    profile, tok, trainer, pairs = trained
    model = trainer.model
    trl_loss, pairs = dpo.trl_loss_on_first_pairs(trainer, 5)
    policy = dpo.score_pairs(model, tok, pairs)
    with model.disable_adapter():
        reference = dpo.score_pairs(model, tok, pairs)
    ours, chosen_r, rejected_r = dpo.dpo_loss(policy.chosen, policy.rejected, reference.chosen, reference.rejected,
                                              beta=profile.dpo_beta)
    assert abs(trl_loss - ours.item()) < 1e-4, (trl_loss, ours.item())
    assert abs(trl_loss - 0.6931) > 1e-3  # not the trivial log(2) of an untrained adapter
    assert torch.allclose(chosen_r - rejected_r, profile.dpo_beta * ((policy.chosen - reference.chosen)
                                                                     - (policy.rejected - reference.rejected)))


def test_trl_logs_the_reward_metrics(trained):
    _, _, trainer, _ = trained
    keys = set().union(*trainer.state.log_history)
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= keys


def test_loss_is_log2_when_policy_equals_reference():
    x = torch.tensor([-3.0, -1.0])
    loss, c, r = dpo.dpo_loss(x, x - 1, x, x - 1, beta=0.5)
    assert loss.item() == pytest.approx(0.693147, abs=1e-6) and torch.equal(c, torch.zeros(2))


def test_preference_accuracy_counts_margin_signs():
    ref = dpo.PairScores(torch.zeros(4), torch.zeros(4))
    pol = dpo.PairScores(torch.tensor([1.0, 0.0, 2.0, -1.0]), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert dpo.implicit_reward_accuracy(pol, ref) == 0.5


def test_completion_logps_equal_manual_sum(trained):
    _, tok, trainer, pairs = trained
    model = trainer.model
    p = pairs[0]
    ids, cut = dpo._encode(tok, p["prompt"], p["chosen"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    manual = sum(torch.log_softmax(logits[i - 1], -1)[ids[i]].item() for i in range(cut, len(ids)))
    batched = dpo.completion_logps(model, tok, [p["prompt"], pairs[1]["prompt"]], [p["chosen"], pairs[1]["rejected"]])
    assert batched[0].item() == pytest.approx(manual, abs=1e-3)
    assert tok.decode(ids[cut:]).startswith(p["chosen"][0]["content"])


def test_bad_pairs_are_counted_and_dropped(capsys):
    rows = [
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
         "rejected": [{"role": "assistant", "content": "a"}]},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": " "}],
         "rejected": [{"role": "assistant", "content": "b"}]},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
         "rejected": [{"role": "assistant", "content": "b"}]},
    ]
    kept = dpo.clean_pairs(rows, name="pairs")
    assert len(kept) == 1
    assert "dropped 1 pair(s) with chosen == rejected and 1 with an empty answer; 1 of 3 kept" in capsys.readouterr().out
    with pytest.raises(DataError, match="no usable preference pairs"):
        dpo.clean_pairs(rows[:2], name="pairs")
    with pytest.raises(DataError, match="missing column"):
        dpo.clean_pairs([{"prompt": "q", "chosen": "a"}])


def test_prompt_longer_than_max_length_is_refused(trained):
    _, tok, _, pairs = trained
    long_pair = dict(pairs[0], prompt=[{"role": "user", "content": "word " * 300}])
    with pytest.raises(DataError, match=r"all 1 rows are longer than max_length=64 .*prompt alone is \d+ tokens.*Raise max_length"):
        dpo.check_lengths(tok, [long_pair], 64)


# Fixture rows shaped like the Hub schemas.
ULTRAFEEDBACK = {
    "prompt": "Name a prime number.",
    "chosen": [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "7"}],
    "rejected": [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "9"}],
    "score_chosen": 9.0, "score_rejected": 2.0,
}
HH_RLHF = {
    "chosen": "\n\nHuman: Hi, can you help?\n\nAssistant: Sure.\n\nHuman: What is 2+2?\n\nAssistant: 4.",
    "rejected": "\n\nHuman: Hi, can you help?\n\nAssistant: Sure.\n\nHuman: What is 2+2?\n\nAssistant: 5, I think.",
}


def test_normalize_ultrafeedback():
    out = dpo.normalize_preference_row(ULTRAFEEDBACK)
    assert out == {"prompt": [{"role": "user", "content": "Name a prime number."}],
                   "chosen": [{"role": "assistant", "content": "7"}], "rejected": [{"role": "assistant", "content": "9"}]}


def test_normalize_hh_rlhf_splits_prompt_and_answers():
    out = dpo.normalize_preference_row(HH_RLHF)
    assert [m["role"] for m in out["prompt"]] == ["user", "assistant", "user"]
    assert out["prompt"][-1]["content"] == "What is 2+2?"
    assert out["chosen"] == [{"role": "assistant", "content": "4."}]
    assert out["rejected"] == [{"role": "assistant", "content": "5, I think."}]


def test_normalize_rejects_unknown_rows():
    with pytest.raises(DataError, match="needs 'chosen' and 'rejected'"):
        dpo.normalize_preference_row({"prompt": "x"})
    with pytest.raises(DataError, match="Unrecognised preference row"):
        dpo.normalize_preference_row({"chosen": 1, "rejected": 2})


def test_ranking_accuracy_and_per_skill_breakdown():
    scores = dpo.PairScores(torch.tensor([-1.0, -5.0, -2.0, -0.5]), torch.tensor([-2.0, -1.0, -3.0, -0.5]))
    assert dpo.ranking_accuracy(scores) == 0.5  # a tie is not a win
    assert dpo.ranking_by_skill(scores, ["a", "a", "b", "b"]) == {"a": 0.5, "b": 0.5}
    ref = dpo.PairScores(torch.zeros(4), torch.zeros(4))
    assert dpo.implicit_by_skill(scores, ref, ["a", "b", "a", "b"]) == {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="3 skill labels for 4 pairs"):
        dpo.ranking_by_skill(scores, ["a", "b", "c"])


def test_dpo_config_uses_current_names_and_profile_values():
    profile = get_profile("cpu")
    cfg = dpo.dpo_config(profile, "/tmp/x")
    assert (cfg.beta, cfg.learning_rate, cfg.max_steps) == (profile.dpo_beta, profile.dpo_learning_rate, profile.dpo_steps)
    assert cfg.warmup_steps == 0 and cfg.use_cpu
    assert cfg.loss_type == ["sigmoid", "sft"] and cfg.loss_weights == [1.0, profile.dpo_sft_weight]  # cpu adds the NLL term
    plain = dpo.dpo_config(get_profile("tiny"), "/tmp/x")
    assert plain.loss_type == ["sigmoid"] and plain.loss_weights is None
    assert not hasattr(cfg, "max_prompt_length")


def test_shared_prompt_scoring_equals_separate_passes(trained):
    _, tok, trainer, pairs = trained
    model = trainer.model
    fast = dpo.score_pairs(model, tok, pairs, batch_size=3)  # uneven batches: prompts of different lengths padded
    prompts = [p["prompt"] for p in pairs]
    chosen = dpo.completion_logps(model, tok, prompts, [p["chosen"] for p in pairs])
    rejected = dpo.completion_logps(model, tok, prompts, [p["rejected"] for p in pairs])
    assert len({len(dpo._encode(tok, p["prompt"], p["chosen"])[0]) for p in pairs}) > 1
    prompt_ids = [ids[:cut] for ids, cut in (dpo._encode(tok, p["prompt"], p["chosen"]) for p in pairs)]
    assert evaluation.shared_prefix_length(prompt_ids) >= evaluation.MIN_SHARED_PREFIX   # the shared system prompt is cached
    assert torch.allclose(fast.chosen, chosen, atol=1e-4) and torch.allclose(fast.rejected, rejected, atol=1e-4)


def test_harness_adopts_earlier_metrics_and_adds_preference_accuracy(trained):
    from helpers import measure

    profile, tok, trainer, pairs = trained
    harness = measure.Harness(tok, profile, [], "", preference_pairs=pairs)
    got = harness.adopt("tuned", {"perplexity": 12.5}, "03_gptq (today)", load=lambda: trainer.model)
    expected = dpo.ranking_accuracy(dpo.score_pairs(trainer.model, tok, pairs))
    assert got == {"perplexity": 12.5, "preference_accuracy": expected}
    assert harness.sources["tuned"] == "03_gptq (today) (+ preference accuracy here)"


def test_from_scratch_loss_with_sft_term_matches_trl():
    """Profiles with ``dpo_sft_weight`` train DPO + NLL of the chosen answers; ours must match TRL's sum."""
    from dataclasses import replace

    profile = replace(get_profile("tiny"), dpo_sft_weight=0.7)
    model, tok, _ = load_model_and_tokenizer(profile)
    pairs = dpo.preference_rows(profile, n=8)
    trainer = dpo.train_dpo(profile, model, tok, pairs, max_steps=2, learning_rate=5e-3)
    assert trainer.args.loss_type == ["sigmoid", "sft"] and trainer.args.loss_weights == [1.0, 0.7]
    trl_loss, batch = dpo.trl_loss_on_first_pairs(trainer, 5)
    policy = dpo.score_pairs(trainer.model, tok, batch)
    with trainer.model.disable_adapter():
        reference = dpo.score_pairs(trainer.model, tok, batch)
    sigmoid, _, _ = dpo.dpo_loss(policy.chosen, policy.rejected, reference.chosen, reference.rejected, profile.dpo_beta)
    nll = dpo.chosen_nll(tok, batch, policy.chosen)
    assert nll.item() > 0
    assert abs(trl_loss - (sigmoid + 0.7 * nll).item()) < 1e-4, (trl_loss, sigmoid.item(), nll.item())
    assert abs(trl_loss - sigmoid.item()) > 1e-3  # the SFT term is really in TRL's loss


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_notebook_02_dpo_config_is_the_one_the_helpers_build(name):
    """Notebook 02 writes its DPOConfig(...) out; dpo.dpo_config (what pipeline.dpo_merged trains with when 02 has
    not run) must build the same configuration."""
    from trl import DPOConfig

    from helpers import training
    from helpers.paths import outputs_dir
    from notebook_code import assignment

    profile = get_profile(name)
    scope = {"DPOConfig": DPOConfig, "profile": profile, "training": training, "outputs_dir": outputs_dir}
    ours = dpo.dpo_config(profile, str(outputs_dir("trainer", f"dpo_{profile.name}")))
    assert assignment("02_dpo", "config", "DPOConfig", scope).to_dict() == ours.to_dict()


def test_dpo_settings_are_stable_and_follow_the_profile():
    from dataclasses import replace

    profile = get_profile("tiny")
    assert manifests.dpo_settings(profile) == manifests.dpo_settings(profile)
    assert manifests.dpo_settings(replace(profile, dpo_beta=0.5)) != manifests.dpo_settings(profile)


def test_per_token_ranking_removes_the_short_answer_bias():
    # chosen: 4 tokens, -6 in total (-1.5 per token); rejected: 1 token, -3 (-3 per token)
    scores = dpo.PairScores(torch.tensor([-6.0, -1.0]), torch.tensor([-3.0, -2.0]),
                            torch.tensor([4, 1]), torch.tensor([1, 1]))
    assert dpo.ranking_wins(scores).tolist() == [False, True]               # the sum prefers the short answer
    assert dpo.ranking_wins(scores, per_token=True).tolist() == [True, True]
    assert dpo.ranking_accuracy(scores, per_token=True) == 1.0
    with pytest.raises(ValueError, match="no answer lengths"):
        dpo.ranking_accuracy(dpo.PairScores(torch.zeros(2), torch.zeros(2)), per_token=True)


def test_scored_pairs_carry_their_answer_lengths(trained):
    profile, tok, trainer, pairs = trained
    scores = dpo.score_pairs(trainer.model, tok, pairs[:3])
    for i, pair in enumerate(pairs[:3]):
        for side, lengths in (("chosen", scores.chosen_tokens), ("rejected", scores.rejected_tokens)):
            ids, cut = dpo._encode(tok, pair["prompt"], pair[side])
            assert lengths[i] == len(ids) - cut > 0


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_notebook_02_and_scripts_dpo_build_the_same_config(name):
    """Notebook 02 writes its DPOConfig(...) out; scripts/dpo.py (the pipeline when 02 has not run, and
    `accelerate launch`) builds it with dpo.dpo_config. Both must be equal, or an adapter's manifest would record
    settings it was not trained with."""
    from trl import DPOConfig

    from helpers import training
    from helpers.paths import outputs_dir
    from notebook_code import assignment

    profile = get_profile(name)
    out = str(outputs_dir("trainer", f"dpo_{profile.name}"))
    scope = {"profile": profile, "training": training, "outputs_dir": outputs_dir, "DPOConfig": DPOConfig}
    assert assignment("02_dpo", "config", "DPOConfig", scope).to_dict() == dpo.dpo_config(profile, out).to_dict()


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_the_manifest_records_what_ran_not_the_profile(name, tmp_path):
    """Notebook 02 saves its adapter with pipeline.dpo_run_inputs(config, peft_config, train_pairs, sft_dir): equal to
    what the pipeline asks of notebook 02's adapter when the cell ran the profile's recipe, and different when a
    student edited the DPOConfig cell or trained on other pairs (then 03-07 must not reuse it as the profile's)."""
    from dataclasses import replace

    from helpers import pipeline, training
    from helpers.models import load_tokenizer
    from helpers.paths import outputs_dir
    from notebook_code import assignment
    from trl import DPOConfig

    profile = get_profile(name)
    tokenizer = load_tokenizer(profile)
    sft_dir = tmp_path / "sft"
    sft_dir.mkdir()
    (sft_dir / "model.safetensors").write_bytes(b"weights")
    scope = {"DPOConfig": DPOConfig, "profile": profile, "training": training, "outputs_dir": outputs_dir}
    cell = assignment("02_dpo", "config", "DPOConfig", scope)   # the notebook's own DPOConfig(...) call
    pairs = dpo.check_lengths(tokenizer, dpo.preference_rows(profile, "dpo_train"), cell.max_length)
    peft = training.lora_config(profile)
    wanted = pipeline.dpo_inputs(profile, sft_dir, tokenizer)
    assert pipeline.dpo_run_inputs(cell, peft, pairs, sft_dir) == wanted
    edited = DPOConfig(**{**cell.to_dict(), "beta": cell.beta * 4, "output_dir": str(tmp_path / "o")})  # exercise 1
    assert pipeline.dpo_run_inputs(edited, peft, pairs, sft_dir)["dpo_config"]["beta"] == cell.beta * 4
    assert pipeline.dpo_run_inputs(edited, peft, pairs, sft_dir) != wanted
    assert pipeline.dpo_run_inputs(cell, peft, pairs[:-1], sft_dir) != wanted          # own data / other pairs
    assert pipeline.dpo_run_inputs(cell, training.lora_config(replace(profile, lora_r=2 * profile.lora_r)), pairs,
                                   sft_dir) != wanted


def test_the_reuse_line_names_what_differs(tmp_path):
    from helpers import pipeline, training
    from helpers.artifacts import write_manifest
    from helpers.models import load_tokenizer

    profile = get_profile("tiny")
    tokenizer = load_tokenizer(profile)
    sft_dir, adapter = tmp_path / "sft", tmp_path / "dpo"
    for d in (sft_dir, adapter):
        d.mkdir()
    (sft_dir / "model.safetensors").write_bytes(b"weights")
    write_manifest(adapter, pipeline.dpo_inputs(profile, sft_dir, tokenizer))
    assert "will reuse" in pipeline.dpo_reuse_line(profile, sft_dir, adapter, tokenizer)
    config = dpo.dpo_config_kwargs(profile, "unused", learning_rate=1e-3)
    from types import SimpleNamespace
    pairs = dpo.check_lengths(tokenizer, dpo.preference_rows(profile, "dpo_train"), profile.max_length)
    write_manifest(adapter, pipeline.dpo_run_inputs(SimpleNamespace(**config), training.lora_config(profile), pairs, sft_dir))
    line = pipeline.dpo_reuse_line(profile, sft_dir, adapter, tokenizer)
    assert "Not the profile's recipe" in line and "dpo_config.learning_rate" in line


class _Trained(torch.nn.Linear):
    """What pipeline.handover reads of a trained PEFT model: its LoRA config and its parameters."""

    def __init__(self, peft_config):
        super().__init__(2, 2)
        self.peft_config = {"default": peft_config}


def _trainer(args, peft_config, tokenizer):
    from types import SimpleNamespace

    state = SimpleNamespace(global_step=args.max_steps, log_history=[{"loss": 1.0}])
    return SimpleNamespace(args=args, model=_Trained(peft_config), state=state, processing_class=tokenizer,
                           train_seconds=1.5)


def test_handover_saves_what_ran_and_the_pipeline_refuses_an_edited_run(tmp_path, capsys):
    """Notebook 02's save cell (pipeline.handover with its own DPOConfig, LoRA config and pairs) leaves an adapter that
    the pipeline reuses for notebooks 03-07 only when the cell ran the profile's recipe: after an edited learning rate
    (exercise 1) or other training pairs (your own data) it refuses it, and the cell's line says which setting
    differs. Notebook 01's save, with its own SFTConfig, is what pipeline.sft_adapter reuses."""
    import json

    from helpers import data, pipeline, training
    from helpers.artifacts import reusable
    from helpers.models import load_tokenizer
    from helpers.paths import outputs_dir
    from notebook_code import assignment
    from peft import LoraConfig
    from trl import DPOConfig, SFTConfig

    profile = get_profile("tiny")
    tokenizer = load_tokenizer(profile)
    sft_dir = tmp_path / "sft"
    sft_dir.mkdir()
    (sft_dir / "model.safetensors").write_bytes(b"weights")
    scope = {"DPOConfig": DPOConfig, "profile": profile, "training": training, "outputs_dir": outputs_dir}
    cell = assignment("02_dpo", "config", "DPOConfig", scope)
    pairs = dpo.check_lengths(tokenizer, dpo.preference_rows(profile, "dpo_train"), cell.max_length)
    edited = DPOConfig(**{**cell.to_dict(), "learning_rate": cell.learning_rate * 3, "output_dir": str(tmp_path / "o")})
    wanted = pipeline.dpo_inputs(profile, sft_dir, tokenizer)
    for name, (config, rows) in {"cell": (cell, pairs), "edited": (edited, pairs), "own": (cell, pairs[:-1])}.items():
        folder = tmp_path / name
        with pipeline.handover(folder, _trainer(config, training.lora_config(profile), tokenizer), rows,
                               base=sft_dir, profile=profile) as tmp:
            (tmp / "adapter_model.safetensors").write_bytes(b"adapter")
        line = capsys.readouterr().out
        info = json.loads((folder / "train_info.json").read_text())
        assert info["steps"] == config.max_steps and info["train_seconds"] == 1.5 and info["profile"] == "tiny"
        assert reusable(folder, wanted, "DPO adapter") is (name == "cell"), name
        if name == "cell":
            assert "Notebooks 03-07 will reuse this adapter" in line
        else:
            assert "Not the profile's recipe" in line and "not take this adapter" in line
            assert ("dpo_config.learning_rate" in line) is (name == "edited")
            assert ("pairs_sha256" in line) is (name == "own")

    scope |= {"LoraConfig": LoraConfig, "SFTConfig": SFTConfig}
    args = assignment("01_sft_lora", "args", "SFTConfig", scope)
    lora = assignment("01_sft_lora", "peft_config", "LoraConfig", scope)
    folder = tmp_path / "sft_lora"
    with pipeline.handover(folder, _trainer(args, lora, tokenizer), data.sft_rows(profile), base=profile.model_id,
                           profile=profile) as tmp:
        (tmp / "adapter_model.safetensors").write_bytes(b"adapter")
    assert "Notebooks 02-08 will reuse this adapter" in capsys.readouterr().out
    assert reusable(folder, manifests.run_settings(profile), "SFT adapter")
