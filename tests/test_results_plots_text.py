import json

import matplotlib
import pytest

matplotlib.use("Agg")

from helpers import comparison, plots, results, text
from helpers.evaluation import SkillReport
from helpers.results import ResultsError, read_results, write_results


def test_results_round_trip(tmp_path):
    path = write_results("99_demo", "tiny", {"base": {"skill_accuracy": 0.5, "size_mb": 1.25}}, n_eval=10, model="m", wall_seconds=12.34,
                         folder=tmp_path)
    record = read_results("99_demo", folder=tmp_path)
    assert record["variants"]["base"] == {"skill_accuracy": 0.5, "size_mb": 1.25}
    assert record["wall_seconds"] == 12.3 and record["n_eval"] == 10 and "python" in record["extra"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_unknown_metric_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(ResultsError, match="Unknown metric 'accuracy'.*Valid metrics: skill_accuracy"):
        write_results("99_demo", "tiny", {"base": {"accuracy": 0.5}}, n_eval=1, model="m", wall_seconds=1, folder=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("variants", [{}, {"base": {"perplexity": float("nan")}}, {"base": {"perplexity": "12"}}])
def test_bad_variants(tmp_path, variants):
    with pytest.raises(ResultsError):
        write_results("99_demo", "tiny", variants, n_eval=1, model="m", wall_seconds=1, folder=tmp_path)


def test_read_missing_and_corrupt(tmp_path):
    assert read_results("nothing", folder=tmp_path) is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read_results("bad", folder=tmp_path)
    (tmp_path / "partial.json").write_text(json.dumps({"notebook": "x"}))
    with pytest.raises(ResultsError, match="missing"):
        read_results("partial", folder=tmp_path)


HISTORY = [{"loss": 2.0, "step": 1}, {"loss": 1.0, "step": 2}, {"rewards/margins": 0.3, "step": 2},
           {"train_runtime": 3.0, "step": 2}]


def test_plot_saves_png_and_skips_unlogged_keys():
    fig = plots.plot_training_curves(HISTORY, ("loss", "rewards/margins", "not_logged"), filename="test_curves.png")
    assert len(fig.axes) == 2
    assert (plots.figures_dir() / "test_curves.png").stat().st_size > 1000
    assert plots.curve(HISTORY, "loss") == ([1, 2], [2.0, 1.0])


def test_plot_with_no_known_key_lists_available():
    with pytest.raises(ValueError, match="logged keys: \\['loss', 'rewards/margins', 'step', 'train_runtime'\\]"):
        plots.plot_training_curves(HISTORY, ("eval_loss",))


def _report(answers, correct):
    rows = [{"skill": s, "prompt": f"p{i}", "answer": "a", "response": r, "correct": c, "mentions": c}
            for i, (s, r, c) in enumerate(zip(["x", "y", "x", "y"], answers, correct))]
    return SkillReport(rows, sum(correct) / 4, sum(correct) / 4, {"x": 0.5, "y": 0.5}, 0.0)


def test_side_by_side_and_accuracy_table():
    a, b = _report(["1", "2", "3", "4"], [True, False, True, False]), _report(["5", "6", "7", "8"], [True] * 4)
    table = comparison.side_by_side({"base": a, "tuned": b}, n=3)
    assert list(table.columns) == ["skill", "prompt", "expected", "base", "base ✓", "tuned", "tuned ✓"]
    assert list(table["skill"]) == ["x", "y", "x"]  # spread over skills
    assert list(table["tuned ✓"]) == ["✓"] * 3
    acc = comparison.accuracy_table({"base": a, "tuned": b})
    assert acc.loc["all (exact)", "base"] == 0.5 and acc.loc["all (exact)", "tuned"] == 1.0


def test_side_by_side_refuses_different_prompts():
    a = _report(["1"] * 4, [True] * 4)
    b = _report(["1"] * 4, [True] * 4)
    b.rows[0]["prompt"] = "other"
    with pytest.raises(ValueError, match="different prompts"):
        comparison.side_by_side({"a": a, "b": b})


def test_offline_text_splits_are_disjoint_and_stable():
    ev, cal = text.stdlib_text("eval"), text.stdlib_text("calibration")
    assert len(ev) > 50_000 and len(cal) > 50_000
    assert ev == text.stdlib_text("eval")
    eval_docs = {d for m in text.EVAL_MODULES for d in text._docstrings(m)}
    calib_docs = {d for m in text.CALIBRATION_MODULES for d in text._docstrings(m)}
    assert eval_docs and calib_docs and not eval_docs & calib_docs
    assert not set(text.EVAL_MODULES) & set(text.CALIBRATION_MODULES)
    samples = text.stdlib_samples("calibration", n=16)
    assert len(samples) == 16 and all(len(s) >= 200 for s in samples)
    with pytest.raises(ValueError, match="Unknown text split"):
        text.stdlib_text("train")


def test_write_results_takes_the_time_since_setup_the_profiles_model_and_the_intervals(tmp_path):
    import time

    from helpers import get_profile, results

    profile = get_profile("tiny")
    results.start_clock("99_clock")
    time.sleep(0.05)
    outcomes = {"base": {"correct": "1100"}, "tuned": {"correct": "1110"}}
    path = write_results("99_clock", profile, {"base": {"skill_accuracy": 0.5}, "tuned": {"skill_accuracy": 0.75}},
                         n_eval=4, extra={"outcomes": outcomes}, folder=tmp_path)
    record = read_results("99_clock", tmp_path)
    assert record["model"] == profile.model_id and 0.05 <= record["wall_seconds"] < 60
    from helpers.comparison import accuracy_intervals

    assert record["extra"]["accuracy_intervals"] == accuracy_intervals(outcomes)   # the README's table shows them
    assert record["extra"]["accuracy_intervals"]["tuned"][0] < 0.75 < record["extra"]["accuracy_intervals"]["tuned"][1]
    assert path.name == "99_clock.json"


def test_write_results_refuses_the_old_argument_order_and_a_notebook_without_a_clock(tmp_path):
    from helpers import get_profile

    with pytest.raises(ResultsError, match=r"where the variants go\. Pass them third"):
        write_results("99_demo", "tiny", "m", n_eval=10, folder=tmp_path)   # (notebook, profile, model, ...): before
    with pytest.raises(TypeError, match=r"3 positional arguments"):   # and with the old seconds, n and variants after it
        write_results("99_demo", "tiny", "m", 1, 10, {"base": {"skill_accuracy": 0.5}}, folder=tmp_path)
    with pytest.raises(ResultsError, match=r"No clock for 98_noclock: run setup\('98_noclock'\)"):
        write_results("98_noclock", get_profile("tiny"), {"base": {"skill_accuracy": 0.5}}, n_eval=1, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []
