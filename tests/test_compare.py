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
        (m, t) for m in ("dno", "offline-dpo", "sft", "rft", "offline-kto") for t in (0, 1)}
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
    for m in ("sft", "rft"):
        assert at1[m]["steps"] == dno["steps"] and at1[m]["examples"] > 0
    assert at1["offline-kto"]["pairs"] == dno["pairs"] and at1["offline-kto"]["steps"] == dno["steps"]
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
    assert len(sft) == 4 and all("--max-steps DNO_STEPS" in x and "--beta" not in x for x in sft)
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
                                             ("dno,ppo", "choose among dno, offline-dpo, sft, rft")])
def test_bad_methods_are_one_line(tmp_path, methods, message):
    res = _cli("compare", "--run", tmp_path, "--model", tmp_path, "--judge", "oracle:addition",
               "--methods", methods, "--dry-run")
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0 and message in res.output
    assert res.output.startswith("error:")
