"""What a run measured (``raykd evaluate``'s report, the stages' metrics, the cache's manifest), read
into one record the evidence rules decide on, and the three judgements they take from it.

    RUN/report/metrics.json      scores with intervals, retention, speed and size ratios
    RUN/teacher/metrics.json     the teacher fine-tune's wall time
    RUN/teacher_cache/manifest.json  rows the teacher scored and its forward time
    RUN/<distill.output>/metrics.json, RUN/baseline/metrics.json  each student's wall time
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from raykd.recommend.inputs import RecommendError

REPORT_METRICS = Path("report") / "metrics.json"
# The share of the teacher's task score a student must keep, by the quality bar: within a typical
# few-hundred-row test set's noise of the teacher (high), or a loss a user would notice only in
# aggregate (medium, low).
RETENTION_BAR = {"high": 0.95, "medium": 0.90, "low": 0.80}
# Below 2x at batch 1 a student's speed does not pay for what it gives up, and the teacher serves.
MIN_SPEEDUP = 2.0


@dataclass(frozen=True)
class Evidence:
    """One run's measurements: scores on the same test rows (``None`` on plain text, which has no score)."""

    source: str  # the run directory
    test_examples: int
    teacher_score: float | None
    student_score: float | None
    baseline_score: float | None
    gain: float | None  # student - labels-only baseline
    gain_ci: tuple[float, float] | None  # paired 95% interval of gain
    retention: float | None  # student / teacher score
    retention_ci: tuple[float, float] | None  # paired 95% interval; None where the report holds none
    speedup: float  # teacher / student batch-1 p50 latency
    size_ratio: float  # student / teacher bytes
    costs_s: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds measured
    teacher_rows: int | None = None  # inputs the teacher scored for the cache

    @property
    def scored(self) -> bool:
        return self.gain is not None and self.gain_ci is not None


def distillation_pays(e: Evidence) -> bool:
    """The distilled student beats the labels-only one beyond noise: the paired interval is above 0."""
    return e.gain_ci[0] > 0


def keeps_bar(e: Evidence, performance: str) -> bool:
    """The student keeps at least ``RETENTION_BAR[performance]`` of the teacher's score (point estimate)."""
    return e.retention is not None and e.retention >= RETENTION_BAR[performance]


def is_faster(e: Evidence) -> bool:
    """The student is at least ``MIN_SPEEDUP`` times the teacher's speed at batch 1."""
    return e.speedup >= MIN_SPEEDUP


def _read_json(path: Path, required: bool) -> dict | None:
    if not path.is_file():
        if required:
            raise RecommendError(f"{path.parent.parent}: no evaluation report ({path} is missing); run "
                                 "`raykd evaluate` first")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecommendError(f"{path}: unreadable ({e})") from e
    if not isinstance(data, dict):
        raise RecommendError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _number(metrics: dict, key: str, source: Path, optional: bool = False) -> float | None:
    """``metrics[key]`` as a finite float; a missing or non-numeric value is a one-line error."""
    if key not in metrics:
        if optional:
            return None
        raise RecommendError(f"{source}: no {key!r} in the report (is it a `raykd evaluate` metrics.json?)")
    value = metrics[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecommendError(f"{source}: {key!r} is {value!r}, not a number")
    return float(value)


def _pair(metrics: dict, key: str, source: Path) -> tuple[float, float] | None:
    value = metrics.get(key)
    if value is None:
        return None
    numbers = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not numbers:
        raise RecommendError(f"{source}: {key!r} is {value!r}, not an interval [low, high]")
    return float(value[0]), float(value[1])


def stage_costs(run: Path, student_output: str = "student") -> tuple[dict[str, float], int | None]:
    """Wall seconds of each stage that left metrics in ``run``, and the rows the teacher scored."""
    costs = {}
    for stage, path in (("finetune", run / "teacher" / "metrics.json"),
                        ("distill", run / student_output / "metrics.json"),
                        ("baseline", run / "baseline" / "metrics.json")):
        seconds = _number(_read_json(path, required=False) or {}, "wall_s", path, optional=True)
        if seconds is not None:
            costs[stage] = seconds
    path = run / "teacher_cache" / "manifest.json"
    manifest = _read_json(path, required=False) or {}
    seconds, rows = (_number(manifest, key, path, optional=True) for key in ("teacher_forward_s", "rows"))
    if seconds is not None:
        costs["teacher pass"] = seconds
    return costs, None if rows is None else int(rows)


def read_evidence(run_dir: str | Path) -> Evidence:
    """The evidence of ``RUN``; a missing run or report, or a bad figure, is a one-line error."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RecommendError(f"--run-dir {run}: no such directory")
    path = run / REPORT_METRICS
    m = _read_json(path, required=True)
    report = _read_json(run / "report" / "report.json", required=False) or {}
    output = (report.get("distill") or {}).get("output", "student")
    costs, rows = stage_costs(run, output)
    return Evidence(
        source=str(run), test_examples=int(_number(m, "test_examples", path, optional=True) or 0),
        teacher_score=_number(m, "teacher_score", path, optional=True),
        student_score=_number(m, "student_score", path, optional=True),
        baseline_score=_number(m, "baseline_score", path, optional=True),
        gain=_number(m, "gain_over_baseline", path, optional=True), gain_ci=_pair(m, "gain_over_baseline_ci", path),
        retention=_number(m, "retention", path, optional=True), retention_ci=_pair(m, "retention_ci", path),
        speedup=_number(m, "latency_speedup", path), size_ratio=_number(m, "size_ratio", path),
        costs_s=costs, teacher_rows=rows)
