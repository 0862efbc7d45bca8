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


def test_with_two_processes_the_main_one_logs_one_line_over_both(context, monkeypatch):
    from harness import rubric_reward

    context.run_dir.mkdir(parents=True)
    other = {"prompt_ids": ["p2", "p2"], "rewards": [None, 1.0], "seconds": 3.0,
             "unscored_verdicts": 2, "passed": {"p2/c1": [True], "p2/c2": [True]}}  # fmt: skip
    monkeypatch.setattr(rubric_reward, "gathered", lambda share: [share, other])
    for rank in (1, 0):  # the other process writes nothing
        monkeypatch.setattr(rubric_reward, "process_rank", lambda rank=rank: rank)
        values = reward_function(context)(prompts=[None] * 2, completions=completions("kb", "x"),
                                          prompt_id=["p1", "p1"])  # fmt: skip
        assert values == [1.0, 0.0]  # each process returns its own rewards
    [log] = [json.loads(line) for line in (context.run_dir / "rewards.jsonl").open()]
    assert (log["num_completions"], log["num_unscored"], log["processes"]) == (4, 1, 2)
    assert log["reward_mean"] == 2 / 3 and log["group_sizes"] == {"p1": 2, "p2": 2}
    assert log["unscored_verdicts"] == 2 and log["verifier_seconds"] == 3.0  # the slowest
    assert log["pass_rates"]["p1/c1"] == 0.5 and log["pass_rates"]["p2/c1"] == 1.0


def test_in_one_process_the_line_is_as_it_always_was(context):
    context.run_dir.mkdir(parents=True)
    reward_function(context)(prompts=[None], completions=completions("k"), prompt_id=["p2"])
    [log] = [json.loads(line) for line in (context.run_dir / "rewards.jsonl").open()]
    assert list(log) == [
        "step",
        "reward_mean",
        "reward_std",
        "num_completions",
        "num_unscored",
        "unscored_verdicts",
        "pass_rates",
        "group_sizes",
        "verifier_seconds",
    ]
