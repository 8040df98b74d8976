"""``raykd recommend``: fine-tune, distil, both, or only prompt? The decision framework as a command.

    raykd recommend --performance high --resources strict --labeled 5000 --unlabeled 200000 --time-budget 72
    python -m raykd.recommend --performance low --resources relaxed --labeled 40 --unlabeled 0 \
        --time-budget low --json
    raykd recommend ... --run-dir runs/demo      # also weigh the run's measured report

``--time-budget`` is ``low``, ``medium``, ``high`` or a number of hours: under 24 h is low (time for one
training run and its evaluation), under 168 h (a week) is medium, a week or more is high (the whole
fine-tune → cache → distil → evaluate pipeline with a knob sweep and a retry). With ``--run-dir RUN``
the measured ``RUN/report/metrics.json`` (``raykd evaluate``) is quoted in the reason, and a warning
says where it contradicts the advice. Bad input exits 2 with one line. The rules are the pure function
:func:`recommend`; its docstring holds the table.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from raykd.launch import fail

PERFORMANCE = ("low", "medium", "high")
RESOURCES = ("strict", "moderate", "relaxed")
TIME_LEVELS = ("low", "medium", "high")

# Below ~100 labeled examples a fine-tune memorises rather than generalises, and a held-out split
# big enough to tell a real gain from noise (±10 points at 95% on ~80 examples) leaves nothing to
# train on: the labels are better spent as few-shot demonstrations and as the yardstick.
FEW_LABELED = 100
# From ~10k labeled examples a full fine-tune pulls ahead of LoRA (LoRA matches it on small and
# mid-sized task sets, where its few trainable weights also overfit less); below that LoRA is the default.
MANY_LABELED = 10_000
# Distillation teaches the student the teacher's behaviour only where it sees inputs: labeled and
# unlabeled inputs alike are scored by the teacher, and under ~10k of them the student copies too
# little of that behaviour for the extra teacher pass and cache to pay for themselves.
MIN_TRANSFER_SET = 10_000
# Hours → time level. A day fits one training run and its evaluation; the two-stage pipeline
# (teacher fine-tune, a teacher pass over the transfer set, student training, evaluation and at least
# one retry) needs days at production scale (a 70B teacher), and a week also fits a knob sweep.
SHORT_TIME_HOURS = 24.0
LONG_TIME_HOURS = 168.0
# A small-rank adapter: rank 8 on the attention projections is a few hundredths of a percent of a 7B
# model's weights, little enough that tens of examples teach the format without memorising them.
SMALL_LORA_RANK = 8
# A distilled student worth serving keeps ≥ 90% of the teacher's score and is ≥ 2x faster at batch 1:
# below either, the quality given up is not bought back by speed (and vice versa).
MIN_RETENTION = 0.90
MIN_SPEEDUP = 2.0
# A student keeping ≥ 95% of the teacher's score is as good as the teacher within the noise of a
# typical few-hundred-example test set: under tight serving resources it should be served.
STRONG_RETENTION = 0.95

FINE_TUNE = "fine-tune"
FINE_TUNE_THEN_DISTIL = "fine-tune then distil"
DISTIL_ONLY = "distil only"
SMALL_RANK_LORA = "small-rank LoRA"
PROMPT = "prompt engineering"
STRATEGIES = (FINE_TUNE, FINE_TUNE_THEN_DISTIL, DISTIL_ONLY, SMALL_RANK_LORA, PROMPT)
DISTILS = (FINE_TUNE_THEN_DISTIL, DISTIL_ONLY)

REPORT_METRICS = Path("report") / "metrics.json"  # RUN/report/metrics.json, written by `raykd evaluate`


class RecommendError(ValueError):
    """Bad input to ``raykd recommend``: the message is one line naming it."""


@dataclass(frozen=True)
class Inputs:
    """What the user knows before training: quality need, serving constraint, data, time."""

    performance: str  # low | medium | high: how close to the best model the task must get
    resources: str  # strict | moderate | relaxed: memory / latency / cost budget at inference
    labeled: int  # labeled examples
    unlabeled: int  # unlabeled inputs (prompts, texts) from the task's distribution
    time_budget: str  # low | medium | high (see parse_time_budget)

    def __post_init__(self) -> None:
        for name, value, allowed in (("performance", self.performance, PERFORMANCE),
                                     ("resources", self.resources, RESOURCES),
                                     ("time_budget", self.time_budget, TIME_LEVELS)):
            if value not in allowed:
                raise RecommendError(f"{name}: unknown level {value!r} (choose from {', '.join(allowed)})")
        for name, count in (("labeled", self.labeled), ("unlabeled", self.unlabeled)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise RecommendError(f"{name}: expected a whole number of examples >= 0, got {count!r}")


@dataclass(frozen=True)
class Measured:
    """A run's measured report (``RUN/report/metrics.json``): the student against its teacher."""

    source: str  # the metrics.json read
    retention: float | None  # student score / teacher score; None on plain text or a teacher at 0
    latency_speedup: float  # teacher / student batch-1 p50 latency
    size_ratio: float  # student / teacher bytes on disk
    student_score: float | None = None
    teacher_score: float | None = None


@dataclass(frozen=True)
class Recommendation:
    """The advice: what to do (strategy), how (method), why (reason), and what to watch (warnings)."""

    strategy: str
    method: str
    reason: str
    rule: str  # the row of the rule table that decided (R1 … R12)
    warnings: tuple[str, ...] = ()
    measured: Measured | None = None


@dataclass(frozen=True)
class Facts:
    """The inputs as the rules read them (thresholds applied once)."""

    inputs: Inputs
    few_labeled: bool  # labeled < FEW_LABELED
    many_labeled: bool  # labeled >= MANY_LABELED
    transfer_set: int  # labeled + unlabeled: every input the teacher can score for the student
    enough_transfer: bool  # transfer_set >= MIN_TRANSFER_SET
    short_time: bool  # time budget low
    long_time: bool  # time budget high

    @classmethod
    def of(cls, i: Inputs) -> Facts:
        transfer = i.labeled + i.unlabeled
        return cls(i, i.labeled < FEW_LABELED, i.labeled >= MANY_LABELED, transfer,
                   transfer >= MIN_TRANSFER_SET, i.time_budget == "low", i.time_budget == "high")


# An advice: (strategy, method, reason, warnings).
Advice = tuple[str, str, str, tuple[str, ...]]


@dataclass(frozen=True)
class Rule:
    """One row of the rule table: when it applies, and the advice it gives."""

    name: str
    when: Callable[[Facts], bool]
    advise: Callable[[Facts], Advice]


def _n(count: int) -> str:
    return f"{count:,}"


def _teacher_is_good_warning(f: Facts) -> str:
    """Distilling from a teacher nobody fine-tuned is only as good as that teacher is on the task."""
    return (f"distil only assumes the teacher is already good at the task as it is: score it on your "
            f"{_n(f.inputs.labeled)} labeled examples first (a student cannot beat the teacher it copies)")


def _prompt_method(model: str) -> str:
    return (f"few-shot prompt {model} as it is (no training): a handful of labeled examples as "
            "demonstrations, the rest to score the prompt")


def _prompt_low_bar(f: Facts) -> Advice:
    why = ("the big model can be served and the quality bar is low: a prompt on it is the cheapest thing that "
           "can meet the bar, so measure it before paying for any training")
    return PROMPT, _prompt_method("the big model"), why, ()


def _prompt_few_labels(f: Facts) -> Advice:
    why = (f"{_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}) are too few to fine-tune on without "
           "memorising them, and " + ("time is short" if f.short_time else "the quality bar is not high")
           + ": spend them as few-shot demonstrations and as the test set instead")
    return PROMPT, _prompt_method("the largest model you can serve"), why, ()


def _small_lora_big(f: Facts) -> Advice:
    method = (f"LoRA of rank {SMALL_LORA_RANK} on the big model: raykd finetune finetune.method=lora "
              f"finetune.lora_r={SMALL_LORA_RANK}; hold out ~20% of the {_n(f.inputs.labeled)} examples to "
              "check it beats a few-shot prompt")
    why = (f"the quality bar is high but there are only {_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}): "
           "a full fine-tune or a wide adapter would memorise them, a small-rank adapter has few enough weights "
           "to learn the task's format and labels from tens of examples")
    return SMALL_RANK_LORA, method, why, ()


def _distil_unlabeled(f: Facts) -> Advice:
    method = (f"raykd cache cache.teacher=<a strong teacher's HF dir> on the {_n(f.inputs.unlabeled)} unlabeled "
              "inputs, then raykd distill distill.alpha=1 (soft targets only: no labels needed)")
    why = (f"a small model must serve and {_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}) are too few "
           f"to fine-tune anything, but {_n(f.transfer_set)} inputs (>= {_n(MIN_TRANSFER_SET)}) are enough for "
           "a student to copy a teacher's behaviour from its soft labels")
    return DISTIL_ONLY, method, why, (_teacher_is_good_warning(f),)


def _small_lora_small(f: Facts) -> Advice:
    method = (f"LoRA of rank {SMALL_LORA_RANK} on the small model you can serve: raykd finetune "
              f"models.teacher=<the small model> finetune.method=lora finetune.lora_r={SMALL_LORA_RANK}")
    why = (f"a small model must serve, there are {_n(f.inputs.labeled)} labeled examples (< {FEW_LABELED}) and "
           f"{_n(f.transfer_set)} inputs in all (< {_n(MIN_TRANSFER_SET)}, too few to distil): a small-rank "
           "adapter is the most the data supports without memorising it")
    warning = (f"expect limited quality: collect >= {_n(MIN_TRANSFER_SET)} unlabeled inputs from the task "
               "(e.g. production logs) so a strong teacher can be distilled into the small model")
    return SMALL_RANK_LORA, method, why, (warning,)


def _finetune_method(f: Facts, big: bool) -> str:
    """Full fine-tune only with many labels and time for it (a big model also needs a long budget)."""
    full = f.many_labeled and (f.long_time if big else not f.short_time)
    return "full" if full else "lora"


def _finetune_small(f: Facts) -> Advice:
    method = _finetune_method(f, big=False)
    how = (f"{'full' if method == 'full' else 'LoRA'} fine-tune of the small model you can serve on the "
           f"{_n(f.inputs.labeled)} labels: raykd finetune models.teacher=<the small model> finetune.method={method}")
    if f.inputs.performance == "low":
        why = ("a small model must serve and the quality bar is low: the small model fine-tuned on the labels alone "
               "can meet it, without the cost of a teacher")
        return FINE_TUNE, how, why, ()
    why = (f"a small model must serve, but {_n(f.transfer_set)} inputs in all (< {_n(MIN_TRANSFER_SET)}) are too "
           "few for the student to learn the teacher's behaviour: train the small model on the labels directly")
    warning = (f"to reach a higher quality, collect >= {_n(MIN_TRANSFER_SET)} unlabeled inputs and fine-tune a "
               "teacher then distil it")
    return FINE_TUNE, how, why, (warning,)


def _distil_short_time(f: Facts) -> Advice:
    method = ("raykd cache cache.teacher=<an existing strong teacher's HF dir> on all "
              f"{_n(f.transfer_set)} inputs, then raykd distill distill.alpha=0.5 (the labels keep the student "
              "right where the teacher, not fine-tuned, is wrong)")
    why = ("a small model must serve and there is enough data to distil, but time is short: fine-tuning the "
           "teacher first is the long pole, while one teacher pass to cache its logits is cheap")
    return DISTIL_ONLY, method, why, (_teacher_is_good_warning(f),)


def _pipeline_method(f: Facts, student: str) -> str:
    method = _finetune_method(f, big=True)
    return (f"raykd pipeline: {'full' if method == 'full' else 'LoRA'} fine-tune of the teacher on the "
            f"{_n(f.inputs.labeled)} labels (finetune.method={method}), cache its top-k logits on all "
            f"{_n(f.transfer_set)} inputs, distil {student} (distill.alpha=0.5; raykd tune searches "
            "temperature x alpha)")


def _strict_pipeline(f: Facts) -> Advice:
    why = (f"the quality bar is {f.inputs.performance} but only a small model can serve: fine-tuning the big "
           f"teacher reaches the quality, and its soft labels on {_n(f.transfer_set)} inputs "
           f"(>= {_n(MIN_TRANSFER_SET)}) carry more of it into the student than the hard labels alone")
    return FINE_TUNE_THEN_DISTIL, _pipeline_method(f, "the small student"), why, ()


def _moderate_pipeline(f: Facts) -> Advice:
    why = (f"the quality bar is {f.inputs.performance} and serving cost counts: a fine-tuned teacher sets the "
           f"quality, {_n(f.transfer_set)} inputs (>= {_n(MIN_TRANSFER_SET)}) are enough to distil it, and a "
           "long time budget pays for the second stage")
    return FINE_TUNE_THEN_DISTIL, _pipeline_method(f, "a mid-sized student that fits the serving budget"), why, ()


def _full_finetune(f: Facts) -> Advice:
    how = f"full fine-tune of the big model on the {_n(f.inputs.labeled)} labels: raykd finetune finetune.method=full"
    why = (f"the big model can be served, the quality bar is high and {_n(f.inputs.labeled)} labeled examples "
           f"(>= {_n(MANY_LABELED)}) are enough for updating every weight to beat a low-rank adapter")
    return FINE_TUNE, how, why, ()


def _lora(f: Facts) -> Advice:
    how = (f"LoRA fine-tune of the model you can serve on the {_n(f.inputs.labeled)} labels: raykd finetune "
           "finetune.method=lora (rank 16)")
    if f.many_labeled and f.inputs.performance == "high" and f.short_time:
        why = ("the data would support a full fine-tune, but time is short: LoRA trains ~1% of the weights, "
               "so a run is faster and fits less memory, for most of the quality")
    else:
        why = (f"{_n(f.inputs.labeled)} labeled examples are enough to fine-tune; at this size (or quality bar) LoRA "
               "matches a full fine-tune, overfits less and one base model serves many adapters")
    return FINE_TUNE, how, why, ()


def _strict(f: Facts) -> bool:
    return f.inputs.resources == "strict"


# First match wins: keep this order and the table in `recommend`'s docstring in step.
RULES: tuple[Rule, ...] = (
    Rule("R1", lambda f: f.inputs.resources == "relaxed" and f.inputs.performance == "low", _prompt_low_bar),
    Rule("R2", lambda f: not _strict(f) and f.few_labeled and f.inputs.performance == "high" and not f.short_time,
         _small_lora_big),
    Rule("R3", lambda f: not _strict(f) and f.few_labeled, _prompt_few_labels),
    Rule("R4", lambda f: _strict(f) and f.few_labeled and f.enough_transfer, _distil_unlabeled),
    Rule("R5", lambda f: _strict(f) and f.few_labeled, _small_lora_small),
    Rule("R6", lambda f: _strict(f) and f.inputs.performance == "low", _finetune_small),
    Rule("R7", lambda f: _strict(f) and f.enough_transfer and f.short_time, _distil_short_time),
    Rule("R8", lambda f: _strict(f) and f.enough_transfer, _strict_pipeline),
    Rule("R9", _strict, _finetune_small),
    Rule("R10", lambda f: f.inputs.resources == "relaxed" and f.inputs.performance == "high" and f.many_labeled
         and not f.short_time, _full_finetune),
    Rule("R11", lambda f: f.inputs.resources == "moderate" and f.inputs.performance != "low" and f.enough_transfer
         and f.long_time, _moderate_pipeline),
    Rule("R12", lambda f: True, _lora),
)


def recommend(inputs: Inputs, measured: Measured | None = None) -> Recommendation:
    """The advice for ``inputs`` (pure); with ``measured``, its figures join the reason and the warnings.

    Rows are tried in order and the first that applies decides. "few" is labeled < ``FEW_LABELED``
    (100), "many" is labeled >= ``MANY_LABELED`` (10,000), "transfer" is labeled + unlabeled (every
    input the teacher can score) >= ``MIN_TRANSFER_SET`` (10,000); "-" is any value.

    ====  ==========  ===========  =======  ========  ==========  =======================================
    rule  resources   performance  labeled  transfer  time        advice
    ====  ==========  ===========  =======  ========  ==========  =======================================
    R1    relaxed     low          -        -         -           prompt engineering: the cheapest thing
                                                                  that can meet a low bar
    R2    not strict  high         few      -         not low     small-rank LoRA (r=8) on the big model
    R3    not strict  -            few      -         -           prompt engineering, labels as few-shot
                                                                  demonstrations and test set
    R4    strict      -            few      enough    -           distil only: a strong existing teacher
                                                                  labels the unlabeled data (alpha=1)
    R5    strict      -            few      < 10k     -           small-rank LoRA on the small model;
                                                                  warn: collect unlabeled inputs
    R6    strict      low          >= 100   -         -           fine-tune the small model directly
    R7    strict      medium/high  >= 100   enough    low         distil only from an existing teacher
                                                                  (alpha=0.5): no time to fine-tune it
    R8    strict      medium/high  >= 100   enough    med/high    fine-tune the teacher, then distil
    R9    strict      medium/high  >= 100   < 10k     -           fine-tune the small model directly;
                                                                  warn: too few inputs to distil
    R10   relaxed     high         many     -         not low     full fine-tune of the big model
    R11   moderate    medium/high  >= 100   enough    high        fine-tune, then distil to a mid-sized
                                                                  student
    R12   otherwise                                               LoRA fine-tune (rank 16)
    ====  ==========  ===========  =======  ========  ==========  =======================================

    Fine-tunes (R6, R8, R9, R11) are full only with many labels and time for it (high time for a big
    teacher, not low for the small model), else LoRA. Advice that distils warns where ``measured``
    shows retention < ``MIN_RETENTION`` (0.90) or a batch-1 speedup < ``MIN_SPEEDUP`` (2x); advice that
    does not distil, under strict or moderate resources, warns where ``measured`` shows a student that
    already keeps >= ``STRONG_RETENTION`` (0.95) of the teacher's score at >= 2x the speed.
    """
    facts = Facts.of(inputs)
    rule = next(r for r in RULES if r.when(facts))
    strategy, method, reason, warnings = rule.advise(facts)
    if measured is not None:
        reason = f"{reason}. {measured_sentence(measured)}"
        warnings = warnings + contradictions(strategy, inputs, measured)
    return Recommendation(strategy, method, reason, rule.name, warnings, measured)


def measured_sentence(m: Measured) -> str:
    """The run's figures in one sentence."""
    if m.retention is None:
        kept = "the report has no retention (plain-text test data, or a teacher scoring 0)"
    else:
        kept = f"the student keeps {m.retention:.0%} of the teacher's score"
        if m.student_score is not None and m.teacher_score is not None:
            kept += f" ({m.student_score:.3f} vs {m.teacher_score:.3f})"
    return (f"Measured in {m.source}: {kept}, runs {m.latency_speedup:.1f}x faster at batch 1 "
            f"and takes {m.size_ratio:.1%} of its bytes")


def contradictions(strategy: str, inputs: Inputs, m: Measured) -> tuple[str, ...]:
    """Warnings where the measured run argues against the advice."""
    out: list[str] = []
    if strategy in DISTILS:
        if m.retention is not None and m.retention < MIN_RETENTION:
            out.append(f"measured retention {m.retention:.0%} is below {MIN_RETENTION:.0%}: the student loses too "
                       "much of the teacher's score; try a larger student, more unlabeled inputs or a "
                       "temperature x alpha sweep (raykd tune) before relying on distillation")
        if m.latency_speedup < MIN_SPEEDUP:
            out.append(f"measured batch-1 speedup {m.latency_speedup:.1f}x is below {MIN_SPEEDUP:.0f}x: a student "
                       "this close to the teacher's speed does not pay for the quality it gives up; pick a "
                       "smaller student or measure at your serving batch size")
    elif (inputs.resources != "relaxed" and m.retention is not None and m.retention >= STRONG_RETENTION
          and m.latency_speedup >= MIN_SPEEDUP):
        out.append(f"a distilled student in this run already keeps {m.retention:.0%} of the teacher's score at "
                   f"{m.latency_speedup:.1f}x the speed: under {inputs.resources} resources serving it may beat "
                   f"the advised {strategy}")
    return tuple(out)


def _number(metrics: dict, key: str, source: Path, optional: bool = False) -> float | None:
    """``metrics[key]`` as a finite float; a missing or non-numeric value is a one-line error."""
    if key not in metrics:
        raise RecommendError(f"{source}: no {key!r} in the report (is it a `raykd evaluate` metrics.json?)")
    value = metrics[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecommendError(f"{source}: {key!r} is {value!r}, not a number")
    return float(value)


def read_measured(run_dir: str | Path) -> Measured:
    """The figures of ``RUN/report/metrics.json``; a missing run, report or key is a one-line error."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RecommendError(f"--run-dir {run}: no such directory")
    path = run / REPORT_METRICS
    if not path.is_file():
        raise RecommendError(f"--run-dir {run}: no evaluation report ({path} is missing); run `raykd evaluate` first")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecommendError(f"{path}: unreadable report ({e})") from e
    if not isinstance(metrics, dict):
        raise RecommendError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    return Measured(source=str(path), retention=_number(metrics, "retention", path, optional=True),
                    latency_speedup=_number(metrics, "latency_speedup", path),
                    size_ratio=_number(metrics, "size_ratio", path),
                    student_score=_number(metrics, "student_score", path, optional=True),
                    teacher_score=_number(metrics, "teacher_score", path, optional=True))


def parse_time_budget(text: str) -> str:
    """``low``/``medium``/``high``, or hours (> 0) mapped by ``SHORT_TIME_HOURS`` / ``LONG_TIME_HOURS``."""
    if text in TIME_LEVELS:
        return text
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not math.isfinite(hours) or hours <= 0:
        raise argparse.ArgumentTypeError(f"expected low, medium, high or a number of hours > 0, got {text!r}")
    return "low" if hours < SHORT_TIME_HOURS else "medium" if hours < LONG_TIME_HOURS else "high"


def _count(text: str) -> int:
    """A number of examples: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of examples >= 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block), exit 2, like every stage."""

    def error(self, message: str) -> None:
        fail(RecommendError(message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raykd recommend", description="Fine-tune, distil, both, or only prompt? The advice and why.",
                     epilog="Rules: see raykd.recommend.recommend's docstring and docs/recommend.md.")
    parser.add_argument("--performance", required=True, choices=PERFORMANCE,
                        help="how close to the best achievable quality the task must get")
    parser.add_argument("--resources", required=True, choices=RESOURCES,
                        help="inference budget: strict (only a small model can serve), moderate (cost counts), "
                             "relaxed (the big model can serve)")
    parser.add_argument("--labeled", required=True, type=_count, help="labeled examples available")
    parser.add_argument("--unlabeled", required=True, type=_count, help="unlabeled task inputs available")
    parser.add_argument("--time-budget", required=True, type=parse_time_budget,
                        help=f"low, medium, high, or hours (< {SHORT_TIME_HOURS:g} low, < {LONG_TIME_HOURS:g} "
                             "medium, else high)")
    parser.add_argument("--run-dir", help="a run whose RUN/report/metrics.json (raykd evaluate) to weigh")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def to_json(inputs: Inputs, rec: Recommendation) -> dict:
    """The recommendation and its inputs as one JSON-able object."""
    return {"strategy": rec.strategy, "method": rec.method, "reason": rec.reason, "rule": rec.rule,
            "warnings": list(rec.warnings), "inputs": asdict(inputs),
            "measured": asdict(rec.measured) if rec.measured else None}


def to_text(rec: Recommendation) -> str:
    """A few wrapped lines: strategy, method, reason, then each warning."""
    lines = [("strategy", f"{rec.strategy} (rule {rec.rule})"), ("method", rec.method), ("reason", rec.reason)]
    lines += [("warning", w) for w in rec.warnings]
    return "\n".join(textwrap.fill(text, width=100, initial_indent=f"{label + ':':<10}", subsequent_indent=" " * 10)
                     for label, text in lines)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        inputs = Inputs(args.performance, args.resources, args.labeled, args.unlabeled, args.time_budget)
        measured = read_measured(args.run_dir) if args.run_dir is not None else None
    except RecommendError as e:
        fail(e)
    rec = recommend(inputs, measured)
    print(json.dumps(to_json(inputs, rec)) if args.json else to_text(rec))


if __name__ == "__main__":
    main()
