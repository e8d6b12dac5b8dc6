"""Crash and resume, in process: sampling and judging redo no finished part; training resumes its state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import problem_rows, write_jsonl
from dno_data.artifacts import read_artifact
from dno_data.errors import DnoError


class Crash(RuntimeError):
    pass


@pytest.fixture
def prompts16(tmp_path) -> Path:
    from dno_data.stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(16))
    return run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))


def _sorted(table, key):
    return sorted(table.to_pylist(), key=lambda r: r[key])


# ---------------------------------------------------------------- sampling

def test_sampling_resumes_after_a_crash(tmp_path, prompts16, tiny_model, monkeypatch):
    import dno_data.generation.hf as generation
    from dno_data.stages.sample import SampleConfig, run

    def cfg(out):
        return SampleConfig.from_options(prompts=prompts16, output=tmp_path / out, model=tiny_model, k=2, max_new_tokens=4,
                            batch_size=4, teacher="reference", threads=1)  # 16 prompts -> 4 batches

    real = generation.HFGenerator.generate
    run(cfg("a.parquet"))

    calls = []

    def crash_after_two(self, prompts, params, seed, **kw):
        calls.append(seed)
        if len(calls) > 2:
            raise Crash("killed")
        return real(self, prompts, params, seed, **kw)

    monkeypatch.setattr(generation.HFGenerator, "generate", crash_after_two)
    with pytest.raises(Crash):
        run(cfg("b.parquet"))
    assert not (tmp_path / "b.parquet").exists()
    parts = tmp_path / "b.parquet.parts"
    assert sorted(p.name for p in parts.glob("part-*.parquet")) == ["part-000000.parquet", "part-000001.parquet"]

    counted = []

    def counting(self, prompts, params, seed, **kw):
        counted.append(len(prompts))
        return real(self, prompts, params, seed, **kw)

    monkeypatch.setattr(generation.HFGenerator, "generate", counting)
    run(cfg("b.parquet"))
    assert counted == [4, 4]  # only batches 2 and 3
    assert not parts.exists()
    a = _sorted(read_artifact(tmp_path / "a.parquet", "samples"), "sample_id")
    b = _sorted(read_artifact(tmp_path / "b.parquet", "samples"), "sample_id")
    assert len(a) == 16 * 3
    assert a == b  # every column: samples are seeded per batch


def test_sampling_parts_of_other_settings_need_force(tmp_path, prompts16, tiny_model, monkeypatch):
    import dno_data.generation.hf as generation
    from dno_data.stages.sample import SampleConfig, run

    real = generation.HFGenerator.generate
    calls = []

    def crash_after_one(self, *a, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise Crash()
        return real(self, *a, **kw)

    monkeypatch.setattr(generation.HFGenerator, "generate", crash_after_one)
    base = dict(prompts=prompts16, output=tmp_path / "s.parquet", model=tiny_model, k=2, max_new_tokens=4,
                batch_size=8, threads=1)
    with pytest.raises(Crash):
        run(SampleConfig.from_options(**base))
    monkeypatch.setattr(generation.HFGenerator, "generate", real)
    with pytest.raises(DnoError, match="--force"):
        run(SampleConfig.from_options(**{**base, "k": 1}))
    run(SampleConfig.from_options(**{**base, "k": 1, "force": True}))
    rows = read_artifact(tmp_path / "s.parquet", "samples").to_pylist()
    assert len(rows) == 16 and {r["sample_index"] for r in rows} == {0}


def test_teacher_error_leaves_no_parts(tmp_path, monkeypatch):
    from dno_data.stages.prompts import PromptsConfig
    from dno_data.stages.prompts import run as prompts_run
    from dno_data.stages.sample import SampleConfig, run

    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(4))
    no_ref = prompts_run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet"))
    with pytest.raises(DnoError):
        run(SampleConfig.from_options(prompts=no_ref, output=tmp_path / "t.parquet", teacher="reference"))
    assert not (tmp_path / "t.parquet.parts").exists()
    fixed = prompts_run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))
    run(SampleConfig.from_options(prompts=fixed, output=tmp_path / "t.parquet", teacher="reference"))


def test_teacher_only_sampling(tmp_path, prompts16):
    from dno_data.stages.sample import SampleConfig, run

    run(SampleConfig.from_options(prompts=prompts16, output=tmp_path / "t.parquet", teacher="reference", batch_size=5))
    rows = read_artifact(tmp_path / "t.parquet", "samples").to_pylist()
    assert len(rows) == 16
    assert all(r["source"] == "teacher" and r["response"] == r["reference"] for r in rows)
    # each sample carries its n-gram repetition ratio, measured once here for every `dno pairs`
    from dno_data.repetition import repetition_ratios

    assert [r["repetition"] for r in rows] == repetition_ratios(r["response"] for r in rows)
    assert None not in [r["repetition"] for r in rows]


# ---------------------------------------------------------------- judging

def _teacher_samples(tmp_path, prompts16):
    from dno_data.stages.sample import SampleConfig, run

    return run(SampleConfig.from_options(prompts=prompts16, output=tmp_path / "samples.parquet", teacher="reference"))


def test_judging_resumes_after_a_crash(tmp_path, prompts16, monkeypatch):
    from dno_data.judges import python_fn as judges
    from dno_data.stages.judge import JudgeConfig, run

    samples = _teacher_samples(tmp_path, prompts16)
    run(JudgeConfig.from_options(samples=samples, output=tmp_path / "a.parquet", judge="oracle:addition", prompts_per_part=2))

    real = judges.PointwiseJudge.judge
    calls = []

    def die_in_part_two(self, group):
        calls.append(group.prompt_id)
        if len(calls) == 3:  # first group of the 2nd part (2 prompts per part)
            raise SystemExit("killed")
        return real(self, group)

    monkeypatch.setattr(judges.PointwiseJudge, "judge", die_in_part_two)
    with pytest.raises(SystemExit):
        run(JudgeConfig.from_options(samples=samples, output=tmp_path / "b.parquet", judge="oracle:addition", prompts_per_part=2))
    assert not (tmp_path / "b.parquet").exists()
    assert [p.name for p in (tmp_path / "b.parquet.parts").glob("part-*.parquet")] == ["part-000000.parquet"]

    calls.clear()
    monkeypatch.setattr(judges.PointwiseJudge, "judge", lambda self, g: (calls.append(g.prompt_id), real(self, g))[1])
    run(JudgeConfig.from_options(samples=samples, output=tmp_path / "b.parquet", judge="oracle:addition", prompts_per_part=2))
    assert len(calls) == 14  # 2 of 16 prompts were already judged
    b = read_artifact(tmp_path / "b.parquet", "judgments")
    ids = b["judgment_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 16
    assert _sorted(b, "judgment_id") == _sorted(read_artifact(tmp_path / "a.parquet", "judgments"), "judgment_id")
    assert not (tmp_path / "b.parquet.parts").exists()


# ---------------------------------------------------------------- training

@pytest.fixture
def pairs_file(tmp_path):
    """12 pairs over 12 prompts: the right sum against a wrong one."""
    from conftest import pairs_row
    from dno_data.artifacts import write_artifact

    rows = []
    for i, r in enumerate(problem_rows(12)):
        a, b = r["prompt"].split("+")
        rows.append(pairs_row(f"p{i}", f"c{i}", f"r{i}", r["reference"], str(int(r["reference"]) + 1),
                              prompt_text=r["prompt"] + "="))
        rows[-1]["messages"] = [{"role": "user", "content": r["prompt"]}]
    return write_artifact(rows, tmp_path / "pairs.parquet", "pairs", None)


def _train_cfg(pairs, model, out, **kw):
    from dno_data.stages.train import TrainConfig

    return TrainConfig.from_options(pairs=pairs, model=model, output=out, batch_size=2, learning_rate=1e-3, max_length=32,
                       save_every=1, threads=1, **kw)


def test_training_resumes_at_the_saved_step(tmp_path, tiny_model, pairs_file, monkeypatch, capsys):
    import torch
    from safetensors.torch import load_file

    import dno_data.losses as losses
    from dno_data.stages.train import run

    run(_train_cfg(pairs_file, tiny_model, tmp_path / "a"))
    full = json.loads((tmp_path / "a" / "dno-manifest.json").read_text())["metrics"]
    assert full["steps"] == 6  # 12 pairs / batch 2

    real = losses.dno_loss
    calls = []

    def crash_on_third(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise Crash("killed at step 3")
        return real(*a, **kw)

    monkeypatch.setattr(losses, "dno_loss", crash_on_third)
    with pytest.raises(Crash):
        run(_train_cfg(pairs_file, tiny_model, tmp_path / "b"))
    partial = tmp_path / "b.partial"
    assert not (tmp_path / "b").exists()
    assert sorted(p.name for p in partial.glob("state-*")) == ["state-000002"]  # older states are removed
    assert json.loads((partial / "state-000002" / "progress.json").read_text())["step"] == 2
    assert (partial / "ref_logps.parquet").exists()

    monkeypatch.setattr(losses, "dno_loss", real)
    capsys.readouterr()
    run(_train_cfg(pairs_file, tiny_model, tmp_path / "b"))
    out = capsys.readouterr()
    assert "resuming training at step 2/6" in out.out + out.err
    assert "reference log-probs: resumed" in out.out + out.err
    resumed = json.loads((tmp_path / "b" / "dno-manifest.json").read_text())["metrics"]
    assert resumed["steps"] == full["steps"]
    assert len((tmp_path / "b.records" / "train_log.jsonl").read_text().splitlines()) == 6
    assert not partial.exists()
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], abs=1e-6)


def test_training_state_of_other_settings_needs_force(tmp_path, tiny_model, pairs_file, monkeypatch):
    import dno_data.losses as losses
    from dno_data.stages.train import run

    real = losses.dno_loss
    calls = []

    def crash_on_second(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise Crash()
        return real(*a, **kw)

    monkeypatch.setattr(losses, "dno_loss", crash_on_second)
    with pytest.raises(Crash):
        run(_train_cfg(pairs_file, tiny_model, tmp_path / "c"))
    monkeypatch.setattr(losses, "dno_loss", real)
    with pytest.raises(DnoError, match="--force"):
        run(_train_cfg(pairs_file, tiny_model, tmp_path / "c", beta=0.05))
    run(_train_cfg(pairs_file, tiny_model, tmp_path / "c", beta=0.05, force=True))
    manifest = json.loads((tmp_path / "c" / "dno-manifest.json").read_text())
    assert manifest["options"]["beta"] == 0.05 and manifest["metrics"]["steps"] == 6


def test_a_crash_while_saving_state_resumes_from_the_last_whole_state(tmp_path, tiny_model, pairs_file,
                                                                        monkeypatch):
    """A state and its progress are one unit: a save cut short leaves the previous state in charge."""
    import torch
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from dno_data.stages.train import run

    run(_train_cfg(pairs_file, tiny_model, tmp_path / "a"))
    real = Accelerator.save_state
    saves = []

    def die_in_third_save(self, output_dir=None, **kw):
        saves.append(output_dir)
        if len(saves) == 3:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")
            raise Crash("killed while saving the state of step 3")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", die_in_third_save)
    with pytest.raises(Crash):
        run(_train_cfg(pairs_file, tiny_model, tmp_path / "b"))
    monkeypatch.setattr(Accelerator, "save_state", real)
    partial = tmp_path / "b.partial"
    assert sorted(p.name for p in partial.glob("state-*")) == ["state-000002"]
    run(_train_cfg(pairs_file, tiny_model, tmp_path / "b"))
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert len((tmp_path / "b.records" / "train_log.jsonl").read_text().splitlines()) == 6


@pytest.mark.parametrize("damage", ["ref_logps", "state"])
def test_damaged_unfinished_work_is_an_error_that_force_recovers(tmp_path, tiny_model, pairs_file, monkeypatch,
                                                                  damage):
    import dno_data.losses as losses
    from dno_data.stages.train import run

    real, calls = losses.dno_loss, []

    def crash_on_third(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise Crash()
        return real(*a, **kw)

    monkeypatch.setattr(losses, "dno_loss", crash_on_third)
    with pytest.raises(Crash):
        run(_train_cfg(pairs_file, tiny_model, tmp_path / "c"))
    monkeypatch.setattr(losses, "dno_loss", real)
    partial = tmp_path / "c.partial"
    if damage == "ref_logps":
        target = partial / "ref_logps.parquet"
    else:
        target = next(p for p in (partial / "state-000002").iterdir() if p.name.startswith("optimizer"))
    target.write_bytes(target.read_bytes()[:20])
    with pytest.raises(DnoError, match="--force"):
        run(_train_cfg(pairs_file, tiny_model, tmp_path / "c"))
    run(_train_cfg(pairs_file, tiny_model, tmp_path / "c", force=True))
    assert json.loads((tmp_path / "c" / "dno-manifest.json").read_text())["metrics"]["steps"] == 6
    assert not partial.exists()


# ---------------------------------------------------------------- sampling: a real kill (openai backend)

def test_sampling_killed_and_resumed_equals_uninterrupted(tmp_path, prompts16, tiny_model):
    """SIGKILL a `dno sample --backend openai` process mid-run: the rerun asks only for the prompts not
    yet written, and the file equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import FAKE_SERVER_SAFETY, ROOT
    from support.fake_openai import FakeOpenAIServer
    from dno_data.stages.sample import SampleConfig, run

    def cfg(out, url, concurrency):
        return SampleConfig.from_options(prompts=prompts16, output=tmp_path / out, model="fake", backend="openai", base_url=url,
                            tokenizer=tiny_model, k=2, batch_size=2, concurrency=concurrency, max_retries=0,
                            teacher="reference")  # 16 prompts -> 8 parts of 2 prompts x 2 samples

    with FakeOpenAIServer(**{**FAKE_SERVER_SAFETY, "max_seconds": 120}, latency=0.25) as srv:
        run(cfg("a.parquet", srv.base_url, 8))
        assert srv.stats.chat_requests == 32
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        args = [sys.executable, "-m", "stages.cli", "sample", prompts16, "-o", tmp_path / "b.parquet", "--model", "fake",
                "--backend", "openai", "--base-url", srv.base_url, "--tokenizer", tiny_model, "-k", "2",
                "--batch-size", "2", "--concurrency", "1", "--max-retries", "0", "--teacher", "reference"]
        proc = subprocess.Popen([str(a) for a in args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        parts = tmp_path / "b.parquet.parts"
        try:
            deadline = time.monotonic() + 60
            while len(list(parts.glob("part-*.parquet"))) < 2:  # each part: 4 requests x 0.25 s, one at a time
                assert proc.poll() is None and time.monotonic() < deadline, "the sample process ended early"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert not (tmp_path / "b.parquet").exists()
        done = len(list(parts.glob("part-*.parquet")))
        assert 2 <= done < 8
        before = srv.stats.chat_requests
        run(cfg("b.parquet", srv.base_url, 8))  # concurrency is operational: the same run resumes
        assert srv.stats.chat_requests - before == (16 - 2 * done) * 2  # only the prompts not yet written
    assert not parts.exists()
    a = _sorted(read_artifact(tmp_path / "a.parquet", "samples"), "sample_id")
    b = _sorted(read_artifact(tmp_path / "b.parquet", "samples"), "sample_id")
    assert len(a) == 16 * 3 and a == b


def test_sampling_resumed_in_other_batches_equals_uninterrupted(tmp_path, prompts16, tiny_model, monkeypatch):
    """A prompt's samples are seeded by its key, so they do not depend on the batch they fall in."""
    from dno_data.stages.sample import SampleConfig, run

    run(SampleConfig.from_options(prompts=prompts16, output=tmp_path / "a.parquet", model=tiny_model, k=2, max_new_tokens=4,
                     batch_size=16, threads=1, temperature=1.0))
    run(SampleConfig.from_options(prompts=prompts16, output=tmp_path / "b.parquet", model=tiny_model, k=2, max_new_tokens=4,
                     batch_size=3, threads=1, temperature=1.0))
    a = _sorted(read_artifact(tmp_path / "a.parquet", "samples"), "sample_id")
    b = _sorted(read_artifact(tmp_path / "b.parquet", "samples"), "sample_id")
    assert [r["response"] for r in a] == [r["response"] for r in b]
    assert len({r["response"] for r in a}) > 4  # really sampled, not one greedy answer
