"""The partial-sums task (dno_data/tasks/partial_sums.py): its judge, its prompts, and `just compare-partial-sums`."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from conftest import ROOT
from dno_data.judges import Candidate, Group, make_judge
from dno_data.tasks import partial_sums
from dno_data.tasks.partial_sums import make_prompts, score, true_sum


def test_score_is_partial_credit_per_right_aligned_digit():
    # 347 + 589 = 936: 1 + 5 * hits / max(len)
    assert score("936", "347+589") == 6.0
    assert score(" 936 ", "347+589") == 6.0
    assert score("836", "347+589") == pytest.approx(1 + 5 * 2 / 3)  # hundreds wrong
    assert score("930", "347+589") == pytest.approx(1 + 5 * 2 / 3)  # units wrong
    assert score("36", "347+589") == pytest.approx(1 + 5 * 2 / 3)  # too short: two of three
    assert score("1936", "347+589") == pytest.approx(1 + 5 * 3 / 4)  # too long: three of four
    assert score("111", "347+589") == 1.0
    assert score("", "347+589") == score("9 6", "347+589") == score("-936", "347+589") == 1.0
    # four-digit sums: 753 + 998 = 1751
    assert score("1751", "753+998") == 6.0
    assert score("1742", "753+998") == pytest.approx(1 + 5 * 2 / 4)
    assert score("1761", "753+998") == pytest.approx(1 + 5 * 3 / 4)


def test_the_judge_works_the_sum_out_of_the_prompt():
    judge = make_judge("oracle:partial-sums")
    g = Group("p", [{"role": "user", "content": "753+998"}], None,
              [Candidate("a", "1751", "policy"), Candidate("b", "1761", "policy"), Candidate("c", "abc", "policy")])
    rows = judge.judge(g)
    assert [(r["score"], r["correct"], r["status"]) for r in rows] == [(6.0, True, "ok"), (4.75, False, "ok"),
                                                                        (1.0, False, "ok")]
    wrong_reference = Group("p", g.messages, "1000", g.candidates)  # a reference is not the judge's evidence
    assert [r["score"] for r in judge.judge(wrong_reference)] == [6.0, 4.75, 1.0]
    assert true_sum("999+999") == "1998"
    with pytest.raises(ValueError, match="not a problem"):
        true_sum("what is 2+2")


def test_prompts_are_deterministic_distinct_and_carry_no_answer():
    a, b = make_prompts(300, seed=4), make_prompts(300, seed=4)
    assert a == b
    assert a != make_prompts(300, seed=5)
    assert all(set(p) == {"prompt"} and re.fullmatch(r"[1-9]\d\d\+[1-9]\d\d", p["prompt"]) for p in a)
    assert len({p["prompt"] for p in a}) == 300
    held = make_prompts(100, seed=4, split="heldout")

    def canon(ps):
        return {tuple(sorted(map(int, p["prompt"].split("+")))) for p in ps}
    assert not canon(held) & canon(make_prompts(3000, seed=4))  # no held-out problem, in either order, in training


def test_source_file_is_the_same_bytes_on_every_run(tmp_path):
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    partial_sums.main(["prompts", "--train", "12", "--eval", "5", "--seed", "2", "-o", str(out1)])
    partial_sums.main(["prompts", "--train", "12", "--eval", "5", "--seed", "2", "-o", str(out2)])
    assert out1.read_bytes() == out2.read_bytes()
    rows = [json.loads(line) for line in out1.read_text().splitlines()]
    assert [r["split"] for r in rows] == ["train"] * 12 + ["eval"] * 5
    assert all("reference" not in r for r in rows)


def _recipe(name: str) -> tuple[dict, list[str]]:
    """A justfile recipe's parameter defaults and its commands (continuation lines joined)."""
    text = (ROOT / "justfile").read_text()
    head, body = text.split(f"\n{name} ", 1)[1].split(":\n", 1)
    params = dict(re.findall(r'(\w+)="([^"]*)"', head))
    body = body.split("\n\n", 1)[0]
    commands = body.replace("\\\n", " ").splitlines()
    return params, [c.strip() for c in commands if c.strip() and not c.strip().startswith("#")]


def _fill(command: str, params: dict) -> str:
    command = re.sub(r"\{\{(\w+)\}\}", lambda m: params[m.group(1)], command)
    return re.sub(r"\$\(\((\d+) \* (\d+)\)\)", lambda m: str(int(m.group(1)) * int(m.group(2))), command)


def test_the_compare_recipe_prepares_the_run_and_its_commands_parse(tmp_path):
    """`just compare-partial-sums`: the prompts it writes import, and its `dno compare` passes --dry-run (every
    stage config of every method is built and checked) with no teacher and the task's judge."""
    from typer.testing import CliRunner

    from stages.cli import app

    params, commands = _recipe("compare-partial-sums")
    params = {**params, "run": str(tmp_path / "run"), "prompts": "6"}
    filled = [_fill(c, params) for c in commands]
    source = next(c for c in filled if c.startswith("python -m dno_data.tasks.partial_sums prompts"))
    partial_sums.main(shlex.split(source)[3:])
    runner = CliRunner()
    imported = next(c for c in filled if c.startswith("dno prompts"))
    res = runner.invoke(app, shlex.split(imported)[1:])
    assert res.exit_code == 0, res.output
    compare = next(c for c in filled if c.startswith("dno compare"))
    argv = shlex.split(compare)[1:]
    assert argv[argv.index("--judge") + 1] == "oracle:partial-sums" and argv[argv.index("--teacher") + 1] == "none"
    res = runner.invoke(app, argv + ["--dry-run"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("dno ")]
    assert all("--teacher" not in x or "--teacher none" in x for x in lines if x.startswith("dno sample"))
    seeds = params["seeds"].split(",")
    for seed in seeds:  # every arm of every seed: dno's training, sft on its chosen side, rft with the acceptance
        mine = [x for x in lines if f"/seed-{seed}/" in x]
        assert any(x.startswith("dno train") and "/dno/iter-01/" in x for x in mine)
        assert any(x.startswith("dno sft") and "--source chosen" in x for x in mine)
        assert any(x.startswith("dno sft") and "--source best" in x and "--min-score 4.5" in x for x in mine)
    assert len(seeds) >= 3
