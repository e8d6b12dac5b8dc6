"""Same seed, same figures: the environment in every lineage, and two runs of sample -> judge ->
pairs -> train that differ only in where they ran give the same samples and bitwise-identical weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from conftest import problem_rows, write_jsonl


def test_the_lineage_records_the_environment(tmp_path, tiny_model):
    from dno_data.lineage import lineage_fingerprint, make_lineage
    from dno_data.reproducibility import configure_torch

    assert configure_torch(1) == 1
    env = make_lineage("test", [], {"a": 1})["environment"]
    assert env["python"].count(".") == 2 and env["platform"] and env["cpu_count"] >= 1
    assert env["packages"]["torch"] and env["packages"]["transformers"] and env["packages"]["accelerate"]
    assert "vllm" in env["packages"]  # None when not installed
    assert env["torch_threads"] == 1 and env["deterministic_algorithms"] is True
    # another machine does not make finished work stale
    a, b = make_lineage("test", [], {"a": 1}), make_lineage("test", [], {"a": 1})
    b["environment"] = {**b["environment"], "cpu_count": 999}
    assert lineage_fingerprint(a) == lineage_fingerprint(b)


def test_every_torch_stage_records_its_threads(tmp_path, tiny_model):
    """sample, train and eval: an explicit --threads default, and what torch ran with, in the lineage."""
    from dno_data.lineage import read_lineage

    run = _pipeline(tmp_path / "r", tiny_model, eval_too=True)
    for artifact in (run / "samples.parquet", run / "checkpoint", run / "eval.parquet"):
        lineage = read_lineage(artifact)
        assert lineage["config"]["threads"] == 1, artifact
        assert lineage["environment"]["torch_threads"] == 1, artifact
        assert lineage["environment"]["deterministic_algorithms"] is True, artifact


def test_two_runs_of_one_seed_give_identical_samples_and_weights(tmp_path, tiny_model):
    """The second run's policy folder holds another manifest (a checkpoint's, written at another
    time), as iteration 2's policy does in two demo runs: its sample ids and so the pairs file's
    row order differ, and training must not depend on that order."""
    runs = [_pipeline(tmp_path / name, tiny_model, stamp=name) for name in ("first", "second")]
    samples = [pq.read_table(r / "samples.parquet").to_pylist() for r in runs]
    assert {s["sample_id"] for s in samples[0]} != {s["sample_id"] for s in samples[1]}

    def content(rows):
        return sorted((s["prompt_id"], s["source"], s["sample_index"], s["response"]) for s in rows)

    assert content(samples[0]) == content(samples[1])
    pairs = [pq.read_table(r / "pairs.parquet").to_pylist() for r in runs]
    assert [(p["chosen"], p["rejected"]) for p in pairs[0]] != [(p["chosen"], p["rejected"]) for p in pairs[1]]
    assert len(pairs[0]) >= 16
    weights = [(r / "checkpoint" / "model.safetensors").read_bytes() for r in runs]
    assert weights[0] == weights[1]
    start = (tiny_model / "model.safetensors").read_bytes()
    assert weights[0] != start  # it trained


def test_training_order_does_not_depend_on_the_row_order():
    from dno_data.training.data import training_order

    examples = [{"chosen_ids": [1, i], "rejected_ids": [2, i], "target": 1.0} for i in range(20)]
    order = training_order(examples, seed=3)
    reversed_examples = examples[::-1]
    again = training_order(reversed_examples, seed=3)
    assert [examples[k]["chosen_ids"] for k in order] == [reversed_examples[k]["chosen_ids"] for k in again]
    assert training_order(examples, seed=4) != order  # still seeded


def _pipeline(run: Path, tiny_model: Path, stamp: str = "", eval_too: bool = False) -> Path:
    """prompts -> sample (policy in RUN/policy, K = 4, T = 1) -> judge (oracle:addition) -> pairs -> train."""
    from stages.judge import JudgeConfig, run as judge
    from stages.pairs import PairsConfig, run as pairs
    from stages.prompts import PromptsConfig, run as prompts
    from stages.sample import SampleConfig, run as sample
    from stages.train import TrainConfig, run as train

    run.mkdir(parents=True)
    policy = run / "policy"
    shutil.copytree(tiny_model, policy)
    if stamp:  # what differs between two runs' checkpoints: the manifest's paths and write time
        (policy / "dno-manifest.json").write_text(json.dumps({"lineage": {"created_at": stamp, "run": str(run)}}))
    src = write_jsonl(run / "problems.jsonl", problem_rows(16))
    p = prompts(PromptsConfig(src=src, output=run / "prompts.parquet", reference_column="reference"))
    s = sample(SampleConfig(prompts=p, output=run / "samples.parquet", model=policy, k=4, max_new_tokens=4,
                            temperature=1.0, batch_size=8, teacher="reference", seed=0))
    j = judge(JudgeConfig(samples=s, output=run / "judgments.parquet", judge="oracle:addition"))
    pr = pairs(PairsConfig(judgments=j, samples=s, output=run / "pairs.parquet"))
    train(TrainConfig(pairs=pr, model=policy, output=run / "checkpoint", batch_size=4, learning_rate=1e-3,
                      max_length=32, save_every=0, seed=0))
    if eval_too:
        from stages.eval import EvalConfig, run as evaluate

        evaluate(EvalConfig(prompts=p, model=run / "checkpoint", judge="oracle:addition", output=run / "eval.parquet", split="train",
                            max_new_tokens=4))
    return run
