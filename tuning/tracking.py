"""Every trial of a sweep as its own tracker run, nested under the sweep's run (MLflow's parent run, a
W&B group, a TensorBoard folder): a Ray Tune ``Callback`` on the driver logs what each trial reports, at
the trial's step. Trial runs are named by Tune's trial id, which a restored sweep keeps, so a resumed
sweep continues them."""

from __future__ import annotations

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from raykd.config import TrackingConfig, section
from raykd.tracking.runs import TrackedRun, flat_params, numeric
from raykd.tracking.tracker import Tracker
from raykd.training.sweep_trial import trial_config

TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {"done", "step", "trial_id", "experiment_tag"}  # Tune's, not the trial's


class TrialTracking(tune.Callback):
    """Logs each trial's results to its tracker run (``trial-<trial id>`` under ``sweep``); picklable, as
    Tune saves its callbacks with the experiment (a tracker is reopened after a restore)."""

    def __init__(self, base: dict, sweep: TrackedRun) -> None:
        self.base, self.sweep = base, sweep
        self._trackers: dict[str, Tracker] = {}

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_trackers": {}}

    def _tracker(self, trial) -> Tracker:
        if trial.trial_id not in self._trackers:
            run = TrackedRun("tune", f"trial-{trial.trial_id}", self.sweep.run_dir, self.sweep.out_dir,
                             parent=self.sweep.name)
            tracker = Tracker(section(TrackingConfig, self.base["tracking"]), run)
            tracker.log_params(flat_params(trial_config(self.base, trial.config)))
            self._trackers[trial.trial_id] = tracker
        return self._trackers[trial.trial_id]

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        reported = {k: v for k, v in result.items() if k not in TUNE_KEYS}
        self._tracker(trial).log_metrics(numeric(reported), int(result["step"]))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._tracker(trial).finish()
        self._trackers.pop(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._tracker(trial).finish(failed=True)
        self._trackers.pop(trial.trial_id)
