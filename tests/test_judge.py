"""The pairwise judge's orchestration: both orders asked, answers mapped back to the sides,
unscored answers kept as unscored, and the schema the judge must answer under."""

import json

import jsonschema
import pytest

from harness.backends.scripted import ScriptedBackend
from harness.config import JudgeConfig
from harness.judge import answer_schema, judge_pairs, pair_up, summarise
from harness.overoptimization import overoptimized_steps
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.summary_schema import Checkpoint
from harness.types import Candidate, ChatRequest, Prompt

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
