"""The config of one sweep trial: the sampled knobs and the trial's budget on the base config."""

import pytest

from raykd.config import ConfigError, from_dict, load_config
from raykd.training.sweep_trial import trial_config
from tests.conftest import DEMO


def test_trial_config_sets_the_sampled_knobs_and_the_trial_budget():
    cfg = load_config(DEMO, ["tune.steps=40", "tune.eval_every=10", "tune.cpus_per_trial=0.5"])
    trial = from_dict(trial_config(cfg.to_dict(), {"temperature": 3.0, "alpha": 0.25, "lr": 0.01}))
    d = trial.distill
    assert (d.temperature, d.alpha, d.lr, d.steps, d.checkpoint_every) == (3.0, 0.25, 0.01, 40, 10)
    assert (d.workers, d.cpus_per_worker, d.sharding) == (1, 0.5, "none")
    assert cfg.distill.temperature == 2.0  # the base is not modified
    sharded = load_config(DEMO, ["tune.workers_per_trial=2", "tune.cpus_per_trial=1", "distill.sharding=fsdp"])
    d = from_dict(trial_config(sharded.to_dict(), {"temperature": 3.0, "alpha": 0.25})).distill
    assert (d.workers, d.cpus_per_worker, d.sharding) == (2, 0.5, "fsdp")  # the trial's CPUs split over its workers
    with pytest.raises(ConfigError, match="tune.workers_per_trial.*distill.sharding"):
        load_config(DEMO, ["tune.workers_per_trial=2"])  # the demo's student is not sharded
