"""Clinicians' labels: both layouts read, meta-evaluation criterion texts matched to a run's
criterion ids, the majority label as the reference of `compare-verifiers` (numbers checked by
hand), the clinician-to-clinician ceiling, unmatched labels counted, and bad files refused with
one line naming file, line and field."""

import json
from pathlib import Path

import pytest

from harness.backends.scripted import RULES, keyword_verdicts
from harness.jsonl import InputError
from harness.labels import (
    ClinicianLabel,
    LabelLine,
    MetaEvalLine,
    load_labels,
    majority,
    match_labels,
    read_label_lines,
    write_labels,
)
from harness.report import build_sections
from harness.report.tables import clinicians_table, verifier_agreement_table
from harness.summary_schema import Summary

from .test_compare import fruit_jobs, keyword_verifier, probe_config, rows_by_label, run_compare


def write_lines(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def own(candidate: str, criterion: str, labels, **more) -> dict:
    key = "labels" if isinstance(labels, list) else "label"
    return {"candidate_id": candidate, "criterion_id": criterion, key: labels, **more}


def meta(completion: str, rubric: str, labels: list, ids: list | None = None) -> dict:
    return {
        "prompt_id": completion.split(":")[0],
        "prompt": [{"role": "user", "content": "A recipe?"}],
        "completion_id": completion,
        "completion": "apple pie",
        "rubric": rubric,
        "category": "cluster_demo",
        "binary_labels": labels,
        "anonymized_physician_ids": [f"d{i}" for i in range(len(labels))] if ids is None else ids,
    }


# The fruit jobs (tests/test_compare.py): per prompt, response m:0 holds both of its rubric's
# words and m:1 only the first, so the keyword verifier says c1 yes, c2 yes for m:0 and c1 yes,
# c2 no for m:1. Against these labels (majority after the arrow; verifier's verdict last):
#    1 p1:m:0 c1  T T T -> T   yes  true yes
#    2 p1:m:0 c2  T T F -> T   yes  true yes
#    3 p1:m:1 c1  F F T -> F   yes  false yes
#    4 p1:m:1 c2  F F   -> F   no   true no
#    5 p2:m:0 c1  T     -> T   yes  true yes
#    6 p2:m:0 c2  T F   -> even split: no majority, left out
#    7 p2:m:1 c1  T T T -> T   yes  true yes
#    8 p2:m:1 c2  T     -> T   no   false no
#    9 p3:m:0 c1  "yes" -> T   yes  true yes
#   10 p3:m:1 c2  F F F -> F   no   true no
#   11 a candidate and 12 a criterion the run does not have: counted, left out
LABELS = [
    own("p1:m:0", "c1", [True, True, True], raters=["a", "b", "c"], prompt_id="p1"),
    own("p1:m:0", "c2", [True, True, False], raters=["a", "b", "c"]),
    own("p1:m:1", "c1", ["no", "no", "yes"], raters=["a", "b", "c"]),
    own("p1:m:1", "c2", [False, False]),
    own("p2:m:0", "c1", True, rater="a"),
    own("p2:m:0", "c2", [True, False]),
    own("p2:m:1", "c1", [True, True, True]),
    own("p2:m:1", "c2", [True]),
    own("p3:m:0", "c1", "yes"),
    own("p3:m:1", "c2", [False, False, False]),
    own("p9:m:0", "c1", True),
    own("p3:m:0", "c9", True),
]


def test_the_harness_layout_keeps_every_clinician_and_rater(tmp_path: Path):
    labels = load_labels(write_lines(tmp_path / "labels.jsonl", LABELS))
    assert not labels.by_text and len(labels.items) == 12
    first, third, fifth = labels.items[0], labels.items[2], labels.items[4]
    assert first.prompt_id == "p1" and [x.rater for x in first.labels] == ["a", "b", "c"]
    assert [x.met for x in third.labels] == [False, False, True]  # "no"/"yes" read as booleans
    assert fifth.labels == (ClinicianLabel(True, "a"),)
    assert labels.items[3].labels == (ClinicianLabel(False), ClinicianLabel(False))


def test_the_meta_evaluation_layout_matches_criterion_text_to_ids(tmp_path: Path):
    path = write_lines(tmp_path / "meta.jsonl", [
        # runs of whitespace are one space: c1 of p1's rubric
        meta("p1:m:0", '  Response contains   the word\n"apple"', [True, False, True]),
        meta("p1:m:0", 'Response contains the word "pie"', [False], ["d7"]),  # c2
        meta("p1:m:1", 'response contains the word "apple"', [True]),  # case counts: no match
        meta("p2:m:0", 'Response contains the word "apple"', [True]),  # p1's text, not p2's
    ])  # fmt: skip
    [(number, line), *_] = read_label_lines(path)
    assert number == 1 and isinstance(line, MetaEvalLine) and line.category == "cluster_demo"
    labels = load_labels(path)
    assert labels.by_text
    matched = match_labels(labels, fruit_jobs())
    assert (matched.num_labelled, matched.num_unmatched) == (4, 2)
    assert [(i.candidate_id, i.criterion, i.prompt_id) for i in matched.items] == [
        ("p1:m:0", "c1", "p1"),
        ("p1:m:0", "c2", "p1"),
    ]
    doctors = [ClinicianLabel(True, "d0"), ClinicianLabel(False, "d1"), ClinicianLabel(True, "d2")]
    assert list(matched.items[0].labels) == doctors
    # what `harness import` writes once the ids are known: the harness's layout, read back
    out = tmp_path / "imported.jsonl"
    assert write_labels(out, matched.items) == 2
    [(_, written), _] = read_label_lines(out)
    # with the criterion's text, so that a refinement's renumbering cannot mislabel an item
    assert written == LabelLine(candidate_id="p1:m:0", criterion_id="c1", prompt_id="p1",
                                criterion='Response contains the word "apple"',
                                labels=[True, False, True], raters=["d0", "d1", "d2"])  # fmt: skip
    again = match_labels(load_labels(out), fruit_jobs())
    assert again.items == matched.items and again.num_unmatched == 0


@pytest.mark.parametrize(
    ("votes", "expected"),
    [([True], True), ([False, False, True], False), ([True, False], None), ([True, True], True),
     ([True, False, True, False], None)],
)  # fmt: skip
def test_the_majority_label_and_an_even_split(votes, expected):
    assert majority([ClinicianLabel(v) for v in votes]) is expected


def test_verifiers_are_measured_against_the_majority_with_the_clinician_ceiling(
    context, tmp_path: Path
):
    labels = write_lines(tmp_path / "labels.jsonl", LABELS)
    config = probe_config(keyword_verifier(), off_topic_per_prompt=0)
    summary = run_compare(context, config, tmp_path / "compare", labels)
    assert summary.reference.kind == "labels" and summary.reference.label == str(labels)
    row = rows_by_label(summary)["keyword"]
    assert not row.reference
    # items 1-5 and 7-10 (9; item 6 has no majority): true yes 5 (1, 2, 5, 7, 9), false yes 1
    # (3), true no 2 (4, 10), false no 1 (8)
    assert row.num_compared == 9
    assert row.accuracy == pytest.approx(7 / 9)
    # recall yes 5/6, recall no 2/3: balanced (5/6 + 4/6) / 2 = 3/4
    assert row.balanced_accuracy == pytest.approx(3 / 4)
    # predicted yes 6/9, majority yes 6/9: chance (2/3)^2 + (1/3)^2 = 5/9;
    # kappa (7/9 - 5/9) / (1 - 5/9) = 1/2
    assert row.kappa == pytest.approx(1 / 2)
    # F1 yes 2*5 / (2*5 + 1 + 1) = 5/6; F1 no 2*2 / (2*2 + 1 + 1) = 2/3; macro (5/6 + 4/6)/2
    assert (row.f1_yes, row.f1_no) == (pytest.approx(5 / 6), pytest.approx(2 / 3))
    assert row.macro_f1 == pytest.approx(3 / 4)
    # against each clinician on the 7 items two or more labelled (1, 2, 3, 4, 6, 7, 10):
    # (verdict, label) true yes 3+2+1+1+3 = 10, false yes 1+2+1 = 4, true no 2+3 = 5, false
    # no 0; F1 yes 20/24 = 5/6, F1 no 10/14 = 5/7, macro (35/42 + 30/42) / 2 = 65/84
    assert row.clinician_macro_f1 == pytest.approx(65 / 84)
    c = summary.clinicians
    assert (c.num_labelled, c.num_matched, c.num_unmatched) == (12, 10, 2)
    assert c.num_no_majority == 1
    # ordered pairs: 6 on each three-clinician item (1, 2, 3, 7, 10), 2 on each two (4, 6)
    assert (c.num_multi_rated, c.num_rater_pairs) == (7, 5 * 6 + 2 * 2)
    # agreeing pairs: item 1 6, 2 2, 3 2, 4 2, 6 0, 7 6, 10 6 = 24 of 34
    assert c.rater_agreement == pytest.approx(24 / 34)
    # yes-yes 6+2+6 = 14, no-no 2+2+6 = 10, 5 disagreeing pairs each way (2 + 2 + 1):
    # F1 yes 28 / (28 + 10) = 14/19, F1 no 20 / (20 + 10) = 2/3, macro (42/57 + 38/57) / 2
    assert c.rater_macro_f1 == pytest.approx(40 / 57)
    saved = json.loads((tmp_path / "compare" / "metrics.json").read_text())
    assert saved == summary.as_record() and saved["clinicians"]["num_unmatched"] == 2


def test_unscored_verdicts_are_left_out_and_counted_never_read_as_no(
    context, tmp_path: Path, monkeypatch
):
    def script(request):  # no answer for p3's responses
        return None if request.id.startswith("p3:") else keyword_verdicts(request)

    monkeypatch.setitem(RULES, "keyword", script)
    flaky = keyword_verifier("flaky").model_copy(update={"max_attempts": 1})
    labels = write_lines(tmp_path / "labels.jsonl", LABELS)
    summary = run_compare(context, probe_config(flaky, off_topic_per_prompt=0),
                          tmp_path / "compare", labels)  # fmt: skip
    row = summary.verifiers[0]
    assert row.num_unscored == 4  # p3's two responses, two criteria each
    # items 9 and 10 (p3's) leave: true yes 4 (1, 2, 5, 7), false yes 1, true no 1, false no 1
    assert row.num_compared == 7 and row.accuracy == pytest.approx(5 / 7)
    # read as "no", item 9 would have been a false no and item 10 a true no: 6/9, not 5/7.
    # F1 yes 8 / (8 + 1 + 1) = 0.8, F1 no 2 / (2 + 1 + 1) = 0.5
    assert row.macro_f1 == pytest.approx(0.65)
    # against each clinician, item 10 left out: true yes 10, false yes 4, true no 2:
    # F1 yes 20/24 = 5/6, F1 no 4/8 = 1/2, macro 2/3
    assert row.clinician_macro_f1 == pytest.approx(2 / 3)


def test_labels_of_another_run_fail_with_one_line_and_an_example(tmp_path: Path):
    path = write_lines(tmp_path / "labels.jsonl", [own("q1:x:0", "c1", True),
                                                   own("q1:x:1", "c1", False)])  # fmt: skip
    with pytest.raises(InputError) as caught:
        match_labels(load_labels(path), fruit_jobs())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: none of its 2 labelled items is in this run")
    assert "candidate_id 'q1:x:0' with criterion_id 'c1'" in message


def test_the_report_shows_macro_f1_and_the_clinician_ceiling(context, tmp_path: Path):
    labels = write_lines(tmp_path / "labels.jsonl", LABELS)
    metrics = run_compare(context, probe_config(keyword_verifier(), off_topic_per_prompt=0),
                          tmp_path / "compare", labels)  # fmt: skip
    summary = Summary(verifiers=metrics.verifiers, reference=metrics.reference,
                      clinicians=metrics.clinicians)  # fmt: skip
    agreement = verifier_agreement_table(summary)
    row = dict(zip(agreement.headers, agreement.rows[0]))
    assert row["macro F1"] == "0.750" and row["macro F1 vs each clinician"] == "0.774"  # 65/84
    ceiling = dict(clinicians_table(summary).rows)
    assert ceiling["not in this run (left out)"] == "2"
    assert ceiling["clinician vs clinician: macro F1 (the ceiling)"] == "0.702"  # 40/57
    [section] = [s for s in build_sections(summary) if s.title == "Verifier comparison"]
    assert any("clinicians' majority label" in b for b in section.blocks if isinstance(b, str))
    without = Summary(verifiers=metrics.verifiers, reference=metrics.reference)
    assert "macro F1 vs each clinician" not in verifier_agreement_table(without).headers
    assert clinicians_table(without) is None


M = meta("p1:m:0", "Response is short", [True, False, True])
BAD_FILES = [
    ([own("a", "c1", True), own("a", "c2", "maybe")], ":2: label: must be true/false or yes/no"),
    ([own("a", "c1", [True, "perhaps"])], ":1: labels.1: must be true/false or yes/no"),
    ([own("a", "c1", True), own("a", "c1", False)],
     ":2: criterion_id: candidate 'a' and this criterion are labelled on line 1 too"),
    ([{"candidate_id": "a", "criterion_id": "c1"}], ":1: label: missing"),
    ([{**own("a", "c1", True), "labels": [True]}], ":1: labels: give `label` or `labels`, not"),
    ([own("a", "c1", [True, False], raters=["x"])], ":1: raters: 1 ids for 2 labels"),
    ([own("a", "c1", [True, False], raters=["x", "x"])], ":1: raters: 'x' twice"),
    ([own("a", "c1", [True], rater="x")], ":1: rater: goes with `label`"),
    ([M, {**M, "binary_labels": [True, "yes"]}], ":2: binary_labels: expected a list of booleans"),
    ([{**M, "binary_labels": "yes"}], ":1: binary_labels: expected a list of booleans"),
    ([{**M, "anonymized_physician_ids": ["d1", "d2"]}],
     ":1: anonymized_physician_ids: 2 ids for 3 labels"),
    ([M, {**M, "rubric": "Response  is short"}],
     ":2: rubric: candidate 'p1:m:0' and this criterion are labelled on line 1 too"),
    ([M, {"binary_labels": [True]}], ":2: prompt_id: Field required (and 5 more on this line)"),
    ([{"item": "a", "yes": True}],
     ":1: (record): neither layout of labels (keys found: item, yes); the harness's needs "
     "candidate_id, criterion_id and label (or labels), HealthBench's meta-evaluation needs "
     "prompt_id, prompt, completion_id"),
    (["{not json"], ":1: not valid JSON"),
    (["[1, 2]"], ":1: expected a JSON object, got list"),
    ([], ": no labels: the file is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "expected"), BAD_FILES)
def test_a_bad_labels_file_fails_with_one_line_naming_file_line_and_field(
    tmp_path: Path, lines, expected
):
    path = write_lines(tmp_path / "labels.jsonl", lines)
    with pytest.raises(InputError) as caught:
        load_labels(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}{expected}")


def test_a_label_that_names_its_criterion_text_follows_a_renumbering(tmp_path):
    # written when "pie" was c1 of p1's rubric; the run's rubric now has it as c2
    path = write_lines(tmp_path / "l.jsonl", [
        {**own("p1:m:0", "c1", True), "criterion": 'Response contains the word "pie"'},
        {**own("p1:m:1", "c1", False), "criterion": "A criterion no rubric has any more"},
    ])  # fmt: skip
    matched = match_labels(load_labels(path), fruit_jobs())
    assert [(i.candidate_id, i.criterion) for i in matched.items] == [("p1:m:0", "c2")]
    assert matched.num_unmatched == 1
