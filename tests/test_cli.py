"""End to end through the `dno` CLI (subprocesses) on the tiny model:
prompts -> sample -> judge -> pairs -> train -> eval -> sample from the new checkpoint -> sql.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from conftest import problem_rows, run_cli, write_jsonl
from dno_data.artifacts import read_artifact
from dno_data.lineage import describe_inputs, read_lineage
from dno_data.ids import file_sha256


@dataclass
class Pipeline:
    root: Path
    model: Path
    src: Path
    run: Path
    results: dict = field(default_factory=dict)

    @property
    def it(self) -> Path:
        return self.run / "iter-01"

    def cli(self, *args):
        return run_cli(*args, cwd=self.root)


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def _stat(path: Path):
    st = path.stat()
    return st.st_mtime_ns, st.st_ino


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, tiny_model) -> Pipeline:
    root = tmp_path_factory.mktemp("e2e")
    p = Pipeline(root, tiny_model, write_jsonl(root / "problems.jsonl", problem_rows(16)), root / "run")
    it = p.it
    p.results["prompts"] = _ok(p.cli("prompts", p.src, "-o", p.run / "prompts.parquet", "--reference-column",
                                     "reference", "--partitions", "2", "--eval-size", "4"))
    p.results["sample"] = _ok(p.cli("sample", p.run / "prompts.parquet", "-o", it / "samples.parquet", "--model",
                                    p.model, "--partition", "1", "-k", "2", "--max-new-tokens", "4", "--teacher",
                                    "reference", "--batch-size", "4"))
    p.results["judge"] = _ok(p.cli("judge", it / "samples.parquet", "-o", it / "judgments.parquet", "--judge",
                                   "oracle:addition"))
    p.results["pairs"] = _ok(p.cli("pairs", it / "judgments.parquet", it / "samples.parquet", "-o",
                                   it / "pairs.parquet"))
    p.results["train"] = _ok(p.cli("train", it / "pairs.parquet", "--model", p.model, "-o", it / "checkpoint",
                                   "--batch-size", "2", "--learning-rate", "1e-3", "--max-length", "32"))
    p.results["eval"] = _ok(p.cli("eval", p.run / "prompts.parquet", "--model", it / "checkpoint", "--judge",
                                  "oracle:addition", "--max-new-tokens", "4", "-o", it / "eval.parquet"))
    p.results["sample2"] = _ok(p.cli("sample", p.run / "prompts.parquet", "-o", p.run / "iter-02" / "samples.parquet",
                                     "--model", it / "checkpoint", "--partition", "2", "-k", "2",
                                     "--max-new-tokens", "4", "--batch-size", "8"))
    return p


# ---------------------------------------------------------------- each artifact

def test_prompts_artifact(pipe):
    rows = read_artifact(pipe.run / "prompts.parquet", "prompts").to_pylist()
    assert len(rows) == 16
    assert sum(r["split"] == "eval" for r in rows) == 4
    assert {r["partition"] for r in rows if r["split"] == "train"} == {1, 2}
    assert all(r["reference"] == str(sum(map(int, r["messages"][0]["content"].split("+")))) for r in rows)
    lin = read_lineage(pipe.run / "prompts.parquet")
    assert lin["stage"] == "prompts"
    assert lin["inputs"] == [{"path": str(pipe.src), "sha256": file_sha256(pipe.src)}]
    assert lin["config"]["partitions"] == 2 and lin["config"]["eval_size"] == 4
    assert "written" in pipe.results["prompts"].stderr


def test_samples_artifact(pipe):
    prompts = read_artifact(pipe.run / "prompts.parquet", "prompts").to_pylist()
    part1 = {r["prompt_id"]: r for r in prompts if r["partition"] == 1}
    rows = read_artifact(pipe.it / "samples.parquet", "samples").to_pylist()
    policy = [r for r in rows if r["source"] == "policy"]
    teacher = [r for r in rows if r["source"] == "teacher"]
    assert len(policy) == 2 * len(part1) and len(teacher) == len(part1)
    assert {r["prompt_id"] for r in rows} == set(part1)
    assert len({r["sample_id"] for r in rows}) == len(rows)
    for r in teacher:
        assert r["response"] == part1[r["prompt_id"]]["reference"]
    for r in policy:
        assert r["prompt_text"] == r["messages"][0]["content"] + "="  # the chat template
        assert r["num_tokens"] <= 4
        assert r["finish_reason"] in ("stop", "length")
        assert r["sample_index"] in (0, 1)
    lin = read_lineage(pipe.it / "samples.parquet")
    assert lin["inputs"] == describe_inputs([pipe.run / "prompts.parquet", pipe.model])
    assert lin["inputs"][0]["sha256"] == file_sha256(pipe.run / "prompts.parquet")
    assert not (pipe.it / "samples.parquet.parts").exists()


def test_judgments_artifact(pipe):
    samples = read_artifact(pipe.it / "samples.parquet", "samples").to_pylist()
    rows = read_artifact(pipe.it / "judgments.parquet", "judgments").to_pylist()
    assert len(rows) == len(samples)
    assert {r["sample_id_a"] for r in rows} == {s["sample_id"] for s in samples}
    assert all(r["status"] == "ok" and r["judge"] == "oracle:addition" for r in rows)
    by = {s["sample_id"]: s for s in samples}
    for r in rows:
        assert (r["score"] == 6.0) == r["correct"] == (by[r["sample_id_a"]]["response"].strip() ==
                                                      by[r["sample_id_a"]]["reference"])
    lin = read_lineage(pipe.it / "judgments.parquet")
    assert [{k: i[k] for k in ("path", "sha256")} for i in lin["inputs"]] == [
        {"path": str(pipe.it / "samples.parquet"), "sha256": file_sha256(pipe.it / "samples.parquet")}]


def test_pairs_artifact(pipe):
    rows = read_artifact(pipe.it / "pairs.parquet", "pairs").to_pylist()
    assert rows, pipe.results["pairs"].stderr
    assert all(r["rule"] == "paper" for r in rows)
    for r in rows:
        assert r["chosen_score"] >= 5.0
        assert r["margin"] >= 1.0
        assert r["pair_type"] == f"{r['chosen_source']}>{r['rejected_source']}"
    lin = read_lineage(pipe.it / "pairs.parquet")
    assert [i["sha256"] for i in lin["inputs"]] == [file_sha256(pipe.it / "judgments.parquet"),
                                                   file_sha256(pipe.it / "samples.parquet")]
    assert "pairs written" in pipe.results["pairs"].stderr


def test_checkpoint(pipe):
    ckpt = pipe.it / "checkpoint"
    records = pipe.it / "checkpoint.records"
    for name in ("config.json", "model.safetensors", "dno-manifest.json", "README.md"):
        assert (ckpt / name).exists(), name
    for name in ("ref_logps.parquet", "train_log.jsonl"):
        assert (records / name).exists() and not (ckpt / name).exists(), name
    assert (ckpt / "tokenizer.json").exists() or (ckpt / "tokenizer_config.json").exists()
    manifest = json.loads((ckpt / "dno-manifest.json").read_text())
    n_pairs = len(read_artifact(pipe.it / "pairs.parquet", "pairs"))
    assert manifest["metrics"]["pairs"] == n_pairs
    assert manifest["metrics"]["steps"] == -(-n_pairs // 2)  # one epoch at batch size 2
    assert manifest["lineage"]["inputs"] == describe_inputs([pipe.it / "pairs.parquet", pipe.model])
    ref = pq.read_table(records / "ref_logps.parquet").to_pydict()
    assert len(ref["pair_id"]) == n_pairs
    assert all(x < 0 for x in ref["ref_chosen"] + ref["ref_rejected"])
    assert len((records / "train_log.jsonl").read_text().splitlines()) == manifest["metrics"]["steps"]
    assert not (pipe.it / "checkpoint.partial").exists()
    summary = pipe.results["train"].stderr
    assert re.search(r"final_loss\s+\d\.\d{1,3}\n", summary), summary  # rounded, not 0.010453545488417149
    assert not list(pipe.it.glob(".checkpoint*"))
    # the weights moved
    from safetensors.torch import load_file

    before, after = load_file(pipe.model / "model.safetensors"), load_file(ckpt / "model.safetensors")
    assert any(not before[k].equal(after[k]) for k in before)


def test_eval_artifact(pipe):
    rows = read_artifact(pipe.it / "eval.parquet", "eval").to_pylist()
    prompts = read_artifact(pipe.run / "prompts.parquet", "prompts").to_pylist()
    evals = {r["prompt_id"]: r for r in prompts if r["split"] == "eval"}
    assert {r["prompt_id"] for r in rows} == set(evals)
    for r in rows:
        assert r["status"] == "ok"
        assert r["teacher_response"] == evals[r["prompt_id"]]["reference"]
        assert r["teacher_score"] == 6.0
        assert r["win"] in (0.0, 0.5)
        assert r["correct"] == (r["win"] == 0.5)
        assert r["model"] == str(pipe.it / "checkpoint")
    lin = read_lineage(pipe.it / "eval.parquet")
    assert lin["inputs"] == describe_inputs([pipe.run / "prompts.parquet", pipe.it / "checkpoint"])


def test_sampling_from_the_new_checkpoint(pipe):
    rows = read_artifact(pipe.run / "iter-02" / "samples.parquet", "samples").to_pylist()
    prompts = read_artifact(pipe.run / "prompts.parquet", "prompts").to_pylist()
    assert {r["prompt_id"] for r in rows} == {p["prompt_id"] for p in prompts if p["partition"] == 2}
    assert all(r["generator"] == str(pipe.it / "checkpoint") for r in rows)
    old_gen = read_artifact(pipe.it / "samples.parquet", "samples")["generator_id"].to_pylist()[0]
    assert rows[0]["generator_id"] != old_gen


# ---------------------------------------------------------------- up to date / --force

STAGE_ARGS = {
    "prompts": lambda p: ("prompts", p.src, "-o", p.run / "prompts.parquet", "--reference-column", "reference",
                          "--partitions", "2", "--eval-size", "4"),
    "sample": lambda p: ("sample", p.run / "prompts.parquet", "-o", p.it / "samples.parquet", "--model", p.model,
                         "--partition", "1", "-k", "2", "--max-new-tokens", "4", "--teacher", "reference",
                         "--batch-size", "4"),
    "judge": lambda p: ("judge", p.it / "samples.parquet", "-o", p.it / "judgments.parquet", "--judge",
                        "oracle:addition"),
    "pairs": lambda p: ("pairs", p.it / "judgments.parquet", p.it / "samples.parquet", "-o", p.it / "pairs.parquet"),
    "train": lambda p: ("train", p.it / "pairs.parquet", "--model", p.model, "-o", p.it / "checkpoint",
                        "--batch-size", "2", "--learning-rate", "1e-3", "--max-length", "32"),
    "eval": lambda p: ("eval", p.run / "prompts.parquet", "--model", p.it / "checkpoint", "--judge",
                       "oracle:addition", "--max-new-tokens", "4", "-o", p.it / "eval.parquet"),
}
OUTPUTS = {"prompts": "../prompts.parquet", "sample": "samples.parquet", "judge": "judgments.parquet",
           "pairs": "pairs.parquet", "train": "checkpoint/model.safetensors", "eval": "eval.parquet"}


@pytest.mark.parametrize("stage", list(STAGE_ARGS))
def test_rerun_is_up_to_date(pipe, stage):
    out = (pipe.it / OUTPUTS[stage]).resolve()
    before = _stat(out)
    proc = _ok(pipe.cli(*STAGE_ARGS[stage](pipe)))
    assert "up to date" in proc.stderr
    assert _stat(out) == before


@pytest.mark.parametrize("stage", ["prompts", "judge", "pairs"])
def test_force_rewrites(pipe, stage, tmp_path):
    # on a copy (the output path is not part of the fingerprint), so the module's files stay untouched
    schema = {"prompts": "prompts", "judge": "judgments", "pairs": "pairs"}[stage]
    out = tmp_path / "copy.parquet"
    shutil.copy((pipe.it / OUTPUTS[stage]).resolve(), out)
    content = read_artifact(out, schema).to_pylist()
    args = list(STAGE_ARGS[stage](pipe))
    args[args.index("-o") + 1] = out
    before = _stat(out)
    assert "up to date" in _ok(pipe.cli(*args)).stderr
    assert _stat(out) == before
    proc = _ok(pipe.cli(*args, "--force"))
    assert "up to date" not in proc.stderr
    assert _stat(out) != before
    # same inputs, same rows
    assert read_artifact(out, schema).to_pylist() == content
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_changed_setting_is_not_up_to_date(tmp_path, pipe):
    # another rule setting must redo pairs (written elsewhere so the module's files stay as they are)
    out = tmp_path / "pairs.parquet"
    shutil.copy(pipe.it / "pairs.parquet", out)
    proc = _ok(pipe.cli("pairs", pipe.it / "judgments.parquet", pipe.it / "samples.parquet", "-o", out))
    assert "up to date" in proc.stderr  # the copy counts: lineage, not the path, decides
    proc = _ok(pipe.cli("pairs", pipe.it / "judgments.parquet", pipe.it / "samples.parquet", "-o", out,
                        "--teacher-margin", "3"))
    assert "up to date" not in proc.stderr


def test_changed_max_new_tokens_is_not_up_to_date(tmp_path, pipe):
    out = tmp_path / "samples.parquet"
    shutil.copy(pipe.it / "samples.parquet", out)
    args = list(STAGE_ARGS["sample"](pipe))
    args[args.index("-o") + 1] = out
    args[args.index("--max-new-tokens") + 1] = "2"
    proc = _ok(pipe.cli(*args))
    assert "up to date" not in proc.stderr


# ---------------------------------------------------------------- dno sql

def test_sql_csv(pipe):
    proc = _ok(pipe.cli("sql", "--run", pipe.run, "--format", "csv",
                        "SELECT iteration, source, count(*) AS n FROM samples GROUP BY ALL ORDER BY ALL"))
    samples = read_artifact(pipe.it / "samples.parquet", "samples")["source"].to_pylist()
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "iteration,source,n"
    assert f"1,policy,{samples.count('policy')}" in lines
    assert f"1,teacher,{samples.count('teacher')}" in lines
    assert "2,policy,12" in lines  # iter-02/samples.parquet: 6 prompts x 2


def test_sql_json_over_all_views(pipe):
    query = """SELECT (SELECT count(*) FROM prompts) AS prompts, (SELECT count(*) FROM judgments) AS judgments,
                      (SELECT count(*) FROM pairs) AS pairs, (SELECT count(*) FROM evals) AS evals,
                      (SELECT min(iteration) FROM evals) AS eval_iteration"""
    proc = _ok(pipe.cli("sql", "--run", pipe.run, "--format", "json", query))
    got = json.loads(proc.stdout)
    assert got == [{"prompts": 16, "judgments": len(read_artifact(pipe.it / "judgments.parquet", "judgments")),
                    "pairs": len(read_artifact(pipe.it / "pairs.parquet", "pairs")), "evals": 4,
                    "eval_iteration": 1}]


def test_sql_table_and_param(pipe):
    proc = _ok(pipe.cli("sql", "--run", pipe.run, "SELECT pair_type, count(*) AS n FROM pairs "
                        "WHERE iteration = $t GROUP BY 1", "--param", "t=1"))
    assert "pair_type" in proc.stdout and "teacher>policy" in proc.stdout


def test_sql_parquet_output(pipe, tmp_path):
    out = tmp_path / "out.parquet"
    _ok(pipe.cli("sql", "--run", pipe.run, "--format", "parquet", "-o", out,
                 "SELECT prompt_id, split FROM prompts ORDER BY prompt_id"))
    df = pl.read_parquet(out)
    prompts = read_artifact(pipe.run / "prompts.parquet", "prompts").to_pylist()
    assert df["prompt_id"].to_list() == sorted(r["prompt_id"] for r in prompts)


def test_sql_errors(pipe, tmp_path):
    proc = pipe.cli("sql", "--run", pipe.run, "SELEC 1")
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    proc = pipe.cli("sql", "--run", pipe.run, "--format", "parquet", "SELECT 1")
    assert proc.returncode == 1 and "-o" in proc.stderr
    proc = pipe.cli("sql", "--run", tmp_path / "nope", "SELECT 1")
    assert proc.returncode == 1 and "nope" in proc.stderr


def test_sql_iteration_comes_from_the_iteration_folder(pipe, tmp_path):
    from dno_data.run_views import open_run
    from dno_data.duckdb_sql import query_polars

    run = tmp_path / "after-iter-07-fix" / "run"
    (run / "iter-01").mkdir(parents=True)
    shutil.copy(pipe.it / "samples.parquet", run / "iter-01" / "samples.parquet")
    con, views = open_run(run)
    assert views == ["samples"]
    df = query_polars(con, "SELECT DISTINCT iteration FROM samples")
    assert df["iteration"].to_list() == [1]


# ---------------------------------------------------------------- one run layout, one iteration chain

def test_run_layout_is_the_one_place_for_paths(tmp_path):
    from dno_data.run_layout import RunLayout, main

    run = RunLayout(tmp_path / "r")
    assert run.prompts == tmp_path / "r" / "prompts.parquet"
    assert run.samples(3) == tmp_path / "r" / "iter-03" / "samples.parquet"
    assert run.checkpoint(1) == tmp_path / "r" / "iter-01" / "checkpoint"
    assert run.policy(1, tmp_path / "sft") == tmp_path / "sft" and run.policy(2, tmp_path / "sft") == run.checkpoint(1)
    assert main([str(tmp_path / "r"), "eval", "0"]) == 0 and main([str(tmp_path / "r"), "eval"]) == 2


def _dry_run_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("dno ")]


def test_iterate_runs_the_demo_iteration(tmp_path, cli):
    from dno_data.loop import LoopSettings, command_line, eval_config, iteration_configs
    from dno_data.run_layout import RunLayout

    proc = cli("iterate", "--run", tmp_path / "r", "--model", tmp_path / "sft", "--judge", "oracle:addition",
               "--teacher", "none", "--iterations", "2", "--eval-initial", "--sample-args", "-k 4 --seed 3",
               "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = _dry_run_lines(proc.stdout)
    s = LoopSettings(run=tmp_path / "r", model=tmp_path / "sft", judge="oracle:addition", iterations=2, teacher=None,
                     options={"sample": {"k": 4, "seed": 3}})
    expected = [eval_config(s, 0)] + iteration_configs(s, 1) + iteration_configs(s, 2)
    assert lines == [command_line(c) for c in expected]
    assert [line.split()[1] for line in lines[1:6]] == ["sample", "judge", "pairs", "train", "eval"]
    layout = RunLayout(tmp_path / "r")
    assert f"--model {layout.checkpoint(1)}" in lines[6]  # pi_2 = iteration 1's checkpoint
    assert all("--teacher none" in line for line in lines if line.startswith("dno eval"))  # no teacher: policy alone
    assert not any("--teacher" in line for line in lines if line.startswith("dno sample"))


def test_justfile_chains_stages_through_dno_iterate(tmp_path):
    import shutil as _shutil
    import subprocess

    from conftest import ROOT

    text = (ROOT / "justfile").read_text()
    recipe_lines = [line for line in text.splitlines() if line.startswith("    ") and not line.strip().startswith("#")]
    assert not [line for line in recipe_lines if "iter-" in line], "the justfile spells the run layout"
    for recipe in ("iterate:", "iteration t:"):
        body = text.split("\n" + recipe, 1)[1].split("\n\n", 1)[0]
        assert "dno iterate" in body and "dno sample" not in body, recipe
    if _shutil.which("just") is None:
        pytest.skip("just is not installed")
    shown = subprocess.run(["just", "--dry-run", "run=R", "model=M", "teacher=none", "iteration", "2"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "dno iterate --run 'R' --model 'M'" in shown.stderr and "--start 2 --iterations 2" in shown.stderr


@pytest.mark.e2e
def test_iterate_finds_the_stages_run_by_hand_up_to_date(pipe):
    """`dno iterate` runs the chain the pipeline above typed by hand, on the same paths: all up to date."""
    files = [pipe.it / f for f in ("samples.parquet", "judgments.parquet", "pairs.parquet", "eval.parquet")]
    before = [_stat(f) for f in files]
    proc = _ok(pipe.cli("iterate", "--run", pipe.run, "--model", pipe.model, "--judge", "oracle:addition",
                        "--iterations", "1", "--sample-args", "-k 2 --max-new-tokens 4 --batch-size 4",
                        "--train-args", "--batch-size 2 --learning-rate 1e-3 --max-length 32",
                        "--eval-args", "--max-new-tokens 4"))
    assert proc.stderr.count("up to date") == 5, proc.stderr
    assert [_stat(f) for f in files] == before
