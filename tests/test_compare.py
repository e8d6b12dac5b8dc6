"""`dno compare` end to end on the tiny model (one iteration, every method): the table's methods,
intervals and matched budgets, the plot; offline DPO's wiring (pi_1 samples, reference pi_1) and offline
KTO's (offline DPO's pairs, --loss kto, reference pi_1)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import problem_rows, sample_row, write_jsonl
from dno_data.artifacts import write_artifact

SAMPLE = "-k 3 --max-new-tokens 5 --batch-size 16 --temperature 1.0"
TRAIN = "--beta 0.5 --batch-size 2 --learning-rate 1e-3 --max-length 32 --save-every 0 --warmup-ratio 0"


@pytest.fixture(scope="module")
def pi1(tmp_path_factory, tiny_model) -> Path:
    """The tiny model fine-tuned a little on right answers (`dno sft`), so that it ends some answers with EOS
    (rejection sampling never picks a sample cut at the length limit)."""
    from dno_data.stages.sft import SftConfig, run

    root = tmp_path_factory.mktemp("pi1")
    rows = []
    for i, r in enumerate(problem_rows(16)):
        row = sample_row(f"t{i}", f"p{i}", r["reference"], source="teacher",
                         messages=[{"role": "user", "content": r["prompt"]}])
        row["prompt_text"] = None  # rendered with the model's own template, as sampling does
        rows.append(row)
    data = write_artifact(rows, root / "teacher.parquet", "samples", None)
    out = root / "pi1"
    run(SftConfig.from_options(data=data, model=tiny_model, output=out, source="teacher", batch_size=8, max_steps=60,
                  learning_rate=1e-2, warmup_ratio=0.0, max_length=32, save_every=0, threads=1))
    return out


def in_process(cfg) -> None:
    """Run one step's `dno` command in this process (the loop's subprocesses cost seconds of imports each)."""
    from typer.testing import CliRunner

    from dno_data.loop import command_args
    from stages.cli import app

    args = cfg if isinstance(cfg, list) else command_args(cfg)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"dno {' '.join(map(str, args))}: {result.output}"
    OUTPUT.append(result.output)


OUTPUT: list[str] = []


def settings(run: Path, model: Path):
    from dno_data.compare import METHODS, CompareSettings, sft_options_from_train
    from dno_data.loop import LoopSettings
    from stages.build import parse_stage_args

    sample, train = parse_stage_args("sample", SAMPLE, "-"), parse_stage_args("train", TRAIN, "-")
    loop = LoopSettings(run=run, model=model, judge="oracle:addition", iterations=1,
                        options={"sample": sample, "train": train, "eval": {"max_new_tokens": 5},
                                 "sft": sft_options_from_train(train)})
    return CompareSettings(loop, methods=METHODS, resamples=200)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, pi1):
    from dno_data.compare import run_comparison

    root = tmp_path_factory.mktemp("compare")
    run = root / "run"
    src = write_jsonl(root / "problems.jsonl", problem_rows(16))
    in_process(["prompts", src, "-o", run / "prompts.parquet", "--reference-column", "reference",
                "--partitions", "1", "--eval-size", "6"])
    OUTPUT.clear()
    run_comparison(settings(run, pi1), run=in_process)
    return run, "".join(OUTPUT)


def test_table_has_every_method_with_intervals(compared):
    run, _ = compared
    rows = pq.read_table(run / "compare.parquet").to_pylist()
    assert {(r["method"], r["iteration"]) for r in rows} == {
        (m, t) for m in ("dno", "offline-dpo", "sft", "sft-chosen", "rft", "offline-kto") for t in (0, 1)}
    for r in rows:
        for m in ("accuracy", "winrate", "score"):
            assert r[m] is not None and r[f"{m}_low"] <= r[m] <= r[f"{m}_high"], (r["method"], m)
        assert r["eval_prompts"] == 6
    initial = {r["method"]: r for r in rows if r["iteration"] == 0}
    assert len({(r["accuracy"], r["score"]) for r in initial.values()}) == 1  # pi_1 evaluated once, shared
    md = (run / "compare.md").read_text()
    assert (run / "compare.csv").exists() and "| rft | 1 |" in md and "[95 % CI]" in md


def test_budgets_are_matched(compared):
    run, _ = compared
    at1 = {r["method"]: r for r in pq.read_table(run / "compare.parquet").to_pylist() if r["iteration"] == 1}
    dno = at1["dno"]
    assert dno["pairs"] > 0 and dno["steps"] > 0 and dno["dno_pairs"] == dno["pairs"]
    # at iteration 1 offline DPO is DNO (pi_1's samples of partition 1, reference pi_1): the same folder
    off = run / "offline-dpo" / "iter-01"
    assert off.is_symlink() and off.resolve() == (run / "dno" / "iter-01").resolve()
    assert at1["offline-dpo"]["pairs"] == dno["pairs"] and at1["offline-dpo"]["steps"] == dno["steps"]
    assert at1["offline-dpo"]["accuracy"] == dno["accuracy"]
    for m in ("sft", "sft-chosen", "rft"):
        assert at1[m]["steps"] == dno["steps"] and at1[m]["examples"] > 0 and at1[m]["tokens"] > 0
    assert at1["offline-kto"]["pairs"] == dno["pairs"] and at1["offline-kto"]["steps"] == dno["steps"]
    assert all(r["steps_match"] and r["seeds"] == 1 for r in at1.values())
    assert dno["tokens"] > 0 and dno["passes"] == 1
    assert all(r["prompts"] == dno["prompts"] == r["prompts_seen"] for r in at1.values())  # the same partition


def test_offline_dpo_samples_from_pi1_with_reference_pi1(compared, pi1):
    run, _ = compared
    off = run / "offline-dpo" / "iter-01"
    gens = set(pq.read_table(off / "samples.parquet", columns=["generator"]).column(0).to_pylist())
    assert str(pi1) in gens
    manifest = json.loads((off / "checkpoint" / "dno-manifest.json").read_text())
    assert Path(manifest["reference_model"]) == pi1
    kto = json.loads((run / "offline-kto" / "iter-01" / "checkpoint" / "dno-manifest.json").read_text())
    assert kto["options"]["loss"] == "kto" and kto["options"]["beta"] == 0.5  # --train-args, the loss KTO's
    assert Path(kto["reference_model"]) == pi1 and "final_kl" in kto["metrics"]
    assert kto["lineage"]["inputs"][0]["path"].endswith("offline-dpo/iter-01/pairs.parquet")
    sft = json.loads((run / "sft" / "iter-01" / "checkpoint" / "dno-manifest.json").read_text())
    assert sft["objective"] == "sft" and sft["lineage"]["stage"] == "sft"


def test_plot_is_a_png(compared):
    run, _ = compared
    assert (run / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_is_up_to_date(compared, pi1, capsys):
    from dno_data.compare import run_comparison

    run, _ = compared
    before = (run / "dno" / "iter-01" / "checkpoint" / "dno-manifest.json").stat().st_mtime_ns
    OUTPUT.clear()
    run_comparison(settings(run, pi1), run=in_process)
    assert (run / "dno" / "iter-01" / "checkpoint" / "dno-manifest.json").stat().st_mtime_ns == before
    # every stage of every method skipped itself: eval 0, dno 5, sft 2, rft 2 (offline-dpo's iteration 1 is dno's)
    assert "".join(OUTPUT).count("up to date") + capsys.readouterr().err.count("up to date") >= 10


def _cli(*args):
    from typer.testing import CliRunner

    from stages.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_dry_run_and_offline_wiring(tmp_path):
    from dno_data.compare import CompareSettings, iteration_plan
    from dno_data.loop import LoopSettings

    res = _cli("compare", "--run", tmp_path / "r", "--model", tmp_path / "m", "--judge", "oracle:addition",
               "--iterations", "2", "--train-args", "--beta 2 --learning-rate 1e-3", "--dry-run")
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("dno ")]
    offline_samples = [x for x in lines if x.startswith("dno sample") and "offline-dpo" in x]
    assert len(offline_samples) == 1 and all(f"--model {tmp_path / 'm'} " in x for x in offline_samples)
    assert f"# {tmp_path / 'r' / 'offline-dpo' / 'iter-01'} -> {tmp_path / 'r' / 'dno' / 'iter-01'}" in res.output
    offline_train = [x for x in lines if x.startswith("dno train") and "offline-dpo" in x]
    assert len(offline_train) == 1
    assert f"--model {tmp_path / 'r' / 'offline-dpo' / 'iter-01' / 'checkpoint'}" in offline_train[0]
    assert all(f"--reference {tmp_path / 'm'}" in x for x in offline_train)
    assert all("--max-pairs DNO_PAIRS" in x for x in lines if x.startswith("dno pairs") and "offline-dpo" in x)
    sft = [x for x in lines if x.startswith("dno sft")]
    assert len(sft) == 6 and all("--max-steps DNO_STEPS" in x and "--beta" not in x for x in sft)
    assert all("--max-steps DNO_STEPS" in x for x in offline_train)  # every arm: DNO's optimizer steps
    assert all("--learning-rate 0.001" in x for x in sft)
    s = CompareSettings(LoopSettings(run=tmp_path / "r", model=tmp_path / "m", judge="oracle:addition"),
                        methods=("dno", "rft"))
    from dno_data.compare import PLACEHOLDER
    from dno_data.stages import stage_name

    def plan(*a, **kw):
        return [stage_name(c) for c in iteration_plan(s, *a, **kw)]
    assert plan(2, PLACEHOLDER) == ["sample", "judge", "sft", "eval"]  # rft alone: pi_1's samples and judgments
    assert plan(1, PLACEHOLDER) == ["sft", "eval"]  # at t = 1, DNO's (the shared folder)
    assert plan(1, PLACEHOLDER, shared=False) == ["sample", "judge", "sft", "eval"]
    s = dataclasses.replace(s, methods=("dno", "offline-kto"))  # pi_1's pairs, then KTO's training on them
    assert plan(2, PLACEHOLDER) == ["sample", "judge", "pairs", "train", "eval"]
    assert plan(1, PLACEHOLDER) == ["train", "eval"]
    kto = iteration_plan(s, 2, PLACEHOLDER)[3]
    assert kto.training.loss == "kto" and kto.training.reference == tmp_path / "m"
    assert kto.pairs == tmp_path / "r" / "offline-dpo" / "iter-02" / "pairs.parquet"
    assert kto.model == tmp_path / "r" / "offline-kto" / "iter-01" / "checkpoint"


@pytest.mark.parametrize("methods, message", [("sft,offline-dpo", "must include dno"),
                                             ("dno,ppo", "choose among dno, offline-dpo, sft, sft-chosen, rft")])
def test_bad_methods_are_one_line(tmp_path, methods, message):
    res = _cli("compare", "--run", tmp_path, "--model", tmp_path, "--judge", "oracle:addition",
               "--methods", methods, "--dry-run")
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0 and message in res.output
    assert res.output.startswith("error:")


def test_rft_trains_only_on_accepted_samples_and_sft_chosen_on_dnos_chosen(compared):
    """RFT's best sample must reach the pair rule's positive score (5: the exact sum; 4 at most otherwise), and
    sft-chosen fine-tunes on the chosen side of DNO's own pairs of the iteration, from pi_1."""
    run, _ = compared
    rft = json.loads((run / "rft" / "iter-01" / "checkpoint" / "dno-manifest.json").read_text())
    assert rft["lineage"]["config"]["min_score"] == 5.0
    from dno_data.training.sft import select_examples

    data = {k: pq.read_table(run / "dno" / "iter-01" / f"{k}.parquet") for k in ("samples", "judgments")}
    kept = select_examples("best", samples=data["samples"], judgments=data["judgments"], min_score=5.0)
    best = select_examples("best", samples=data["samples"], judgments=data["judgments"])
    assert rft["metrics"]["examples"] == len(kept) > 0 and min(kept["score"].to_pylist()) >= 5
    assert len(best) > len(kept)  # without the acceptance score, wrong best samples would be trained on
    chosen = json.loads((run / "sft-chosen" / "iter-01" / "checkpoint" / "dno-manifest.json").read_text())
    assert chosen["lineage"]["inputs"][0]["path"].endswith("dno/iter-01/pairs.parquet")
    distinct = set(pq.read_table(run / "dno" / "iter-01" / "pairs.parquet", columns=["chosen_sample_id"])
                   .column(0).to_pylist())
    assert chosen["metrics"]["examples"] == len(distinct) and chosen["options"]["learning_rate"] == 1e-3


@pytest.mark.parametrize("pairs, override, expected", [({}, None, 5.0), ({"min_positive_score": 6.0}, None, 6.0),
                                                      ({}, 3.0, 3.0), ({"rule": "best-worst"}, None, None)])
def test_rft_acceptance_defaults_to_the_pair_rules_positive_threshold(tmp_path, pairs, override, expected):
    from dno_data.compare import PLACEHOLDER, CompareSettings, iteration_plan
    from dno_data.loop import LoopSettings

    s = CompareSettings(LoopSettings(run=tmp_path / "r", model=tmp_path / "m", judge="oracle:addition",
                                     options={"pairs": pairs}), methods=("dno", "rft"), rft_min_score=override)
    rft = [c for c in iteration_plan(s, 2, PLACEHOLDER) if getattr(c, "source", None) == "best"]
    assert len(rft) == 1 and rft[0].min_score == expected


def test_every_arm_trains_dnos_steps_and_seeds_have_folders_of_their_own(tmp_path):
    from dno_data.compare import Budget, CompareSettings, iteration_plan
    from dno_data.config import to_options
    from dno_data.loop import LoopSettings
    from dno_data.stages import stage_name

    loop = LoopSettings(run=tmp_path / "r", model=tmp_path / "m", judge="oracle:addition",
                        options={"sample": {"seed": 7}, "train": {"beta": 2.0}})
    s = CompareSettings(loop, methods=("dno", "offline-dpo", "sft", "sft-chosen", "rft", "offline-kto"), seeds=(3, 4))
    plan = iteration_plan(s, 2, Budget(pairs=120, steps=17), seed=4)
    trained = [c for c in plan if stage_name(c) in ("train", "sft")]
    assert len(trained) == 5 and all(c.training.max_steps == 17 for c in trained)
    assert all(c.training.seed == 4 for c in trained)
    sample = next(c for c in plan if stage_name(c) == "sample")
    assert to_options(sample)["seed"] == 4 and sample.output == tmp_path / "r" / "seed-4" / "offline-dpo" / "iter-02" / "samples.parquet"
    assert to_options(next(c for c in plan if stage_name(c) == "pairs"))["seed"] == 4
    chosen = next(c for c in trained if getattr(c, "source", None) == "chosen")
    assert chosen.data == tmp_path / "r" / "seed-4" / "dno" / "iter-02" / "pairs.parquet"
    assert chosen.model == tmp_path / "r" / "seed-4" / "sft-chosen" / "iter-01" / "checkpoint"


def _eval_file(path: Path, correct: list[bool]) -> Path:
    """An eval file of len(correct) held-out prompts p0, p1, ... (a verifiable judge: correct, win, score)."""
    rows = [{"prompt_id": f"p{i}", "turn": 1, "messages": [{"role": "user", "content": f"{i}+1"}], "model": "m",
             "response": "x", "teacher_response": "y", "judge_id": "j", "policy_score": 6.0 if ok else 2.0,
             "teacher_score": 6.0, "win": 0.5 if ok else 0.0, "correct": ok, "justification": None, "status": "ok",
             "error": None} for i, ok in enumerate(correct)]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_artifact(rows, path, "eval", None)


def test_seed_aggregation_mean_spread_and_paired_bootstrap(tmp_path):
    """Three seeds of dno and sft on the same 10 prompts: the mean and min-max over seeds, the bootstrap of each
    prompt's seed mean, and the paired difference against DNO on the same prompts, pooled over seeds."""
    import statistics

    from dno_data.compare_table import aggregate, markdown

    dno = {0: [1] * 6 + [0] * 4, 1: [1] * 5 + [0] * 5, 2: [1] * 7 + [0] * 3}  # 60, 50, 70 %
    sft = {0: [1] * 8 + [0] * 2, 1: [1] * 9 + [0] * 1, 2: [0] + [1] * 9}  # 80, 90, 90 %
    rows = []
    for method, by_seed in (("dno", dno), ("sft", sft)):
        for seed, ok in by_seed.items():
            f = _eval_file(tmp_path / f"seed-{seed}" / method / "eval.parquet", [bool(x) for x in ok])
            rows.append({"method": method, "iteration": 1, "seed": seed, "accuracy": sum(ok) / 10, "eval_file": str(f),
                         "steps": 30 + seed, "dno_steps": 30 + seed, "examples": 100 + seed if method == "sft" else None,
                         "pairs": 200 if method == "dno" else None, "tokens": 1000})
    rows.append({**rows[-1], "method": "rft", "steps": 29, "dno_steps": 32})  # one seed off DNO's steps
    out = {r["method"]: r for r in aggregate(rows, resamples=2000)}
    d, s = out["dno"], out["sft"]
    assert d["seeds"] == 3 and d["accuracy"] == pytest.approx(0.6) and (d["accuracy_min"], d["accuracy_max"]) == (0.5, 0.7)
    assert d["accuracy_sd"] == pytest.approx(statistics.stdev([0.6, 0.5, 0.7]))
    assert s["accuracy"] == pytest.approx(26 / 30) and s["accuracy_low"] <= s["accuracy"] <= s["accuracy_high"]
    # per prompt, sft's seed mean minus dno's: p0 2/3 - 1, p1..p4 1 - 1, p5 1 - 2/3, p6 1 - 1/3, p7 1 - 0,
    # p8 2/3 - 0, p9 1/3 - 0
    by_hand = [2 / 3 - 1, 0, 0, 0, 0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3]
    assert s["accuracy_vs_dno"] == pytest.approx(sum(by_hand) / 10) == pytest.approx(26 / 30 - 18 / 30)
    assert s["accuracy_vs_dno_low"] > 0 and s["accuracy_vs_dno_high"] < 0.6
    assert d["accuracy_vs_dno"] == 0  # DNO against itself
    assert s["steps_match"] and not out["rft"]["steps_match"] and s["examples"] == 101 and d["pairs"] == 200
    md = markdown(list(out.values()))
    assert "| sft | 1 | 3 | 86.7 [" in md and "(80.0–90.0)" in md and "+26.7 [" in md and "≠ DNO's" in md


def test_tuning_grid_validation_split_and_picks(tmp_path):
    """--tune: one grid per arm (lr x0.5/1/2, beta too for the contrastive arms), validation prompts from the last
    partition and never held out, the best validation accuracy picked (a tie: the given values), the picks used
    by every arm's stage (offline DPO takes DNO's)."""
    from dno_data.compare import CompareSettings, Budget, iteration_plan
    from dno_data.compare_tuning import grid, pick, read_picks, validation_file, write_tuning_table, write_validation
    from dno_data.loop import LoopSettings
    from dno_data.stages import stage_name

    run = tmp_path / "run"
    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(40))
    in_process(["prompts", src, "-o", run / "prompts.parquet", "--reference-column", "reference",
                "--partitions", "2", "--eval-size", "6"])
    loop = LoopSettings(run=run, model=tmp_path / "m", judge="oracle:addition", iterations=2,
                        options={"train": {"beta": 2.0, "learning_rate": 1e-3}, "sft": {"learning_rate": 1e-3}})
    c = CompareSettings(loop, methods=("dno", "offline-dpo", "sft", "rft"), tune=True)
    assert grid(c, "dno")[0] == {"learning_rate": 1e-3, "beta": 2.0} and len(grid(c, "dno")) == 9
    assert {p["beta"] for p in grid(c, "dno")} == {1.0, 2.0, 4.0}
    assert [p["learning_rate"] for p in grid(c, "sft")] == [1e-3, 5e-4, 2e-3]

    prompts = pq.read_table(run / "prompts.parquet").to_pylist()
    val = pq.read_table(write_validation(c)).to_pylist()
    held_out = {r["prompt_id"] for r in prompts if r["split"] == "eval"}
    assert val and all(r["split"] == "eval" for r in val) and not held_out & {r["prompt_id"] for r in val}
    last = {r["prompt_id"] for r in prompts if r["partition"] == 2}
    assert {r["prompt_id"] for r in val} <= last

    rows = []
    for arm, points, accs in (("dno", grid(c, "dno")[:3], ([1] * 3 + [0] * 3, [1] * 5 + [0], [1] * 5 + [0])),
                              ("sft", grid(c, "sft"), ([1] * 4 + [0] * 2, [1] * 4 + [0] * 2, [1] * 4 + [0] * 2))):
        for point, acc in zip(points, accs):
            f = _eval_file(tmp_path / "tune" / arm / str(len(rows)) / "eval.parquet", [bool(x) for x in acc])
            rows.append({"arm": arm, "learning_rate": None, "beta": None, **point, "steps": 9, "eval_file": str(f)})
    picks = pick(rows, c)
    assert picks["dno"] == grid(c, "dno")[1]  # the first of the two best (5 of 6)
    assert picks["sft"] == {"learning_rate": 1e-3}  # a three-way tie: the given value
    write_tuning_table(c, rows, picks)
    assert read_picks(c) == picks and "| sft | 0.001 |  | 66.7 | 9 | **yes** |" in (run / "compare-tuning.md").read_text()
    assert validation_file(c) == run / "tune" / "validation.parquet"

    tuned = dataclasses.replace(c, picks=picks)
    trained = {str(x.output).split("/")[-3]: x for x in iteration_plan(tuned, 2, Budget(10, 5))
               if stage_name(x) in ("train", "sft")}
    assert trained["offline-dpo"].training.learning_rate == picks["dno"]["learning_rate"]
    assert trained["offline-dpo"].training.beta == picks["dno"]["beta"]
    assert trained["sft"].training.learning_rate == 1e-3 and trained["rft"].training.learning_rate == 1e-3


def test_tuning_runs_every_grid_point_at_dnos_steps(tmp_path, pi1):
    from dno_data.compare import CompareSettings, manifest
    from dno_data.compare_tuning import tune

    run = tmp_path / "run"
    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(16))
    in_process(["prompts", src, "-o", run / "prompts.parquet", "--reference-column", "reference",
                "--partitions", "2", "--eval-size", "4"])
    base = settings(run, pi1)
    c = CompareSettings(dataclasses.replace(base.loop, iterations=2), methods=("dno", "offline-dpo", "sft-chosen"),
                        resamples=200, tune=True)
    picks = tune(c, in_process, say=lambda *_: None)
    rows = pq.read_table(run / "compare-tuning.parquet").to_pylist()
    assert [r["arm"] for r in rows] == ["dno"] * 9 + ["sft-chosen"] * 3
    dno_steps = manifest(Path(rows[0]["checkpoint"]))["metrics"]["steps"]
    assert all(manifest(Path(r["checkpoint"]))["metrics"]["steps"] == dno_steps == r["steps"] for r in rows)
    assert all(r["accuracy"] is not None for r in rows) and sum(r["picked"] for r in rows) == 2
    assert set(picks) == {"dno", "sft-chosen"} and set(picks["dno"]) == {"learning_rate", "beta"}
