"""The pairwise judge's orchestration: both orders asked, answers mapped back to the sides,
unscored answers kept as unscored, the schema the judge must answer under, and the soft,
position-debiased score read from the verdict token's logprobs."""

import json
import math

import jsonschema
import pytest

from harness.backends.scripted import ScriptedBackend
from harness.config import JudgeConfig
from harness.judge import NO_P_A, answer_schema, judge_pairs, pair_up, soft_p_a, summarise
from harness.overoptimization import overoptimized_steps
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.summary_schema import Checkpoint, PairwiseSummary
from harness.types import Candidate, ChatRequest, Completion, Prompt, TokenLogprob

from .conftest import scripted_role

PROMPTS = [Prompt(id=f"p{i}", prompt=f"question {i}") for i in range(4)]


def candidates(side: str, quality: str) -> list[Candidate]:
    return [
        Candidate(id=f"p{i}:{side}:0", prompt_id=f"p{i}", text=f"{quality} answer {i}", model=side)
        for i in range(4)
    ]


def judge_role(context, script) -> tuple[Role, ScriptedBackend]:
    backend = ScriptedBackend("judge", scripted_role(), context, script=script)
    return Role("judge", backend.config, backend), backend


def prefers_good(request: ChatRequest) -> str:
    """A judge that sees quality: the response saying "good" wins, wherever it is shown."""
    text = request.messages[-1].content
    first = text.split("<response_1>")[1].split("</response_1>")[0]
    return json.dumps({"verdict": "1" if "good" in first else "2"})


def test_a_consistent_judge_wins_in_both_orders(context):
    role, backend = judge_role(context, prefers_good)
    pairs = pair_up(candidates("trained", "good"), candidates("base", "poor"))
    judgements = judge_pairs(role, PROMPTS, pairs, JudgeConfig(), PROMPTS_DIR)
    assert len(backend.calls) == 8  # 4 pairs x 2 orders
    shown_first = [c.messages[-1].content.split("<response_1>")[1][:6] for c in backend.calls]
    assert shown_first == ["\ngood ", "\npoor "] * 4  # A first, then B first, pair by pair
    assert all(j.first_order == "a" and j.second_order == "a" for j in judgements)
    summary = summarise(judgements, JudgeConfig())
    assert summary.win_rate == 1.0 and summary.position_flip_rate == 0.0
    assert summary.wins == 4 and summary.n == 4


def test_a_position_biased_judge_gives_ties_and_a_full_flip_rate(context):
    role, _ = judge_role(context, lambda request: json.dumps({"verdict": "1"}))
    pairs = pair_up(candidates("trained", "good"), candidates("base", "poor"))
    judgements = judge_pairs(role, PROMPTS, pairs, JudgeConfig(), PROMPTS_DIR)
    assert [(j.first_order, j.second_order) for j in judgements] == [("a", "b")] * 4
    summary = summarise(judgements, JudgeConfig())
    assert summary.ties == 4 and summary.win_rate == 0.5
    assert summary.position_flip_rate == 1.0
    first = summarise(judgements, JudgeConfig(disagreement="first"))
    assert first.win_rate == 1.0  # the first order alone would credit the bias to A


def test_a_failed_answer_is_unscored_not_a_loss(context):
    def fails_on_p0(request: ChatRequest) -> str | None:
        return None if "question 0" in request.messages[-1].content else prefers_good(request)

    role, _ = judge_role(context, fails_on_p0)
    pairs = pair_up(candidates("trained", "good"), candidates("base", "poor"))
    judgements = judge_pairs(role, PROMPTS, pairs, JudgeConfig(), PROMPTS_DIR)
    assert judgements[0].first_order is None and judgements[0].second_order is None
    assert judgements[0].unscored_reasons
    summary = summarise(judgements, JudgeConfig())
    assert summary.unscored == 1 and summary.n == 3 and summary.win_rate == 1.0


def test_pairs_meet_on_prompt_and_sample_index():
    a = candidates("trained", "good")
    b = [c.model_copy(update={"sample_index": 1}) for c in candidates("base", "poor")]
    assert pair_up(a, b) == []
    assert len(pair_up(a, candidates("base", "poor")[:2])) == 2


@pytest.mark.parametrize(
    ("settings", "valid", "invalid"),
    [
        (JudgeConfig(), {"verdict": "2"}, {"verdict": "tie"}),
        (JudgeConfig(ties=True), {"verdict": "tie"}, {"verdict": "3"}),
        (
            JudgeConfig(rationale=True, rationale_chars=20),
            {"rationale": "clearer dosing", "verdict": "1"},
            {"rationale": "x" * 21, "verdict": "1"},
        ),
    ],
)
def test_the_answer_schema_follows_the_profile(settings, valid, invalid):
    schema = answer_schema(settings)
    jsonschema.validate(valid, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(invalid, schema)
    if settings.rationale:  # the rationale comes before the verdict it justifies
        assert list(schema["properties"]) == ["rationale", "verdict"]


def rows(*triples):
    return [Checkpoint(step=s, reward=r, win_rate=w) for s, r, w in triples]


def test_overoptimisation_flags_reward_up_while_win_rate_falls():
    # win rate peaks at step 20 (0.70, reward 0.50); step 40 has more reward and 0.55 win rate
    history = rows((0, 0.30, None), (10, 0.40, 0.60), (20, 0.50, 0.70), (30, 0.55, 0.68),
                   (40, 0.60, 0.55), (50, 0.45, 0.50))  # fmt: skip
    assert overoptimized_steps(history) == [40]  # 30: within 0.05; 50: reward fell too


def test_overoptimisation_is_not_flagged_while_both_rise():
    history = rows((10, 0.4, 0.55), (20, 0.5, 0.60), (30, 0.6, 0.66))
    assert overoptimized_steps(history) == []


def test_a_backend_without_adapters_refuses_one_by_name(context):
    from harness.backends.base import BackendError
    from harness.types import Adapter, ChatMessage

    backend = ScriptedBackend("policy", scripted_role(["hi"]), context)
    adapter = Adapter(name="trained", path="/nowhere", fingerprint="f")
    request = ChatRequest(messages=(ChatMessage(role="user", content="q"),), adapter=adapter)
    with pytest.raises(BackendError, match="scripted backend cannot apply a LoRA adapter"):
        backend.generate([request])


# --- the soft, position-debiased judge ---------------------------------------------------------


def soft_reply(p_first: float, p_tie: float = 0.0) -> Completion:
    """A judge's answer whose verdict token carries P("1") = p_first, P("2") = the rest (less
    a tie's share); the text is the more likely answer, as a greedy engine would write it."""
    p_second = 1.0 - p_first - p_tie
    top = {"1": math.log(p_first), "2": math.log(p_second)}
    if p_tie:
        top["tie"] = math.log(p_tie)
    verdict = max(top, key=top.__getitem__)
    tokens = (
        TokenLogprob(token='{"verdict": "', logprob=-0.01, top={}),
        TokenLogprob(token=verdict, logprob=top[verdict], top=top),
        TokenLogprob(token='"}', logprob=-0.01, top={}),
    )
    return Completion(
        text=f'{{"verdict": "{verdict}"}}', parsed={"verdict": verdict}, logprobs=tokens
    )


def soft_judge(first_if_good: float, first_if_poor: float):
    """P("1") depends on what is shown first: a judge that sees quality, position or both."""

    def reply(request: ChatRequest) -> Completion:
        text = request.messages[-1].content
        first = text.split("<response_1>")[1].split("</response_1>")[0]
        return soft_reply(first_if_good if "good" in first else first_if_poor)

    return reply


SOFT = JudgeConfig(score="soft", logprobs=4)


def judged_softly(context, script, settings=SOFT):
    role, backend = judge_role(context, script)
    pairs = pair_up(candidates("trained", "good"), candidates("base", "poor"))
    judgements = judge_pairs(role, PROMPTS, pairs, settings, PROMPTS_DIR)
    return judgements, summarise(judgements, settings), backend


def test_soft_asks_for_logprobs_and_hard_does_not(context):
    _, _, soft = judged_softly(context, soft_judge(0.7, 0.4))
    assert {c.sampling.logprobs for c in soft.calls} == {4}
    _, summary, hard = judged_softly(context, soft_judge(0.7, 0.4), JudgeConfig())
    assert {c.sampling.logprobs for c in hard.calls} == {None}
    assert summary.score == "hard" and summary.hard is None


def test_soft_maps_each_order_back_to_a_and_averages():
    # A first: P(A) = P("1"); B first: P(A) = P("2")
    assert soft_p_a(soft_reply(0.8), "a", ties=False) == pytest.approx(0.8)
    assert soft_p_a(soft_reply(0.8), "b", ties=False) == pytest.approx(0.2)
    # with ties, a tie's probability counts half to each side
    assert soft_p_a(soft_reply(0.5, 0.3), "a", ties=True) == pytest.approx(0.65)
    assert soft_p_a(soft_reply(0.5, 0.3), "b", ties=True) == pytest.approx(0.35)


def test_a_judge_that_always_prefers_position_1_is_a_tie_and_flips_every_pair(context):
    judgements, summary, _ = judged_softly(context, soft_judge(0.9, 0.9))
    assert [(j.first_order_p_a, j.second_order_p_a) for j in judgements] == [
        (pytest.approx(0.9), pytest.approx(0.1))
    ] * 4
    assert all(j.mean_p_a == pytest.approx(0.5) for j in judgements)
    assert summary.score == "soft" and summary.ties == 4 and summary.win_rate == 0.5
    assert summary.position_flip_rate == 1.0 and summary.soft_position_flip_rate == 1.0
    assert summary.hard.ties == 4 and summary.hard.win_rate == 0.5


def test_the_soft_score_sees_a_preference_under_a_position_bias(context):
    # always answers "1", but more surely when the good answer is first: 0.8 vs 0.6
    judgements, summary, _ = judged_softly(context, soft_judge(0.8, 0.6))
    assert {(j.first_order, j.second_order) for j in judgements} == {("a", "b")}
    assert all(j.mean_p_a == pytest.approx(0.6) for j in judgements)  # (0.8 + 0.4) / 2
    assert summary.hard.win_rate == 0.5 and summary.position_flip_rate == 1.0
    assert summary.win_rate == 1.0 and summary.wins == 4
    # 0.8 and 0.4 on every pair: a lean of 0.2 toward position 1, and A once it is out
    assert summary.position_bias == pytest.approx(0.2)
    assert summary.soft_position_flip_rate == 0.0


def test_a_debiased_judge_flips_nothing(context):
    judgements, summary, _ = judged_softly(context, soft_judge(0.7, 0.4))
    assert {(j.first_order, j.second_order) for j in judgements} == {("a", "a")}
    assert summary.position_flip_rate == 0.0 and summary.soft_position_flip_rate == 0.0
    assert summary.win_rate == 1.0 and summary.hard.win_rate == 1.0
    record = PairwiseSummary(a="trained", b="base", **summary.as_record()).as_record()
    assert record["score"] == "soft" and record["hard"]["wins"] == 4


def test_a_pair_without_p_a_in_either_order_is_unscored_not_a_loss(context):
    def reply(request: ChatRequest) -> str | Completion:
        text = request.messages[-1].content
        if "question 0" in text:  # a parsed verdict, but no logprobs
            return json.dumps({"verdict": "2"})
        if "question 1" in text and "<response_1>\npoor" in text:  # one order only
            return json.dumps({"verdict": "1"})
        return soft_judge(0.7, 0.4)(request)

    judgements, summary, _ = judged_softly(context, reply)
    assert judgements[0].first_order_p_a is None and judgements[0].mean_p_a is None
    assert judgements[0].first_order == "b"  # the hard verdict is still recorded
    assert judgements[0].unscored_reasons == (NO_P_A, NO_P_A)
    assert judgements[1].mean_p_a == pytest.approx(0.7)  # the order that was read
    assert summary.unscored == 1 and summary.n == 3 and summary.win_rate == 1.0
    assert summary.hard.unscored == 0 and summary.hard.n == 4
    assert summary.soft_position_flip_rate == 0.0  # over the 2 pairs read in both orders


def test_the_soft_p_a_is_read_after_a_rationale(context):
    settings = JudgeConfig(score="soft", rationale=True, rationale_chars=60)

    def reply(request: ChatRequest) -> Completion:
        first = request.messages[-1].content.split("<response_1>")[1]
        p = 0.7 if first.startswith("\ngood") else 0.4
        rationale = '{"rationale": "it says \\"verdict\\": \\"2\\"", '
        top = {"1": math.log(p), "2": math.log(1 - p)}
        verdict = "1" if p > 0.5 else "2"
        tokens = (
            TokenLogprob(token=rationale + '"verdict": "', logprob=-0.1, top={}),
            TokenLogprob(
                token=verdict + '"}', logprob=top[verdict], top={'1"}': top["1"], '2"}': top["2"]}
            ),
        )
        return Completion(text=f'{rationale}"verdict": "{verdict}"}}', logprobs=tokens)

    judgements, summary, _ = judged_softly(context, reply, settings)
    assert judgements[0].first_order_p_a == pytest.approx(0.7)
    assert judgements[0].second_order_p_a == pytest.approx(0.6)
    assert summary.win_rate == 1.0
