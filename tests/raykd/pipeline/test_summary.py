"""The pipeline's summary: a row per stage with figures read from the stages' result files."""

from raykd.pipeline.summary import headline, render


def test_evaluate_headline_gives_each_score_with_its_interval():
    arms = {"teacher": {"score": 0.48, "score_ci": [0.41, 0.55]}, "student": {"score": 0.47, "score_ci": [0.4, 0.54]},
            "baseline": {"score": 0.085, "score_ci": [0.05, 0.125]}}
    report = {"arms": arms, "gain_over_baseline": 0.385, "gain_over_baseline_ci": [0.31, 0.46], "params_ratio": 0.05,
              "latency_speedup": 5.5}
    assert headline("evaluate", report) == (
        "test teacher 0.480 [0.410, 0.550], student 0.470 [0.400, 0.540], baseline 0.085 [0.050, 0.125]; "
        "student - baseline +0.385 [+0.310, +0.460]; 5.0% params, 5.5x at batch 1")


def test_plain_text_scores_show_as_not_applicable():
    result = {"base_eval_score": None, "eval_score": None, "base_eval_loss": 3.2, "eval_loss": 2.5, "steps": 10}
    assert headline("finetune", result) == "eval score n/a -> n/a, loss 3.200 -> 2.500 (10 steps)"


def test_render_counts_only_the_stages_run_this_time():
    text = render([("finetune", "skipped", 90.0, "a"), ("compare", "ran", 30.4, "served p50 speedup c1 3.10x")])
    assert "| finetune | skipped | 90 | a |" in text and "| compare | ran | 30 | served p50 speedup c1 3.10x |" in text
    assert text.rstrip().endswith("Stages run this time: 30 s.")


def test_served_speedups_are_listed_by_concurrency():
    assert headline("compare", {"speedup_p50": {"1": 2.9, "16": 2.2, "4": 2.5}}) == (
        "served p50 speedup c1 2.90x, c4 2.50x, c16 2.20x")
