"""`harness judge --a --b` on two candidate files, through the CLI, with a scripted judge."""

import json
from pathlib import Path

from click.testing import CliRunner

from harness.cli import main


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_candidate_files_are_judged_in_both_orders(tmp_path: Path):
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"id": "p1", "prompt": "first question"}, {"id": "p2", "prompt": "second question"}],
    )
    side_a = write_jsonl(
        tmp_path / "ours.jsonl",
        [
            {"id": f"{p}:a", "prompt_id": p, "text": f"careful answer {p}", "model": "ours"}
            for p in ("p1", "p2")
        ],
    )
    side_b = write_jsonl(
        tmp_path / "theirs.jsonl",
        [
            {"id": f"{p}:b", "prompt_id": p, "text": f"hasty answer {p}", "model": "theirs"}
            for p in ("p1", "p2", "p3")
        ],
    )
    profile = tmp_path / "profile.yaml"
    # the judge picks Response 1, then Response 2, alternately: with A first then B first,
    # that is A both times, so A wins every pair
    profile.write_text(f"""
runs_dir: {tmp_path / "runs"}
run_name: judged
data: {{prompts: {prompts}}}
roles:
  judge: {{backend: scripted, model: judge, replies: ['{{"verdict": "1"}}', '{{"verdict": "2"}}']}}
""")
    result = CliRunner().invoke(
        main, ["judge", "-c", str(profile), "--a", str(side_a), "--b", str(side_b)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs/judged/judge/ours-vs-theirs/summary.json").read_text())
    assert summary["n"] == 2 and summary["wins"] == 2 and summary["win_rate"] == 1.0
    assert summary["position_flip_rate"] == 0.0
    lines = (tmp_path / "runs/judged/judge/ours-vs-theirs/judgements.jsonl").read_text()
    assert len(lines.splitlines()) == 2  # p3 has no partner on side A


def test_a_soft_judge_without_logprobs_leaves_pairs_unscored_not_lost(tmp_path: Path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p1", "prompt": "a question"}])
    sides = [
        write_jsonl(tmp_path / f"{name}.jsonl",
                    [{"id": f"p1:{name}", "prompt_id": "p1", "text": name, "model": name}])
        for name in ("ours", "theirs")
    ]  # fmt: skip
    profile = tmp_path / "profile.yaml"
    # scripted replies carry no logprobs: the hard verdicts count, the soft score cannot
    profile.write_text(f"""
runs_dir: {tmp_path / "runs"}
run_name: judged
data: {{prompts: {prompts}}}
judge: {{score: soft}}
roles:
  judge: {{backend: scripted, model: judge, replies: ['{{"verdict": "1"}}', '{{"verdict": "2"}}']}}
""")
    result = CliRunner().invoke(
        main, ["judge", "-c", str(profile), "--a", str(sides[0]), "--b", str(sides[1])]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs/judged/judge/ours-vs-theirs"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["score"] == "soft" and summary["n"] == 0 and summary["unscored"] == 1
    assert summary["win_rate"] is None and summary["soft_position_flip_rate"] is None
    assert summary["hard"]["wins"] == 1 and summary["position_flip_rate"] == 0.0
    [judgement] = [json.loads(line) for line in (folder / "judgements.jsonl").open()]
    assert judgement["first_order"] == "a" and judgement["first_order_p_a"] is None
    assert "no logprobs at the verdict token" in judgement["unscored_reasons"][0]
    assert "position flip rate, soft P(A)" in result.output


def test_only_one_side_is_a_usage_error(tmp_path: Path):
    side = write_jsonl(tmp_path / "a.jsonl", [])
    result = CliRunner().invoke(main, ["judge", "--set", f"runs_dir={tmp_path}", "--a", str(side)])
    assert result.exit_code == 2 and "give both --a and --b" in result.output
