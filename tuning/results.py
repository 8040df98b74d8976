"""What a finished sweep leaves under RUN/tune/: the trial table, the best config, a plot, metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from raykd.config import RaykdConfig, from_dict
from raykd.launch import write_metrics
from raykd.training.sweep_trial import KNOBS
from tuning.space import DIVERGED_LOSS, config_point

COLUMNS = ("trial_id", *KNOBS, "eval_loss", "eval_kl", "eval_acceptance", "eval_score", "step", "training_iteration",
           "stopped_early", "teacher_forward_passes", "data_source", "time_total_s")


def trials_frame(df: pd.DataFrame, steps: int) -> pd.DataFrame:
    """One row per trial from ``ResultGrid.get_dataframe()`` (its last report), sampled knobs without
    their ``config/`` prefix, and ``stopped_early`` (ended before ``steps``: ASHA or an error)."""
    df = df.rename(columns={c: c.removeprefix("config/") for c in df.columns})
    df["stopped_early"] = df["step"] < steps
    return df[[c for c in COLUMNS if c in df.columns]].reset_index(drop=True)


def _plain(value):
    """numpy scalars → Python numbers (for YAML and JSON)."""
    return value.item() if hasattr(value, "item") else value


def best_config(cfg: RaykdConfig, best: pd.Series) -> dict:
    """The run's config with the best trial's distill knobs: ``raykd distill --config`` takes it as is."""
    data = cfg.to_dict()
    for key, knob in KNOBS.items():
        if key in best and not pd.isna(best[key]):
            data["distill"][knob] = _plain(best[key])
    from_dict(data)  # the file must load: validate before writing
    return data


def plot(frame: pd.DataFrame, path: Path, metric: str, mode: str) -> None:
    """``metric`` over temperature × alpha, the best trial ringed; crosses are trials stopped early
    (at their last report); a sweep over ``tune.loss`` labels each point with its divergence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    finite = frame.dropna(subset=[metric])
    finite = finite[finite[metric] < DIVERGED_LOSS]
    finite = frame if finite.empty else finite
    cmap = "viridis" if mode == "max" else "viridis_r"  # the best trial is the brightest either way
    for early, marker in ((False, "o"), (True, "X")):
        part = finite[finite["stopped_early"] == early]
        points = ax.scatter(part["temperature"], part["alpha"], c=part[metric], cmap=cmap, s=80,
                            marker=marker, vmin=finite[metric].min(), vmax=finite[metric].max(), edgecolors="k",
                            label="stopped early" if early else "finished")
    if "divergence" in finite:
        for _, trial in finite.iterrows():
            jsd = trial["divergence"] == "jsd" and "jsd_beta" in trial
            label = trial["divergence"] + (f" b={trial['jsd_beta']:.2f}" if jsd else "")
            ax.annotate(label, (trial["temperature"], trial["alpha"]), fontsize=7, xytext=(6, 4),
                        textcoords="offset points")
    best = rank(finite, metric, mode).iloc[0]  # the trial summarize() picks, ties included
    ax.scatter([best["temperature"]], [best["alpha"]], s=300, facecolors="none", edgecolors="r", label="best")
    fig.colorbar(points, ax=ax, label=metric)
    ax.set_xscale("log")
    ax.set(xlabel="temperature", ylabel="alpha", title=f"{metric} per trial ({len(frame)} trials)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def rank(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Trials that reported ``metric``, best first; ties (a task score has many) go to the lower
    held-out loss."""
    keys = [metric] + (["eval_loss"] if metric != "eval_loss" and "eval_loss" in frame else [])
    return frame.dropna(subset=[metric]).sort_values(keys, ascending=[mode == "min", True][: len(keys)])


def config_trial(frame: pd.DataFrame, point: dict) -> pd.Series | None:
    """The trial that ran the config's own point (passed to the searcher as is, so matched exactly)."""
    match = frame
    for key, value in point.items():
        match = match[match[key] == value] if key in match else match.iloc[0:0]
    return None if match.empty else match.iloc[0]


def value_at(history: pd.DataFrame, metric: str, step: int) -> float:
    """A trial's last reported ``metric`` at or before ``step``."""
    reported = history[(history["step"] <= step) & history[metric].notna()]
    return float(reported[metric].iloc[-1])


def versus_config(histories: dict[str, pd.DataFrame], frame: pd.DataFrame, point: dict | None, metric: str,
                  mode: str, best: pd.Series) -> dict:
    """The best trial against the config's own ``point`` at the same budget: both read at the last step
    both reached (ASHA may have stopped either), from ``histories`` (trial id -> its reports).
    ``sweep_beat_config`` is strictly better. Empty when no trial ran ``point``."""
    mine = None if point is None else config_trial(frame, point)
    if mine is None:
        return {}
    step = int(min(mine["step"], best["step"]))
    ours, theirs = (value_at(histories[t], metric, step) for t in (mine["trial_id"], best["trial_id"]))
    better = theirs > ours if mode == "max" else theirs < ours
    return {"config_trial": mine["trial_id"], "compared_at_step": step, "config_value": ours,
            "best_value": theirs, "sweep_beat_config": bool(better)}


def unfinished(grid, num_samples: int) -> int:
    """Trials an interrupted sweep still owes: never started, or cut off mid-run. A trial that ran to
    its end or that ASHA stopped has ``done`` in its last result; an errored one counts as ended."""
    cut_off = sum(1 for r in grid if r.error is None and not (r.metrics or {}).get("done"))
    return max(0, num_samples - len(grid)) + cut_off


def summarize(grid, cfg: RaykdConfig, metric: str, mode: str, out: Path, wall_s: float) -> dict:
    """Write results.parquet/.csv, best_config.yaml, sweep.png and metrics.json; returns the metrics."""
    if grid.num_errors == len(grid):
        raise RuntimeError(f"all {len(grid)} trials failed; the first: {grid.errors[0]}")
    frame = trials_frame(grid.get_dataframe(), cfg.tune.steps)
    frame.to_parquet(out / "results.parquet")
    frame.to_csv(out / "results.csv", index=False)
    ranked = rank(frame, metric, mode)
    if ranked.empty:
        raise RuntimeError(f"no trial reported {metric}: see the trial errors under {out}")
    best = ranked.iloc[0]
    tuned = best_config(cfg, best)
    (out / "best_config.yaml").write_text(
        "# The sweep's best distillation knobs: raykd distill --config " + str(out / "best_config.yaml") + "\n"
        + yaml.safe_dump(tuned, sort_keys=False))
    plot(frame, out / "sweep.png", metric, mode)
    score = best.get("eval_score")
    metrics = {
        "trials": len(frame), "finished": int((~frame["stopped_early"]).sum()),
        "stopped_early": int(frame["stopped_early"].sum()), "errored": grid.num_errors,
        "best_trial": best["trial_id"], "best_temperature": float(best["temperature"]),
        "metric": metric, "mode": mode, "best_alpha": float(best["alpha"]),
        "best_loss": tuned["distill"]["loss"], "best_jsd_beta": tuned["distill"]["jsd_beta"],
        "best_eval_loss": None if pd.isna(best.get("eval_loss")) else float(best["eval_loss"]),
        "best_score": None if score is None or pd.isna(score) else float(score),
        "teacher_forward_passes": int(frame["teacher_forward_passes"].fillna(0).sum()),
        "data_sources": sorted(frame["data_source"].dropna().unique().tolist()),
        "best_config": str(out / "best_config.yaml"), "wall_s": round(wall_s, 1),
    }
    metrics |= {f"best_{k}": _plain(best[k]) for k in ("lr",) if k in best and not pd.isna(best[k])}
    histories = {r.metrics["trial_id"]: r.metrics_dataframe for r in grid if r.metrics}
    metrics |= versus_config(histories, frame, config_point(cfg.tune, cfg.distill), metric, mode, best)
    write_metrics(out, metrics)
    return metrics
