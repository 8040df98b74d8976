"""The sweep's search space and result table: pure functions, no Ray cluster."""

import math

import pandas as pd
import pytest
import yaml
from ray import tune

from raykd.config import ConfigError, TuneConfig, from_dict, load_config
from raykd.pipeline.summary import versus_sentence
from raykd.training.sweep_trial import trial_config
from tests.conftest import DEMO
from tuning.results import best_config, rank, trials_frame, versus_config
from tuning.space import DIVERGED_LOSS, config_point, finite_loss, search_space
from tuning.sweep import searcher


def test_default_space_samples_temperature_log_uniform_and_alpha_uniform():
    space = search_space(load_config(DEMO).tune)
    assert set(space) == {"temperature", "alpha"}
    assert isinstance(space["temperature"].get_sampler(), tune.search.sample.LogUniform)
    assert (space["temperature"].lower, space["temperature"].upper) == (1.0, 8.0)
    assert (space["alpha"].lower, space["alpha"].upper) == (0.0, 1.0)


def test_optional_lr_and_equal_bounds_fix_a_value():
    t = load_config(DEMO, ["tune.lr=[1e-4, 1e-2]", "tune.alpha=[0.5, 0.5]"]).tune
    space = search_space(t)
    assert space["alpha"] == 0.5
    assert isinstance(space["lr"].get_sampler(), tune.search.sample.LogUniform)


def test_the_divergence_and_jsd_beta_can_be_searched_and_set_the_trials_distill_knobs():
    t = load_config(DEMO, ["tune.loss=[forward_kl, jsd]", "tune.jsd_beta=[0.1, 0.9]"]).tune
    space = search_space(t)
    assert space["divergence"].categories == ["forward_kl", "jsd"]
    assert (space["jsd_beta"].lower, space["jsd_beta"].upper) == (0.1, 0.9)
    assert search_space(load_config(DEMO, ["tune.loss=[reverse_kl]"]).tune)["divergence"] == "reverse_kl"
    cfg = load_config(DEMO, ["tune.loss=[forward_kl, jsd]"])
    sampled = {"temperature": 2.0, "alpha": 0.5, "divergence": "jsd", "jsd_beta": 0.3}
    d = from_dict(trial_config(cfg.to_dict(), sampled)).distill
    assert (d.loss, d.jsd_beta) == ("jsd", 0.3)


@pytest.mark.parametrize("override, message", [
    ("tune.loss=[forward_kl, kl]", "tune.loss.*'kl'"), ("tune.jsd_beta=[0.5, 1.0]", r"tune.jsd_beta.*\(0, 1\)"),
    ("tune.jsd_beta=[0, 0.5]", "tune.jsd_beta"), ("distill.loss=kl", "distill.loss"),
    ("distill.jsd_beta=1", "distill.jsd_beta"), ("distill.jsd_beta=0", "distill.jsd_beta"),
])
def test_a_bad_divergence_or_jsd_beta_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, [override])


@pytest.mark.parametrize("override, message", [
    ("tune.alpha=[0.2, 1.5]", "tune.alpha"), ("tune.temperature=[0, 4]", "tune.temperature"),
    ("tune.temperature=[4, 2]", "low <= high"), ("tune.lr=[1e-3]", "tune.lr"),
    ("tune.temperature=[]", "tune.temperature"), ("tune.search=grid", "tune.search"),
])
def test_bad_search_space_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(DEMO, [override])


def test_a_diverged_loss_is_reported_as_a_large_finite_number():
    assert finite_loss(0.5) == 0.5
    assert finite_loss(math.nan) == finite_loss(math.inf) == DIVERGED_LOSS


def test_trials_frame_and_best_config_round_trip_through_the_distill_loader(tmp_path):
    raw = pd.DataFrame({"trial_id": ["a", "b"], "config/temperature": [2.5, 6.0], "config/alpha": [0.3, 0.9],
                        "eval_loss": [0.1, 0.4], "step": [40, 10], "training_iteration": [4, 1],
                        "teacher_forward_passes": [0, 0], "date": ["x", "y"],
                        "loss": [0.11, 0.2],  # each trial's reported training loss: not the divergence
                        "config/divergence": ["jsd", "forward_kl"], "config/jsd_beta": [0.3, 0.6]})
    frame = trials_frame(raw, steps=40)
    assert list(frame.columns[:3]) == ["trial_id", "temperature", "alpha"] and "date" not in frame
    assert frame["stopped_early"].tolist() == [False, True]
    cfg = load_config(DEMO, [f"run_dir={tmp_path}"])
    best = best_config(cfg, frame.iloc[0])
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(best))
    loaded = load_config(path)
    assert (loaded.distill.temperature, loaded.distill.alpha, loaded.distill.steps) == (2.5, 0.3, cfg.distill.steps)
    assert (loaded.distill.loss, loaded.distill.jsd_beta) == ("jsd", 0.3)


def test_trials_rank_by_the_chosen_metric_with_ties_to_the_lower_loss():
    frame = pd.DataFrame({"trial_id": list("abcd"), "eval_score": [0.5, 0.9, 0.9, None],
                          "eval_loss": [0.1, 0.4, 0.3, 0.05]})
    assert rank(frame, "eval_score", "max")["trial_id"].tolist() == ["c", "b", "a"]  # d never scored
    assert rank(frame, "eval_loss", "min")["trial_id"].tolist() == ["d", "a", "c", "b"]


def test_the_default_objective_is_the_task_score():
    from tuning.sweep import OBJECTIVES

    assert OBJECTIVES[load_config(DEMO).tune.metric] == ("eval_score", "max")  # the default is not CE
    assert set(OBJECTIVES) == set(TuneConfig.__dataclass_fields__["metric"].metadata["choices"])


def test_searchers_limit_concurrency_and_optuna_is_optional():
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from tuning.sweep import searcher

    random_search = searcher(load_config(DEMO, ["tune.max_concurrent_trials=3"]))
    assert isinstance(random_search, BasicVariantGenerator) and random_search.max_concurrent == 3
    optuna_cfg = load_config(DEMO, ["tune.search=optuna"])
    try:
        import optuna  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs optuna"):
            searcher(optuna_cfg)
    else:
        assert isinstance(searcher(optuna_cfg), ConcurrencyLimiter)


def test_unfinished_counts_trials_never_started_and_cut_off():
    from types import SimpleNamespace as Result

    from tuning.results import unfinished

    ended = Result(error=None, metrics={"done": True})  # ran to the end, or stopped by ASHA
    cut_off = Result(error=None, metrics={"done": False})
    errored = Result(error=RuntimeError("x"), metrics=None)
    assert unfinished([ended, errored], 2) == 0
    assert unfinished([ended, cut_off], 4) == 3


def test_the_configs_own_point_holds_its_distill_knobs_for_the_searched_keys_only():
    cfg = load_config(DEMO, ["tune.lr=[1e-4, 1e-2]", "tune.loss=[forward_kl, jsd]", "tune.alpha=[0.5, 0.5]"])
    assert config_point(cfg.tune, cfg.distill) == {"temperature": 2.0, "lr": cfg.distill.lr,
                                                   "divergence": "forward_kl"}  # alpha is fixed: not searched
    for outside in (["tune.temperature=[3.0, 8.0]"], ["tune.loss=[jsd, reverse_kl]"],
                    ["tune.temperature=[2.0, 2.0]", "tune.alpha=[0.5, 0.5]"]):  # out of range, or nothing searched
        cfg = load_config(DEMO, outside)
        assert config_point(cfg.tune, cfg.distill) is None, outside


@pytest.mark.parametrize("overrides", [["tune.search=optuna"], ["tune.search=optuna", "tune.loss=[jsd]"]])
def test_both_searchers_take_the_configs_point_as_their_first_trial(overrides):
    """Optuna refuses a warm-start point whose keys differ from the searched ones (a fixed knob)."""
    cfg = load_config(DEMO, overrides)
    space = search_space(cfg.tune)
    for algorithm in (searcher(cfg), searcher(load_config(DEMO))):
        assert algorithm.set_search_properties("eval_score", "max", space)
    optuna = searcher(cfg)
    optuna.set_search_properties("eval_score", "max", space)
    assert optuna.suggest("first") == config_point(cfg.tune, cfg.distill)


def _trials(rows: dict[str, list[tuple[int, float]]]) -> tuple[dict, pd.DataFrame]:
    """Histories (trial -> (step, eval_score) reports) and the frame of their last reports; trial
    "a" ran the config's point (temperature 2, alpha 0.5)."""
    histories = {t: pd.DataFrame(r, columns=["step", "eval_score"]) for t, r in rows.items()}
    knobs = {"a": (2.0, 0.5), "b": (1.3, 0.1), "c": (5.0, 0.9)}
    frame = pd.DataFrame([{"trial_id": t, "temperature": knobs[t][0], "alpha": knobs[t][1], "step": r[-1][0],
                           "eval_score": r[-1][1]} for t, r in rows.items()])
    return histories, frame


POINT = {"temperature": 2.0, "alpha": 0.5}


def test_a_sweep_that_beats_the_config_says_so_at_the_step_both_reached():
    histories, frame = _trials({"a": [(20, 0.3), (40, 0.4)], "b": [(20, 0.35), (40, 0.5), (60, 0.55)]})
    best = rank(frame, "eval_score", "max").iloc[0]
    out = versus_config(histories, frame, POINT, "eval_score", "max", best)
    assert out == {"config_trial": "a", "compared_at_step": 40, "config_value": 0.4, "best_value": 0.5,
                   "sweep_beat_config": True}
    assert "beats your config" in versus_sentence(out | {"metric": "eval_score"})


def test_a_best_trial_only_ahead_after_the_config_was_stopped_is_compared_where_both_were():
    histories, frame = _trials({"a": [(20, 0.45)], "b": [(20, 0.4), (40, 0.6)]})
    best = rank(frame, "eval_score", "max").iloc[0]
    out = versus_config(histories, frame, POINT, "eval_score", "max", best)
    assert (out["compared_at_step"], out["best_value"], out["sweep_beat_config"]) == (20, 0.4, False)
    assert "found nothing better" in versus_sentence(out | {"metric": "eval_score"})


def test_the_config_as_the_best_trial_is_nothing_better_and_a_lower_loss_wins_under_min():
    histories, frame = _trials({"a": [(20, 0.5)], "c": [(20, 0.5)]})
    assert not versus_config(histories, frame, POINT, "eval_score", "max", frame.iloc[1])["sweep_beat_config"]
    assert versus_config(histories, frame, POINT, "eval_score", "min", frame.iloc[1])["sweep_beat_config"] is False
    histories, frame = _trials({"a": [(20, 0.5)], "c": [(20, 0.2)]})
    assert versus_config(histories, frame, POINT, "eval_score", "min", frame.iloc[1])["sweep_beat_config"]
    assert versus_config(histories, frame, {"temperature": 3.0, "alpha": 0.5}, "eval_score", "max",
                         frame.iloc[0]) == {}
