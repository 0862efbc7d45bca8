"""summary.json and the stage records it gathers, as typed models.

The stages that write a record (compare/metrics.json, judge/summary.json, train/summary.json,
overoptimization.json, theory.json) validate it here; the report reads the run's summary
through `Summary`. A value that was not scored is None, never 0; a part of the summary whose
stage did not run is None. Every model keeps keys it does not know (a record written by a
newer stage), and dumping leaves out the fields the record never had, so a record read and
written again is the same record.

`Summary.schema_version` is 1; a summary.json without one (from an older harness) is read as
version 1, one with a newer version than `SCHEMA_VERSION` is refused with a line that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.jsonl import InputError, read_json, validation_message

SCHEMA_VERSION = 1
R = TypeVar("R", bound=BaseModel)

# A JSON number stays the type it was written as: 0 does not come back as 0.0.
Number = int | float
StageStatus = Literal["off", "skipped", "reused", "ran", "not run"]


class Record(BaseModel):
    """Fields are declared in the order the stages write them: a record dumps in that order."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def as_record(self) -> dict[str, Any]:
        """The record as written: its own keys only, extra keys kept."""
        return self.model_dump(exclude_unset=True, by_alias=True)


# ---------------------------------------------------------------- the stages' records


class ProbeFigures(Record):
    """One reward-hacking probe of one verifier under one score (harness.trust): `fooled`
    is 0 for an honest verifier; `passed` is None where the probe was not measured (`note`)."""

    probe: str
    kind: Literal["preference", "no_gain", "consistency"]
    pairs: int = 0  # scored pairs; verdicts for the consistency probes
    unscored: int = 0
    original_wins: Number | None = None  # ties count half
    ci95: list[Number | None] | None = None
    mean_gain: Number | None = None  # the perturbed copy's reward minus the original's
    flip_rate: Number | None = None
    fooled: Number | None = None
    fooled_tail: Number | None = None  # pairs whose original is in the high-reward tail
    pairs_tail: int = 0
    threshold: Number | None = None
    passed: bool | None = None
    note: str | None = None


class VerifierProbes(Record):
    """Every probe of one verifier under one score, and its hackability (its worst probe)."""

    label: str
    score: Literal["hard", "soft"]
    probes: list[ProbeFigures] = Field(default_factory=list)
    hackability: Number | None = None
    worst_probe: str | None = None
    hackability_tail: Number | None = None
    num_originals: int = 0
    num_tail: int = 0


class GateRecord(Record):
    """train/hack_gate.json: what `train.hack_gate` decided before training, and why."""

    setting: Literal["refuse", "warn", "off"]
    verifier: str
    decision: Literal["passed", "warned", "refused", "not measured"]
    score: Literal["hard", "soft"] | None = None
    hackability: Number | None = None
    worst_probe: str | None = None
    failures: list[str] = Field(default_factory=list)


class VerifierRow(Record):
    """One verifier of compare/metrics.json: agreement with the reference, cost, the probe."""

    label: str
    model: str | None = None
    params: int | None = None
    accuracy: Number | None = None
    balanced_accuracy: Number | None = None
    kappa: Number | None = None
    f1_yes: Number | None = None
    f1_no: Number | None = None
    macro_f1: Number | None = None  # the mean of F1 yes and F1 no, as HealthBench reports it
    # against each clinician's own label, pooled over the items two or more labelled
    clinician_macro_f1: Number | None = None
    spearman: Number | None = None
    pairwise_accuracy: Number | None = None
    tail_pairwise_accuracy: Number | None = None
    rtd_pair_agreement: Number | None = None
    unscored_rate: Number | None = None
    num_unscored: int | None = None
    criteria_per_s: Number | None = None
    tokens_per_s: Number | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    latency_p50_s: Number | None = None
    latency_p95_s: Number | None = None
    peak_memory_mb: Number | None = None
    seconds: Number | None = None
    num_verdicts: int | None = None
    num_requests: int | None = None
    num_compared: int | None = None
    num_pairs: int | None = None
    num_tail_pairs: int | None = None
    num_without_p_yes: int | None = None  # scored verdicts whose logprobs gave no P(yes)
    # the off-topic probe under the profile's `verify.score`, then hard and soft side by side
    off_topic_accuracy: Number | None = None
    off_topic_ci95: list[Number | None] | None = None
    off_topic_pairs: int | None = None
    off_topic_ties: Number | None = None
    off_topic_unscored: int | None = None
    off_topic_accuracy_hard: Number | None = None
    off_topic_ci95_hard: list[Number | None] | None = None
    off_topic_pairs_hard: int | None = None
    off_topic_ties_hard: Number | None = None
    off_topic_unscored_hard: int | None = None
    off_topic_accuracy_soft: Number | None = None
    off_topic_ci95_soft: list[Number | None] | None = None
    off_topic_pairs_soft: int | None = None
    off_topic_ties_soft: Number | None = None
    off_topic_unscored_soft: int | None = None
    # the reward-hacking probes (harness.trust): the worst under the profile's score, then all
    hackability: Number | None = None
    hackability_probe: str | None = None
    hackability_tail: Number | None = None
    probes_hard: VerifierProbes | None = None
    probes_soft: VerifierProbes | None = None
    reference: bool = False


class Reference(Record):
    """What the verifiers were measured against: human labels or a reference verifier."""

    kind: Literal["labels", "verifier"]
    label: str | None = None


class Clinicians(Record):
    """Clinicians' labels as the reference: the labelled items, those the run has (matched)
    and has not, those without a majority (an even split), and the clinician-to-clinician
    ceiling: every ordered pair of two clinicians' labels on an item two or more labelled,
    pooled, as HealthBench's meta-evaluation scores a physician."""

    source: str | None = None
    num_labelled: int | None = None
    num_matched: int | None = None
    num_unmatched: int | None = None
    num_no_majority: int | None = None
    num_multi_rated: int | None = None
    num_rater_pairs: int | None = None
    rater_agreement: Number | None = None
    rater_macro_f1: Number | None = None


class CompareMetrics(Record):
    """compare/metrics.json."""

    reference: Reference
    verifiers: list[VerifierRow]
    tail_quantile: Number | None = None
    score: Literal["hard", "soft"] | None = None  # verify.score of the ranking metrics
    off_topic_per_prompt: int | None = None
    clinicians: Clinicians | None = None  # when clinicians' labels were the reference
    probe_settings: dict[str, Any] | None = None  # the profile's `probes:` (thresholds)
    recommended: str | None = None  # the smallest verifier near the best hackability
    recommendation: str | None = None  # why, or why none


class HardPairwise(Record):
    """The hard judge's counts, kept beside the soft ones that a `judge.score: soft` run
    reports: the same pairs, each counted by its two verdicts."""

    n: int | None = None
    wins: Number | None = None
    losses: Number | None = None
    ties: Number | None = None
    unscored: int | None = None
    win_rate: Number | None = None
    ci95: list[Number | None] | None = None


class PairwiseSummary(Record):
    """judge/summary.json: the win rate of side A over side B, both orders judged. `score`
        says what counts a pair: "hard" (the two verdicts) or "soft" (the side of 0.5 of P(A)
        averaged over the orders; the hard counts then under `hard`). `position_flip_rate` is the
        hard judge's, `soft_position_flip_rate` the soft one's: pairs whose P(A) in the two orders,
    the judge's mean lean toward the first position (`position_bias`) taken out, do not agree on
    a side of 0.5 (None: no P(A) read in both orders).
        A summary from before soft judging has no `score`: it is hard."""

    a: str | None = None
    b: str | None = None
    judge: str | None = None
    score: Literal["hard", "soft"] | None = None
    n: int | None = None
    wins: Number | None = None
    losses: Number | None = None
    ties: Number | None = None
    unscored: int | None = None
    win_rate: Number | None = None
    ci95: list[Number | None] | None = None
    position_flip_rate: Number | None = None
    soft_position_flip_rate: Number | None = None
    position_bias: Number | None = None  # mean P(the response shown first is better) - 0.5
    # pairs whose two sides wrote the same text: ties, left out of the flip rates and the bias
    num_identical: int | None = None
    length_controlled_win_rate: Number | None = None
    mean_length_a: Number | None = None
    mean_length_b: Number | None = None
    hard: HardPairwise | None = None


class StepSplit(Record):
    """Where a training step's time goes."""

    step_s: Number | None = None
    generation_s: Number | None = None
    reward_s: Number | None = None
    update_s: Number | None = None
    verifier_share: Number | None = None


class TrainSummary(Record):
    """train/summary.json."""

    steps: int | None = None
    reward_first: Number | None = None
    reward_last: Number | None = None
    peak_memory_mb: Number | None = None
    adapter_weights_changed: bool | None = None
    base_weights_unchanged: bool | None = None
    step_split: StepSplit | None = None
    resumed_from: int | None = None
    unscored_rewards: int | None = None
    # the mean over steps of TRL's frac_reward_zero_std: groups in which every completion got
    # the same reward, so GRPO had no advantage to learn from
    zero_spread_share: Number | None = None
    hack_gate: GateRecord | None = None


class Checkpoint(Record):
    """One checkpoint of the over-optimisation check (step 0 is the base policy)."""

    step: int
    reward: Number | None = None
    win_rate: Number | None = None
    ci95: list[Number | None] | None = None
    n: int | None = None


class Overoptimization(Record):
    """overoptimization.json."""

    checkpoints: list[Checkpoint] = Field(default_factory=list)
    flagged: bool = False
    flagged_steps: list[int] = Field(default_factory=list)
    note: str | None = None


class Peak(Record):
    kl: Number | None = None
    win_rate: Number | None = None


class MonteCarlo(Record):
    n: int | None = None
    seed: int | None = None
    max_abs_error: Number | None = None


class Theory(Record):
    """theory.json (its plots move to the summary's plots). A KL table row is keyed by
    misspecification pattern ("Correct", "Top 10% wrong", ...) besides kl and beta."""

    kl_table: list[dict[str, Number | None]] = Field(default_factory=list)
    monte_carlo: MonteCarlo | None = None
    peaks: dict[str, Peak] = Field(default_factory=dict)
    best_of_16: dict[str, Peak] | None = None
    beta_0_1: dict[str, Number | None] | None = Field(None, alias="beta_0.1")
    paper_beta_0_01_kl: Number | None = Field(None, alias="paper_beta_0.01_kl")
    plots: dict[str, str] | None = None


# ---------------------------------------------------------------- grading (grading.json)


class TagScore(Record):
    """The score of one model's responses under one tag: `kind` "prompt" for a prompt's
    `example_tags` (e.g. theme:emergency_referrals), "criterion" for a criterion's tags (e.g.
    axis:accuracy). `score` is None when no response had a score under the tag (n = 0)."""

    tag: str
    kind: Literal["prompt", "criterion"]
    score: Number | None = None
    ci95: list[Number | None] | None = None
    n: int = 0


class ModelGrade(Record):
    """One source model's HealthBench-style grade: the clipped mean score of its scored
    responses with a bootstrap interval, the unscored responses left out, and every tag."""

    model: str
    reference: bool = False
    score: Number | None = None
    ci95: list[Number | None] | None = None
    n: int = 0
    num_unscored: int = 0
    tags: list[TagScore] = Field(default_factory=list)


class Grading(Record):
    """grading.json, written by the verify stage."""

    resamples: int
    seed: int
    min_scored_share: Number | None = None
    models: list[ModelGrade] = Field(default_factory=list)


class EndpointRow(Record):
    """One endpoint of an endpoint pool, as its backend closed (stats/endpoints.jsonl)."""

    role: str | None = None
    model: str | None = None
    url: str | None = None
    sent: int | None = None
    answered: int | None = None
    rejected: int | None = None  # 4xx: the request's own error
    failed: int | None = None  # connection error, timeout, 5xx
    moved: int | None = None  # failed there and re-sent on another endpoint
    taken_out: int | None = None
    rejoined: int | None = None
    events: list[dict[str, Any]] | None = None  # {event: out|rejoined, at_s, reason}
    latency_p50_s: Number | None = None
    latency_p95_s: Number | None = None


# ---------------------------------------------------------------- the summary


class Machine(Record):
    cpu: str | None = None
    cores: int | None = None
    memory_gb: Number | None = None
    gpu: str | None = None
    gpu_count: int | None = None
    platform: str | None = None
    python: str | None = None
    packages: dict[str, Any] | None = None


class RunFacts(Record):
    name: str | None = None
    dir: str | None = None
    profile: str | None = None
    created: str | None = None
    harness_version: str | None = None
    machine: Machine | None = None


class StageRow(Record):
    stage: str
    status: StageStatus
    seconds: Number | None = None
    counts: dict[str, Any] | None = None


class Unscored(Record):
    """Answers left unscored, per stage; None where the stage left no record."""

    rollouts: int | None = None
    propose: int | None = None
    refine: int | None = None
    verify: int | None = None
    compare: dict[str, int | None] | None = None  # per verifier label
    train: int | None = None
    judge: int | None = None


class RefineRow(Record):
    """One Refinement-through-Differentiation iteration (refine.jsonl)."""

    iteration: int | None = None
    num_prompts: int | None = None
    num_refined: int | None = None
    num_failed: int | None = None
    tied_before: int | None = None
    separated_after: int | None = None
    num_criteria_mean: Number | None = None
    num_unscored_verdicts: int | None = None


class Discrimination(Record):
    """How many of the reward verifier's criteria told a prompt's candidates apart: a criterion
    whose hard verdict was the same for every candidate of its prompt cannot, nor, scored soft,
    one whose P(yes) spans less than 0.1 over them. `score` is the run's `verify.score`, the
    one the check is made on."""

    num_criteria: int
    num_constant: int
    constant_share: Number | None = None
    num_criteria_soft: int | None = None
    num_constant_soft: int | None = None
    constant_share_soft: Number | None = None
    score: Literal["hard", "soft"] = "hard"


class SignalRow(Record):
    """One line of "Does this run measure anything?": a number, whether it carries signal
    (`ok`; None where it was not measured), and, when it does not, why and what to change."""

    signal: str
    subject: str | None = None
    value: Number | None = None
    ci95: list[Number | None] | None = None
    shown: str  # the value as the report prints it
    ok: bool | None = None
    why: str | None = None
    fix: str | None = None


class Summary(Record):
    """summary.json: what the report says about a run."""

    schema_version: int = SCHEMA_VERSION
    run: RunFacts | None = None
    signal: list[SignalRow] | None = None
    discrimination: Discrimination | None = None
    stages: list[StageRow] = Field(default_factory=list)
    unscored: Unscored | None = None
    refine: list[RefineRow] | None = None
    verifiers: list[VerifierRow] | None = None
    reference: Reference | None = None
    clinicians: Clinicians | None = None
    # the reward-hacking probes' thresholds, and the verifier recommended by hackability
    probe_settings: dict[str, Any] | None = None
    recommended_verifier: str | None = None
    verifier_recommendation: str | None = None  # why, or why none ("none recommended: ...")
    pairwise: PairwiseSummary | None = None
    train: TrainSummary | None = None
    overoptimization: Overoptimization | None = None
    theory: Theory | None = None
    grading: Grading | None = None
    endpoints: list[EndpointRow] | None = None  # only a run whose roles used endpoint pools
    plots: dict[str, str] | None = None

    def as_record(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, **super().as_record()}

    def stage_status(self, stage: str) -> StageStatus | None:
        return next((s.status for s in self.stages if s.stage == stage), None)


def read_record(path: Path, record_type: type[R]) -> R | None:
    """A stage's record file through its model; None when the stage left none."""
    return validate_record(path, record_type, read_json(path)) if path.is_file() else None


def validate_record(path: Path, record_type: type[R], data: Any) -> R | None:
    """`data`, read from `path`, as a `record_type`: InputError naming the file and field."""
    if data is None:
        return None
    try:
        return record_type.model_validate(data)
    except ValidationError as exc:
        raise InputError(validation_message(path, 1, exc)) from None


def load_summary(path: Path) -> Summary:
    """A run's summary.json; one without `schema_version` is version 1."""
    data = read_json(path)
    version = data.get("schema_version", 1) if isinstance(data, dict) else 1
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(
            f"{path}: summary schema_version {version!r} is not one this harness reads "
            f"(up to {SCHEMA_VERSION}): a newer harness wrote it; upgrade to read it"
        )
    summary = validate_record(path, Summary, data)
    if summary is None:
        raise InputError(f"{path}: expected a JSON object, got null")
    return summary
