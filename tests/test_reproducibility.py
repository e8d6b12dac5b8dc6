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
    assert env["cpu"] and env["torch_cpu_capability"]  # which kernels ran: other instructions round differently
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
    """The second run's policy folder holds another manifest (a checkpoint's, written elsewhere at
    another time), as iteration 2's policy does in two demo runs. Sample ids hash the model, not
    its manifest, so they are the same, and so is every choice a pair rule makes by id (which of
    two identical wrong answers, one truncated and one not, is the negative)."""
    runs = [_pipeline(tmp_path / name, tiny_model, stamp=name) for name in ("first", "second")]
    samples = [pq.read_table(r / "samples.parquet").to_pylist() for r in runs]
    policy = {str(runs[1] / "policy"): str(runs[0] / "policy")}  # the folder's name is all that differs
    assert samples[0] == [{**s, "generator": policy.get(s["generator"], s["generator"])} for s in samples[1]]
    pairs = [pq.read_table(r / "pairs.parquet").to_pylist() for r in runs]
    assert pairs[0] == pairs[1] and len(pairs[0]) >= 16
    weights = [(r / "checkpoint" / "model.safetensors").read_bytes() for r in runs]
    assert weights[0] == weights[1]
    start = (tiny_model / "model.safetensors").read_bytes()
    assert weights[0] != start  # it trained


def test_model_identity_leaves_out_training_records(tmp_path, tiny_model):
    from dno_data.models import model_sha256

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    (copy / "dno-manifest.json").write_text('{"lineage": {"created_at": "now"}}')
    (copy / "train_log.jsonl").write_text('{"step": 1}\n')  # where an older dno wrote it
    (copy / "README.md").write_text("# a model card, rendered from the manifest\n")
    assert model_sha256(copy) == model_sha256(tiny_model)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ', "x": 1}', 1))
    assert model_sha256(copy) != model_sha256(tiny_model)


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
    from dno_data.stages.judge import JudgeConfig, run as judge
    from dno_data.stages.pairs import PairsConfig, run as pairs
    from dno_data.stages.prompts import PromptsConfig, run as prompts
    from dno_data.stages.sample import SampleConfig, run as sample
    from dno_data.stages.train import TrainConfig, run as train

    run.mkdir(parents=True)
    policy = run / "policy"
    shutil.copytree(tiny_model, policy)
    if stamp:  # what differs between two runs' checkpoints: the manifest's paths and write time
        (policy / "dno-manifest.json").write_text(json.dumps({"lineage": {"created_at": stamp, "run": str(run)}}))
    src = write_jsonl(run / "problems.jsonl", problem_rows(16))
    p = prompts(PromptsConfig.from_options(src=src, output=run / "prompts.parquet", reference_column="reference"))
    s = sample(SampleConfig.from_options(prompts=p, output=run / "samples.parquet", model=policy, k=4, max_new_tokens=4,
                            temperature=1.0, batch_size=8, teacher="reference", seed=0))
    j = judge(JudgeConfig.from_options(samples=s, output=run / "judgments.parquet", judge="oracle:addition"))
    pr = pairs(PairsConfig.from_options(judgments=j, samples=s, output=run / "pairs.parquet"))
    train(TrainConfig.from_options(pairs=pr, model=policy, output=run / "checkpoint", batch_size=4, learning_rate=1e-3,
                      max_length=32, save_every=0, seed=0))
    if eval_too:
        from dno_data.stages.eval import EvalConfig, run as evaluate

        evaluate(EvalConfig.from_options(prompts=p, model=run / "checkpoint", judge="oracle:addition", output=run / "eval.parquet", split="train",
                            max_new_tokens=4))
    return run
