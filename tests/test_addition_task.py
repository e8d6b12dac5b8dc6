"""The demo task's held-out split: no eval problem has its reversed twin among the training problems."""

from __future__ import annotations

import pytest

from dno_data.tasks import addition


def _canon(problems: list[dict]) -> set[tuple[int, int]]:
    """Each problem with its operands sorted: "85+47" and "47+85" are one problem."""
    return {tuple(sorted(map(int, p["prompt"].split("+")))) for p in problems}


def test_a_problem_and_its_twin_share_a_split():
    lo, hi = 10, 99
    assert addition.canonical(85, 47) == addition.canonical(47, 85) == "47+85"
    assert all(addition.is_heldout(a, b) == addition.is_heldout(b, a) for a in range(lo, hi + 1) for b in range(a, hi + 1))
    held = sum(addition.is_heldout(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1))
    assert 0.07 < held / (hi - lo + 1) ** 2 < 0.13  # still about a tenth of the problems


@pytest.mark.parametrize("digits,n_train,n_eval", [(1, 40, 4), (2, 5700, 500), (3, 20000, 2000)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_eval_prompt_has_a_twin_in_training(seed, digits, n_train, n_eval):
    """What `dno demo` draws: the DNO partitions (seed), the initial policy's SFT data (10_000 + seed)
    and the held-out prompts; no held-out problem, in either operand order, is among the first two."""
    train = addition.make_problems(n_train, seed=seed, digits=digits)
    sft = addition.make_problems(n_train, seed=10_000 + seed, digits=digits)
    held_out = addition.make_problems(n_eval, seed=seed, digits=digits, split="heldout")
    assert len(_canon(held_out)) > 0
    assert not _canon(held_out) & (_canon(train) | _canon(sft))


def test_too_many_problems_for_a_split_is_an_error():
    held = sum(addition.is_heldout(a, b) for a in range(1, 10) for b in range(1, 10))
    with pytest.raises(ValueError, match="1-digit heldout split"):
        addition.make_problems(held, seed=0, digits=1, split="heldout")


def test_careless_teacher_is_wrong_only_by_a_forgotten_carry():
    """python:dno_data.tasks.addition:careless_teacher: right on ~4 in 5 problems, and its wrong
    answers are the true sum minus the units carry (a plausible mistake, not noise)."""
    from dno_data.tasks.addition import careless_teacher, make_problems

    problems = make_problems(2000, seed=0, digits=2)
    wrong = 0
    for p in problems:
        answer = int(careless_teacher([{"role": "user", "content": p["prompt"]}]))
        a, b = (int(x) for x in p["prompt"].split("+"))
        if answer != a + b:
            wrong += 1
            assert answer == a + b - 10 and (a % 10) + (b % 10) >= 10
    assert 0.15 < wrong / len(problems) < 0.30


def test_demo_teacher_option_reaches_sample_and_eval(tmp_path):
    """dno demo --teacher python:...:careless_teacher: the loop samples that teacher and eval plays against it."""
    from pathlib import Path

    from dno_data.loop import eval_config, iteration_configs
    from dno_data.stages.demo import DemoConfig, loop_settings

    spec = "python:dno_data.tasks.addition:careless_teacher"
    s = loop_settings(DemoConfig.from_options(output=tmp_path, teacher=spec), Path(tmp_path / "policy-0"))
    sample = iteration_configs(s, 1)[0]
    assert type(sample).__name__ == "SampleConfig" and sample.teacher == spec
    assert eval_config(s, 1).teacher == spec
    default = loop_settings(DemoConfig.from_options(output=tmp_path), Path(tmp_path / "policy-0"))
    assert default.teacher == "reference"
