"""Notebook 08's GRPO miniature against TRL's GRPOTrainer, the checker-based rewards, and the recipe's config."""

from dataclasses import replace

import pytest
import torch

from helpers import grpo
from helpers.profiles import ProfileError, get_profile
from notebook_code import assignment, definitions


@pytest.fixture(scope="module")
def mini():
    return definitions("08_grpo", "group_advantages", "grpo_loss", scope={"torch": torch})


def varied_reward(completions, **kwargs):
    """Rewards that differ within a group on a random model: a function of each completion's text."""
    return [float(len(grpo.completion_text(c)) % 3) / 2 for c in completions]


@pytest.fixture(scope="module")
def trained():
    from helpers import models

    profile = get_profile("tiny")
    tok, model = models.load_tokenizer(profile), models.load_model(profile)
    trainer = grpo.train_grpo(profile, model, tok, reward_funcs=[varied_reward], max_steps=1,
                              num_generations=4, per_device_train_batch_size=16)
    return profile, trainer


def test_group_advantages_equal_trl_on_its_own_rewards(mini, trained):
    _, trainer = trained
    rewards = torch.tensor(trainer._logs["rewards"]["varied_reward"])
    theirs = torch.tensor(list(trainer._logs["advantages"]))
    ours = mini["group_advantages"](rewards, trainer.num_generations)
    assert rewards.numel() == 16 and rewards.std() > 0  # the groups really vary
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)
    same = mini["group_advantages"](torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), 4)
    assert torch.equal(same[:4], torch.zeros(4)) and same[4:].abs().min() > 0.4  # no variance: no signal


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_miniature_loss_equals_trl_loss(mini, trained, beta):
    _, trainer = trained
    torch.manual_seed(0)
    for name, p in trainer.model.named_parameters():  # move the adapter, so policy and reference differ
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    prompts = [[{"role": "user", "content": q}] for q in ("Plural of mouse?", "Plural of mouse?", "Antonym of hot?",
                                                           "Antonym of hot?")]
    batch = grpo.loss_batch(trainer, prompts, ["mice", "mouses are", "cold", "warm or cold"])
    logps = grpo.token_logps(trainer, batch)
    ref = grpo.token_logps(trainer, batch, adapter=False)
    old = logps + 0.3 * torch.randn_like(logps)  # sampled one update earlier: ratios off 1, both clips active
    adv = mini["group_advantages"](torch.tensor([1.0, 0.0, 1.0, 0.0]), 2)
    mask = batch["completion_mask"].float()
    trainer.beta = beta
    try:
        theirs = grpo.trl_loss(trainer, batch, adv, old, ref)
    finally:
        trainer.beta = trainer.args.beta
    ours = mini["grpo_loss"](logps, old, adv, mask, epsilon=trainer.args.epsilon, beta=beta, ref_logps=ref)
    ratio = torch.exp(logps - old)
    assert ((ratio > 1.2) & (adv[:, None] > 0)).any() and ((ratio < 0.8) & (adv[:, None] < 0)).any()
    assert (ref - logps).abs().max() > 1e-3  # a real KL term
    assert abs(ours.item() - theirs) < 1e-5, (ours.item(), theirs)


def test_correctness_reward_is_the_skills_checker():
    completions = ["Mice.", "The plural is mice", [{"role": "assistant", "content": "mice"}], "Paris"]
    answers = [["mice"], ["mice"], ["mice"], ["paris"]]
    assert grpo.correctness_reward(completions, answers, [False, False, False, True]) == [1.0, 0.0, 1.0, 0.0]
    assert grpo.brevity_reward(["dogs", "one two three four", "a\nb"]) == [1.0, 0.0, 0.0]


def test_reward_log_counts_zero_variance_groups_per_skill():
    log = grpo.RewardLog(grpo.correctness_reward, num_generations=2)
    log(["a", "a", "b", "x"], answers=[["a"]] * 2 + [["b"]] * 2, skill=["s1", "s1", "s2", "s2"])
    log(["x", "y", "b", "b"], answers=[["a"]] * 2 + [["b"]] * 2, skill=["s1", "s1", "s2", "s2"])
    table = log.by_skill()
    assert table["s1"] == {"groups": 2, "mean reward": 0.5, "all right": 0.5, "all wrong": 0.5, "zero variance": 1.0}
    assert table["s2"]["zero variance"] == 0.5 and log.zero_variance_share() == 0.75
    assert log.within_group_std() == [0.25, 0.0]


def test_notebook_config_is_the_profiles_recipe(tmp_path):
    from trl import GRPOConfig

    from helpers import training
    from helpers.paths import outputs_dir

    profile = get_profile("tiny")
    scope = {"GRPOConfig": GRPOConfig, "profile": profile, "training": training, "outputs_dir": outputs_dir}
    cell = assignment("08_grpo", "config", "GRPOConfig", scope)
    assert cell.to_dict() == GRPOConfig(**grpo.grpo_config_kwargs(profile)).to_dict()
    assert cell.per_device_train_batch_size == profile.grpo_prompts_per_step * profile.grpo_num_generations


def test_profiles_refuse_unusable_grpo_settings():
    profile = get_profile("tiny")
    with pytest.raises(ProfileError, match="grpo_num_generations"):
        replace(profile, grpo_num_generations=1)
    with pytest.raises(ProfileError, match="grpo_beta"):
        replace(profile, grpo_beta=-0.1)
    rows = grpo.prompt_rows(replace(profile, grpo_steps=400, grpo_prompts_per_step=2))  # more than the split holds
    assert len(rows) == 800 and len({r["prompt"][0]["content"] for r in rows}) < 800


def test_skill_differences_pair_the_same_prompts_per_skill():
    a = [{"prompt": f"p{i}", "skill": "s1" if i < 20 else "s2", "correct": i % 2 == 0} for i in range(40)]
    b = [dict(r, correct=True) if r["skill"] == "s1" else dict(r) for r in a]
    diffs = grpo.skill_differences(a, b)
    assert diffs["s1"]["difference"] == pytest.approx(0.5) and diffs["s1"]["clear"]
    assert diffs["s2"]["difference"] == 0.0 and not diffs["s2"]["clear"]
    with pytest.raises(ValueError, match="same prompts"):
        grpo.skill_differences(a, b[::-1])
