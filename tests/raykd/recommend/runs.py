"""A run directory as ``raykd evaluate`` leaves it, built with the real report code from given hits
(shared by the recommend tests of the library and of the command)."""

from pathlib import Path


def write_run(run: Path, teacher_hits: int | None, student_hits: int | None, baseline_hits: int = 10,
              speedup: float = 4.0, examples: int = 100) -> Path:
    """``RUN/report/metrics.json`` and ``report.json``: the real ``build_report`` on given arms, then
    ``write_metrics`` of its non-dict values (ray_jobs/evaluate.py); each stage's metrics.json with a
    wall time and the cache's manifest. ``None`` hits: plain text, no score. Hits come first, so the
    student's hits are a superset of the baseline's (a paired gain). Teacher 1,000 bytes, students 100."""
    import json

    from raykd.config import load_config
    from raykd.evaluation.report import build_report
    from raykd.launch import write_metrics

    def arm(name: str, hits: int | None, latency: float, size: int) -> dict:
        (run / name).mkdir(parents=True, exist_ok=True)
        (run / name / "model.safetensors").write_bytes(b"\0" * size)
        (run / name / "metrics.json").write_text(json.dumps({"wall_s": 10.0 * size / 100}))
        scored = {} if hits is None else {"hits": [1] * hits + [0] * (examples - hits)}
        return {"score": None if hits is None else hits / examples, "loss": 0.5, "params": size,
                "latency_p50_s": latency, "throughput_per_s": 1 / latency} | scored

    arms = {"teacher": arm("teacher", teacher_hits, 0.1 * speedup, 1000),
            "student": arm("student", student_hits, 0.1, 100),
            "baseline": arm("baseline", None if teacher_hits is None else baseline_hits, 0.1, 100)}
    report = build_report(load_config(None), arms, {a: run / a for a in arms}, examples)
    write_metrics(run / "report", {k: v for k, v in report.items() if not isinstance(v, dict)})
    (run / "report" / "report.json").write_text(json.dumps(report))
    (run / "teacher_cache").mkdir()
    (run / "teacher_cache" / "manifest.json").write_text(json.dumps({"rows": 4200, "teacher_forward_s": 145.0}))
    return run
