"""Refinement-through-Differentiation pinned against hand-worked expectations.

The scripted verifier says "yes" to "mentions WORD" when WORD is in the response; the scripted
proposer adds "mentions WORD" for the first word of response A that response B lacks and the
rubric does not check yet (else "is polite"). Worked by hand for prompt p1 (weights 2, 1):

    a "ALPHA BETA GAMMA" m1 -> 3/3    b "ALPHA BETA DELTA" m1 -> 3/3    c "ALPHA" m2 -> 2/3
    d "BETA" m2 -> 1/3                e "ZETA" m3 -> 0

iteration 1: top2 = (a, b), tied; new criterion "mentions GAMMA" (3) scores a 6/6, b 3/6:
separated. iteration 2: pool {c, d, e} -> (c, d), not tied; "is polite" added. Then one
candidate is left and p1 stops. p3's three identical candidates stay tied; p2 has one
candidate and never enters.
"""

import json
import re

import pytest

from harness.backends.scripted import ScriptedBackend
from harness.config import HarnessConfig
from harness.prompts import PROMPTS_DIR
from harness.refiner import RefineRoles, is_tied, load_checkpoint, refine, select_pair
from harness.roles import Role, build_role
from harness.types import Candidate, ChatRequest, Criterion, Prompt, Rubric

from .conftest import scripted_role


def block(text: str, tag: str) -> str:
    return re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S).group(1)


def verifier_script(request: ChatRequest) -> str:
    text = request.messages[-1].content
    response = block(text, "response").split()
    answers = {}
    for line in block(text, "rubric").splitlines():
        cid, criterion = line.split(": ", 1)
        word = criterion.removeprefix("mentions ")
        answers[cid] = "yes" if word in response else "no"
    return json.dumps(answers)


def proposer_script(request: ChatRequest) -> str:
    text = request.messages[-1].content
    current = re.findall(r"\[weight (\d)\] (.+)", block(text, "current_rubric"))
    criteria = [{"criterion": t, "weight": int(w)} for w, t in current]
    words_a, words_b = block(text, "response_a").split(), block(text, "response_b").split()
    checked = {c["criterion"] for c in criteria}
    new = [w for w in words_a if w not in words_b and f"mentions {w}" not in checked]
    criteria.append({"criterion": f"mentions {new[0]}", "weight": 3} if new
                    else {"criterion": "is polite", "weight": 1})  # fmt: skip
    return json.dumps(criteria)


def cand(cid, prompt_id, text, model="m1"):
    return Candidate(id=cid, prompt_id=prompt_id, text=text, model=model)


PROMPTS = [Prompt(id=p, prompt=f"question {p}") for p in ("p1", "p2", "p3")]
CANDIDATES = [
    cand("a", "p1", "ALPHA BETA GAMMA"), cand("b", "p1", "ALPHA BETA DELTA"),
    cand("c", "p1", "ALPHA", "m2"), cand("d", "p1", "BETA", "m2"), cand("e", "p1", "ZETA", "m3"),
    cand("only", "p2", "ALPHA"),
    cand("f", "p3", "ALPHA"), cand("g", "p3", "ALPHA"), cand("h", "p3", "ALPHA"),
]  # fmt: skip
INITIAL = [
    Rubric(prompt_id=p, criteria=(Criterion(id="c1", text="mentions ALPHA", weight=2),
                                  Criterion(id="c2", text="mentions BETA", weight=1)))
    for p in ("p1", "p2", "p3")
]  # fmt: skip


def make_roles(context):
    verifier = ScriptedBackend("verifier", scripted_role(), context, script=verifier_script)
    proposer = ScriptedBackend("proposer", scripted_role(), context, script=proposer_script)
    roles = RefineRoles(Role("proposer", proposer.config, proposer),
                        Role("verifier", verifier.config, verifier))  # fmt: skip
    return roles, proposer, verifier


def settings(pair="top2", iterations=3):
    return HarnessConfig.model_validate(
        {"refine": {"iterations": iterations, "pair": pair},
         "propose": {"min_criteria": 1, "max_criteria": 10}}
    )  # fmt: skip


def run_refine(context, pair="top2", iterations=3):
    roles, proposer, verifier = make_roles(context)
    state = refine(roles, PROMPTS, CANDIDATES, INITIAL, settings(pair, iterations), PROMPTS_DIR,
                   context.run_dir / "refine")  # fmt: skip
    return state, proposer, verifier


def test_top2_is_a_stable_sort_and_unscored_goes_last():
    pool = [cand("x", "p", "t"), cand("y", "p", "t"), cand("z", "p", "t"), cand("w", "p", "t")]
    scores = {"x": 0.5, "y": None, "z": 0.9, "w": 0.5}
    assert [c.id for c in select_pair(pool, scores)] == ["z", "x"]
    assert is_tied((pool[0], pool[3]), scores)
    assert select_pair(pool[:1], scores) is None


def test_diverse_takes_the_best_of_another_model_and_falls_back_to_top2():
    pool = [cand("a", "p", "t", "m1"), cand("b", "p", "t", "m1"), cand("c", "p", "t", "m2")]
    scores = {"a": 1.0, "b": 0.9, "c": 0.2}
    assert [c.id for c in select_pair(pool, scores, "diverse")] == ["a", "c"]
    same_model = [cand("a", "p", "t"), cand("b", "p", "t")]
    assert [c.id for c in select_pair(same_model, scores, "diverse")] == ["a", "b"]


def test_refinement_matches_the_hand_worked_run(context):
    state, _, _ = run_refine(context)
    assert state.iteration == 2  # p1 stops with one candidate left; p3 after the first round
    [first, second] = state.stats
    assert (first.num_prompts, first.tied_before, first.separated_after) == (2, 2, 1)
    assert (second.num_prompts, second.tied_before, second.separated_after) == (1, 0, 0)
    assert first.num_criteria_mean == 3.0 and second.num_criteria_mean == 4.0
    assert state.used == {"a", "b", "c", "d", "f", "g"}
    p1 = [r for r in state.new_rubrics if r.prompt_id == "p1"]
    assert [(r.version, r.parent_version, r.refined_from) for r in p1] == [
        (1, 0, ("a", "b")), (2, 1, ("c", "d"))
    ]  # fmt: skip
    assert p1[0].changes.added == ("mentions gamma",) and p1[0].changes.removed == ()
    assert [c.id for c in p1[1].criteria] == ["c1", "c2", "c3", "c4"]
    assert all(r.prompt_id != "p2" for r in state.new_rubrics)


def test_used_pairs_are_excluded_from_later_rounds(context):
    _, _, verifier = run_refine(context)
    # iteration 1 verifies p1's and p3's pools (5 + 3), then the tied pairs under the new
    # rubrics (a, b and f, g); iteration 2 sees p1's remaining three, never a or b again.
    ids = [r.id for r in verifier.calls]
    assert ids[:8] == ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert ids[8:12] == ["a", "b", "f", "g"]
    assert ids[12:] == ["c", "d", "e"]


def test_diverse_strategy_pairs_across_models(context):
    state, _, _ = run_refine(context, pair="diverse", iterations=1)
    p1 = next(r for r in state.new_rubrics if r.prompt_id == "p1")
    assert p1.refined_from == ("a", "c")


def test_checkpoint_resumes_after_the_last_finished_iteration(context):
    run_refine(context, iterations=1)
    state = load_checkpoint(context.run_dir / "refine", INITIAL)
    assert state.iteration == 1 and state.used == {"a", "b", "f", "g"}
    resumed, proposer, _ = run_refine(context, iterations=3)
    assert len(proposer.calls) == 1  # only iteration 2 (p1) was asked of the proposer
    fresh, _, _ = run_refine(context.__class__(run_dir=context.run_dir / "fresh"))
    assert resumed.new_rubrics == fresh.new_rubrics and resumed.stats == fresh.stats


def test_a_failed_refinement_keeps_the_rubric_and_is_recorded(context):
    _, _, verifier = make_roles(context)
    silent = build_role("proposer", scripted_role(max_attempts=1), context)  # no replies at all
    roles = RefineRoles(silent, Role("verifier", verifier.config, verifier))
    state = refine(roles, PROMPTS, CANDIDATES, INITIAL, settings(iterations=1), PROMPTS_DIR,
                   context.run_dir / "refine")  # fmt: skip
    assert state.new_rubrics == []
    assert {s.prompt_id for s in state.skips} == {"p1", "p3"}
    assert state.current["p1"] == INITIAL[0]
    assert state.stats[0].num_failed == 2


@pytest.mark.parametrize("mode", ["all", "each"])
def test_verifier_failures_become_unscored_never_no(context, mode):
    from harness.config import VerifyConfig
    from harness.verifier import Job, verify

    backend = ScriptedBackend("verifier", scripted_role(max_attempts=2), context,
                              script=lambda r: None)  # fmt: skip
    role = Role("verifier", backend.config, backend)
    jobs = [Job(PROMPTS[0], CANDIDATES[0], INITIAL[0])]
    verdicts = verify(role, jobs, VerifyConfig(mode=mode, logprobs=0), PROMPTS_DIR)
    assert [v.met for v in verdicts] == [None, None]
    assert all(v.unscored_reason for v in verdicts)
    assert len(backend.calls) == 2 * (1 if mode == "all" else 2)


def test_a_criterion_repeated_word_for_word_is_kept_once():
    from harness.proposer import criteria_from

    parsed = [{"criterion": "Says A.", "weight": 1}, {"criterion": " says  a. ", "weight": 3},
              {"criterion": "Says B.", "weight": 2}]  # fmt: skip
    criteria = criteria_from(parsed)
    assert [(c.id, c.text, c.weight) for c in criteria] == [
        ("c1", "Says A.", 1),
        ("c2", "Says B.", 2),
    ]
