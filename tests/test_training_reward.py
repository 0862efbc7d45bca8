"""The rubric reward as TRL calls it, on the scripted verifier."""

import json
import pickle

from harness.config import RoleConfig, VerifyConfig
from harness.prompts import PROMPTS_DIR
from harness.rubric_reward import RubricReward
from harness.types import Criterion, Prompt, Rubric

PROMPTS = {p: Prompt(id=p, prompt=f"question {p}") for p in ("p1", "p2")}
RUBRICS = {
    p: Rubric(prompt_id=p, criteria=(
        Criterion(id="c1", text='The response contains the letter "k".', weight=2),
        Criterion(id="c2", text='The response contains the letter "b".', weight=1)))
    for p in PROMPTS
}  # fmt: skip


def reward_function(context, **fields):
    verifier = RoleConfig(**{"backend": "scripted", "model": "rule", "rule": "keyword", **fields})
    return RubricReward(PROMPTS, RUBRICS, verifier, context, VerifyConfig(reward="paper"),
                        PROMPTS_DIR, context.run_dir / "rewards.jsonl")  # fmt: skip


def completions(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_one_reward_per_completion_from_one_verifier_batch(context):
    context.run_dir.mkdir(parents=True)
    reward = reward_function(context)
    values = reward(prompts=[None] * 4, completions=completions("kb", "k", "b", "none"),
                    prompt_id=["p1", "p1", "p2", "p2"])  # fmt: skip
    assert values == [1.0, 2 / 3, 1 / 3, 0.0]
    assert reward.role().stats.requests == 4  # one batched call: 4 requests, not 4 calls
    [log] = [json.loads(line) for line in (context.run_dir / "rewards.jsonl").open()]
    assert log["group_sizes"] == {"p1": 2, "p2": 2}
    assert log["pass_rates"]["p1/c1"] == 1.0 and log["pass_rates"]["p2/c1"] == 0.0


def test_an_unobtainable_verdict_is_a_none_reward_never_zero(context):
    context.run_dir.mkdir(parents=True)
    reward = reward_function(context, rule=None, replies=[], max_attempts=1)  # never answers
    assert reward(prompts=[None], completions=completions("kb"), prompt_id=["p1"]) == [None]


def test_the_reward_function_pickles_without_its_connection(context):
    context.run_dir.mkdir(parents=True)
    reward = reward_function(context)
    reward.role()
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._role is None
    assert clone(prompts=[None], completions=completions("k"), prompt_id=["p2"]) == [2 / 3]
