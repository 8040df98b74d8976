"""What each rule says: the reasons (with the measured figures, where a run was weighed), the commands
to run next, and what to watch. One function per row of ``raykd.recommend.table.RULES``."""

from __future__ import annotations

from raykd.recommend.evidence import MIN_SPEEDUP, RETENTION_BAR, Evidence
from raykd.recommend.rules import FEW_LABELED, MANY_LABELED, MIN_UNLABELED, SMALL_LORA_RANK, Advice, Facts


def _n(count: int) -> str:
    return f"{count:,}"


def _ci(pair: tuple[float, float] | None, fmt: str) -> str:
    return "" if pair is None else f" [{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def figures(e: Evidence, performance: str) -> tuple[str, ...]:
    """The measured figures, each a reason: gain over the labels-only student, retention, speed and
    size, and what each path cost in the run."""
    bar = RETENTION_BAR[performance]
    lines = [f"distilled student - labels-only student: {e.gain:+.3f}{_ci(e.gain_ci, '+.3f')} on "
             f"{_n(e.test_examples)} test rows (student {e.student_score:.3f}, labels only {e.baseline_score:.3f})"]
    if e.retention is not None:
        lines.append(f"retention: the student keeps {e.retention:.0%}{_ci(e.retention_ci, '.0%')} of the teacher's "
                     f"score {e.teacher_score:.3f} (the bar for {performance} quality: {bar:.0%})")
    lines.append(f"speed and size: {e.speedup:.1f}x faster at batch 1 (>= {MIN_SPEEDUP:g}x pays), "
                 f"{e.size_ratio:.1%} of the teacher's bytes")
    if e.costs_s:
        rows = f" over {_n(e.teacher_rows)} inputs" if e.teacher_rows else ""
        costs = (f"{stage} {seconds:.0f} s{rows if stage == 'teacher pass' else ''}"
                 for stage, seconds in e.costs_s.items())
        lines.append("cost in this run: " + ", ".join(costs))
    return tuple(lines)


def _sample_warning(e: Evidence, performance: str) -> tuple[str, ...]:
    """What the test set can tell: an interval wider than the effect it measures, or one on both sides
    of the bar, decides little."""
    out = []
    low, high = e.gain_ci
    if high - low > abs(e.gain):
        out.append(f"the gain's interval is {high - low:.2f} wide on {_n(e.test_examples)} test rows, wider than the "
                   "gain itself")
    bar = RETENTION_BAR[performance]
    if e.retention_ci is not None and e.retention_ci[0] < bar <= e.retention_ci[1]:
        out.append(f"the retention interval{_ci(e.retention_ci, '.0%')} holds the bar ({bar:.0%}): "
                   f"{_n(e.test_examples)} test rows cannot tell whether the student keeps it")
    if out:
        out[-1] += "; more test rows (data.eval_examples) would make this answer firmer"
    return tuple(out)


def _pipeline(f: Facts) -> str:
    return f"raykd pipeline --config {f.config}"


# --- with evidence -------------------------------------------------------------------------------------

def _measured(f: Facts, why: str, commands: tuple[str, ...], watch: tuple[str, ...] = ()) -> Advice:
    """An evidence rule's advice: its reason, then the figures, and what the test set can tell."""
    return Advice((why, *figures(f.evidence, f.inputs.performance)), commands,
                  _sample_warning(f.evidence, f.inputs.performance) + watch)


def teacher_fails(f: Facts) -> Advice:
    why = ("the fine-tuned teacher scores 0 on the test rows: there is nothing to serve or to distil yet; check "
           "the data and the scorer (evaluate.scorer), then train the teacher longer or start from a larger model")
    return _measured(f, why, (f"raykd finetune --config {f.config} finetune.steps=<more>",))


def smaller_student(f: Facts) -> Advice:
    why = (f"the student runs only {f.evidence.speedup:.1f}x faster than the teacher at batch 1 (< {MIN_SPEEDUP:g}x) "
           "and only a small model can serve: distil into a smaller student")
    return _measured(f, why, (f"raykd pipeline --config {f.config} models.student=<a smaller student>",))


def not_faster(f: Facts) -> Advice:
    why = (f"the student runs only {f.evidence.speedup:.1f}x faster than the teacher at batch 1 (< {MIN_SPEEDUP:g}x): "
           "it does not buy back what it gives up; serve the fine-tuned teacher, or pick a smaller student")
    return _measured(f, why, (f"raykd finetune --config {f.config}",
                              f"raykd serve --config {f.config} 'serve.arms=[teacher]'"))


def labels_only_small(f: Facts) -> Advice:
    why = ("the distilled student does not beat the small model trained on the labels alone beyond noise (the "
           "interval of the gain reaches 0): the teacher's pass and cache buy nothing here")
    return _measured(f, why, (f"raykd distill --config {f.config} distill.teacher_source=none distill.alpha=0",),
                     ("more unlabeled inputs or a temperature x alpha sweep (raykd tune) may change this: measure "
                      "again after either",))


def labels_only_teacher(f: Facts) -> Advice:
    why = ("the distilled student does not beat the labels-only student beyond noise, and the big model can "
           "serve: fine-tune it and serve it")
    return _measured(f, why, (f"raykd finetune --config {f.config}",))


def distil_measured(f: Facts) -> Advice:
    why = (f"distillation beats the labels alone beyond noise and the student keeps the bar for "
           f"{f.inputs.performance} quality at {f.evidence.speedup:.1f}x the speed")
    return _measured(f, why, (_pipeline(f), f"raykd tune --config {f.config}   # did a temperature x alpha sweep "
                                            "beat it?"))


def distil_below_bar(f: Facts) -> Advice:
    why = ("only a small model can serve and distillation beats the labels alone beyond noise, but the student "
           f"keeps less than the bar ({RETENTION_BAR[f.inputs.performance]:.0%}): distil, then close the gap")
    return _measured(f, why, (_pipeline(f), f"raykd tune --config {f.config}"),
                     ("to close the gap: a temperature x alpha sweep (raykd tune), more unlabeled inputs for the "
                      "cache, on-policy batches (distill.on_policy_fraction) or a larger student",))


def teacher_over_student(f: Facts) -> Advice:
    why = (f"the student keeps less than the bar for {f.inputs.performance} quality "
           f"({RETENTION_BAR[f.inputs.performance]:.0%}) and the big model can serve: serve the fine-tuned teacher")
    return _measured(f, why, (f"raykd finetune --config {f.config}", f"raykd tune --config {f.config}   # or close "
                                                                      "the gap"))


# --- without evidence: priors from the counts ------------------------------------------------------------

def _measure(f: Facts) -> str:
    return f"raykd recommend --pilot --config {f.config}   # measure on a sample of your data before committing"


def prompt_low_bar(f: Facts) -> Advice:
    why = ("the big model can be served and the quality bar is low: a prompt on it is the cheapest thing that "
           "can meet the bar; measure it before paying for any training")
    return Advice((why,), ("few-shot prompt the big model: a handful of labeled examples as demonstrations, the "
                           "rest to score the prompt",))


def prompt_few_labels(f: Facts) -> Advice:
    why = (f"{_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}) are too few to fine-tune on without "
           "memorising them: spend them as few-shot demonstrations and as the test set")
    return Advice((why,), ("few-shot prompt the largest model you can serve",))


def small_lora_big(f: Facts) -> Advice:
    why = (f"the quality bar is high but there are only {_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}): "
           "a small-rank adapter has few enough weights to learn the task's format from tens of examples")
    return Advice((why,), (f"raykd finetune --config {f.config} finetune.method=lora "
                           f"finetune.lora_r={SMALL_LORA_RANK}   # hold out ~20% to check it beats a prompt",))


def _teacher_is_good(f: Facts) -> str:
    return (f"distil only assumes the teacher is already good at the task: score it on your "
            f"{_n(f.inputs.labeled)} labeled examples first (a student cannot beat the teacher it copies)")


def distil_unlabeled(f: Facts) -> Advice:
    why = (f"a small model must serve and {_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}) are too few to "
           f"fine-tune, but {_n(f.inputs.unlabeled)} unlabeled inputs (>= {_n(MIN_UNLABELED)}) are enough for a "
           "student to copy a strong teacher from its soft labels")
    return Advice((why,), (f"raykd cache --config {f.config} models.teacher=<a strong teacher's HF dir>",
                           f"raykd distill --config {f.config} distill.alpha=1"), (_teacher_is_good(f),))


def small_lora_small(f: Facts) -> Advice:
    why = (f"a small model must serve, with {_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}) and "
           f"{_n(f.inputs.unlabeled)} unlabeled inputs (< {_n(MIN_UNLABELED)}, too few to distil)")
    return Advice((why,), (f"raykd finetune --config {f.config} models.teacher=<the small model> "
                           f"finetune.method=lora finetune.lora_r={SMALL_LORA_RANK}",),
                  (f"collect >= {_n(MIN_UNLABELED)} unlabeled inputs (e.g. production logs) to distil a strong "
                   "teacher into the small model",))


def _method(f: Facts, big: bool) -> str:
    """Full fine-tune only with many labels and time for it (a big model needs a long budget)."""
    many = f.inputs.labeled >= MANY_LABELED
    return "full" if many and (f.inputs.time_budget == "high" if big else f.inputs.time_budget != "low") else "lora"


def finetune_small(f: Facts) -> Advice:
    if f.inputs.performance == "low":
        why = ("a small model must serve and the quality bar is low: the small model fine-tuned on the labels can "
               "meet it")
    else:
        why = (f"a small model must serve, and {_n(f.inputs.unlabeled)} unlabeled inputs (< {_n(MIN_UNLABELED)}) "
               "are too few for distillation to beat training the small model on the labels")
    return Advice((why,), (f"raykd finetune --config {f.config} models.teacher=<the small model> "
                           f"finetune.method={_method(f, big=False)}", _measure(f)))


def distil_short_time(f: Facts) -> Advice:
    why = ("a small model must serve and there are enough inputs to distil, but time is short: fine-tuning the "
           "teacher is the long pole, one teacher pass to cache its logits is cheap")
    return Advice((why,), (f"raykd cache --config {f.config} models.teacher=<an existing strong teacher>",
                           f"raykd distill --config {f.config} distill.alpha=0.5"), (_teacher_is_good(f),))


def strict_pipeline(f: Facts) -> Advice:
    why = (f"only a small model can serve: the fine-tuned teacher sets the quality, and its soft labels on "
           f"{_n(f.inputs.unlabeled)} unlabeled inputs (>= {_n(MIN_UNLABELED)}) carry more of it into the student than "
           "the labels alone")
    return Advice((why,), (_measure(f), f"{_pipeline(f)} finetune.method={_method(f, big=True)}"))


def moderate_pipeline(f: Facts) -> Advice:
    why = (f"serving cost counts: a fine-tuned teacher sets the quality, {_n(f.inputs.unlabeled)} unlabeled inputs are "
           "enough to distil it into a mid-sized student, and a long time budget pays for the second stage")
    return Advice((why,), (_measure(f), f"{_pipeline(f)} models.student=<a mid-sized student>"))


def full_finetune(f: Facts) -> Advice:
    why = (f"the big model can serve, the bar is high and {_n(f.inputs.labeled)} labeled examples "
           f"(>= {_n(MANY_LABELED)}) are enough for updating every weight to beat a low-rank adapter")
    return Advice((why,), (f"raykd finetune --config {f.config} finetune.method=full",))


def lora(f: Facts) -> Advice:
    why = (f"{_n(f.inputs.labeled)} labeled examples are enough to fine-tune; at this size (or bar) LoRA matches a "
           "full fine-tune, overfits less and one base model serves many adapters")
    return Advice((why,), (f"raykd finetune --config {f.config} finetune.method=lora",))
