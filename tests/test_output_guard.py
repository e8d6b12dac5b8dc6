"""-o replaces only what its own command wrote: every command against every wrong target.

Each case: exit 1, one `error:` line naming the target, no traceback, the target unchanged
(bytes, inode, type) and nothing left behind; then the same command with a new -o succeeds,
and again over its own output. The table runs the commands in this process (CliRunner); a few
cases run the real `dno` process too (hangs on pipes end there in a timeout, not forever).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import pairs_row, prompt_row, sample_row, score_row, write_example

O = "{out}"  # the -o placeholder in the commands below

COMMANDS = {
    "prompts": ["prompts", "src.jsonl", "-o", O],
    "sample": ["sample", "prompts.parquet", "--model", "model", "--split", "all", "-k", "1", "--max-new-tokens", "2",
               "-o", O],
    "merge": ["merge", "shard.parquet", "-o", O],
    "judge": ["judge", "samples.parquet", "--judge", "oracle:addition", "-o", O],
    "pairs": ["pairs", "judgments.parquet", "samples.parquet", "-o", O],
    "eval": ["eval", "prompts.parquet", "--model", "model", "--judge", "oracle:addition", "--max-new-tokens", "2",
             "-o", O],
    "train": ["train", "pairs.parquet", "--model", "model", "--batch-size", "1", "--max-length", "16",
              "--max-steps", "1", "-o", O],
    "sft": ["sft", "samples.parquet", "--model", "model", "--source", "teacher", "--batch-size", "1",
            "--max-length", "16", "--max-steps", "1", "-o", O],
    "export": ["export", "pairs.parquet", "--force", "-o", O],  # --force replaces only an earlier export
    "export-dataset": ["export", "pairs.parquet", "--format", "hf-dataset", "--force", "-o", O],
    "report": ["report", "run", "--resamples", "10", "-o", O],
    "sql": ["sql", "--run", "run", "SELECT 1 AS x", "--format", "csv", "-o", O],
    "import-gguf": ["model", "import-gguf", "fake.gguf", "--force", "-o", O],
}

# a new -o per command for the corrected run
GOOD = {"prompts": "prompts.parquet", "sample": "samples.parquet", "merge": "samples.parquet",
        "judge": "judgments.parquet", "pairs": "pairs.parquet", "eval": "eval.parquet",
        "train": "checkpoint", "sft": "checkpoint", "export": "dpo.jsonl", "export-dataset": "dpo",
        "report": "report.html", "sql": "x.csv", "import-gguf": "model"}

# another kind's artifact (never the command's own input)
OTHER_ARTIFACT = {"prompts": "samples.parquet", "sample": "judgments.parquet", "merge": "pairs.parquet",
                  "judge": "pairs.parquet", "pairs": "eval.parquet", "eval": "samples.parquet",
                  "train": "samples.parquet", "sft": "pairs.parquet", "export": "samples.parquet",
                  "export-dataset": "samples.parquet", "report": "run/iter-01/samples.parquet",
                  "sql": "run/iter-01/samples.parquet", "import-gguf": "samples.parquet"}

TARGETS = {
    "other-artifact": None,  # OTHER_ARTIFACT
    "checkpoint": "ckpt",  # a checkpoint `dno train` wrote (train: one of `dno sft`)
    "model-folder": "other-model",  # an HF model folder dno did not write
    "judge-cache": "cache/judge.sqlite",
    "user-file": "data.jsonl",
    "symlink": "link.jsonl",
    "fifo": "pipe.jsonl",
    "device": "null.jsonl",  # a character device (1, 3), /dev/null's twin; skipped where none can be made
}


def _target(command: str, target: str) -> str:
    if target == "other-artifact":
        return OTHER_ARTIFACT[command]
    if target == "checkpoint" and command == "train":
        return "sft-ckpt"
    return TARGETS[target]


# ---------------------------------------------------------------- the world the commands run in

def _invoke(args, timeout: float = 120, pipes=()):
    """The `dno` app in this process. A call still running after `timeout` seconds is taken to
    be blocked on one of `pipes`: their other end is opened and closed until the call returns,
    and the case fails."""
    from typer.testing import CliRunner

    from stages.cli import app

    done, blocked = threading.Event(), threading.Event()

    def watchdog():
        if done.wait(timeout):
            return
        blocked.set()
        while not done.is_set():
            for pipe in pipes:
                try:
                    fd = os.open(pipe, os.O_RDWR | os.O_NONBLOCK)
                except OSError:
                    continue
                time.sleep(0.2)
                os.close(fd)
            done.wait(0.2)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        done.set()
        thread.join()
    assert not blocked.is_set(), f"dno {' '.join(map(str, args))}: blocked for {timeout} s (on a pipe?)"
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    w = tmp_path_factory.mktemp("guard")
    cwd = os.getcwd()
    os.chdir(w)
    try:
        (w / "src.jsonl").write_text('{"prompt": "1+2", "reference": "3"}\n')
        write_example(w / "prompts.parquet", "prompts",
                      [prompt_row("p1", content="12+34", reference="46"),
                       prompt_row("p2", partition=None, split="eval", content="1+2", reference="3")])
        samples = [sample_row("s1", "p1", "46", reference="46"), sample_row("s2", "p1", "1", index=1, reference="46"),
                   sample_row("t1", "p1", "46", source="teacher", reference="46")]
        write_example(w / "samples.parquet", "samples", samples)
        write_example(w / "judgments.parquet", "judgments", [score_row("s1", "p1", 6.0), score_row("s2", "p1", 1.0)])
        write_example(w / "pairs.parquet", "pairs", [pairs_row("p1", "s1", "s2", "46", "1", prompt_text="12+34=")])
        write_example(w / "eval.parquet", "eval")
        for name in ("prompts", "samples", "judgments", "pairs"):
            dest = w / "run" / ("" if name == "prompts" else "iter-01") / f"{name}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(w / f"{name}.parquet", dest)
        shutil.copytree(tiny_model, w / "model")
        shutil.copytree(tiny_model, w / "other-model")
        (w / "cache").mkdir()
        with sqlite3.connect(w / "cache" / "judge.sqlite") as con:
            con.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, answer TEXT)")
            con.execute("INSERT INTO calls VALUES ('k', 'a paid answer')")
        con.close()
        (w / "data.jsonl").write_text('{"mine": "three weeks of notes"}\n')
        (w / "link.jsonl").symlink_to("data.jsonl")
        os.mkfifo(w / "pipe.jsonl")
        if os.geteuid() == 0:
            os.mknod(w / "null.jsonl", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (w / "fake.gguf").write_bytes(b"GGUF" + b"\0" * 60)
        made = _invoke(["sample", "prompts.parquet", "--model", "model", "--split", "all", "-k", "1",
                        "--max-new-tokens", "2", "--shard", "0/1", "-o", "shard.parquet"])
        assert made.exit_code == 0, made.stderr
        made = _invoke([a if a != O else "ckpt" for a in COMMANDS["train"]])
        assert made.exit_code == 0, made.stderr
        shutil.copytree(w / "ckpt", w / "sft-ckpt")
        manifest = json.loads((w / "sft-ckpt" / "dno-manifest.json").read_text())
        manifest["lineage"]["stage"] = "sft"
        (w / "sft-ckpt" / "dno-manifest.json").write_text(json.dumps(manifest))
    finally:
        os.chdir(cwd)
    return w


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(path: Path):
    """What is at `path`, never opening anything but a regular file."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("link", st.st_ino, os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("folder", st.st_ino, sorted((str(p.relative_to(path)),) + _state(p) for p in path.rglob("*")))
    if stat.S_ISREG(st.st_mode):
        return ("file", st.st_ino, st.st_size, _sha(path))
    return ("special", st.st_ino, stat.S_IFMT(st.st_mode), st.st_rdev)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line_error(result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.stderr, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


CASES = [(c, t) for c in COMMANDS for t in TARGETS]


@pytest.mark.parametrize("command,target", CASES, ids=[f"{c}-onto-{t}" for c, t in CASES])
def test_a_wrong_output_is_refused_and_left_as_it_was(world, monkeypatch, command, target):
    name = _target(command, target)
    path = world / name
    if not os.path.lexists(path):
        pytest.skip(f"{name}: cannot be made here (a device node needs root)")
    monkeypatch.chdir(world)
    before, listing = _state(path), _listing(world)
    result = _invoke([name if a == O else a for a in COMMANDS[command]], timeout=20, pipes=[world / "pipe.jsonl"])
    line = _one_line_error(result)
    assert name in line, line
    assert _state(path) == before
    assert _listing(world) == listing, f"left behind: {sorted(set(_listing(world)) - set(listing))}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "import-gguf"])
def test_the_corrected_command_succeeds_and_replaces_its_own_output(world, tmp_path, monkeypatch, command):
    """The same command with a new -o works, and works again over its own output (export: only with --force)."""
    monkeypatch.chdir(world)
    out = tmp_path / GOOD[command]
    args = [out if a == O else a for a in COMMANDS[command]]
    first = _invoke(args)
    assert first.exit_code == 0, (first.stderr, first.exception)
    assert out.exists()
    if command.startswith("export"):
        assert "--force" in _one_line_error(_invoke([a for a in args if a != "--force"]))
    again = _invoke(args)
    assert again.exit_code == 0, (again.stderr, again.exception)
    assert out.exists()


def test_the_table_covers_every_command_and_target():
    assert len(CASES) == 13 * 8


# ---------------------------------------------------------------- the real process

def _dno(*args, cwd: Path, timeout: int = 60):
    from conftest import run_cli

    try:
        return run_cli(*args, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dno {' '.join(map(str, args))}: still running after {timeout} s (blocked on a pipe?)")


def _cli_error(proc) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("args,target", [
    (["sql", "--run", "run", "SELECT 1 AS x", "--format", "csv", "-o", "cache/judge.sqlite"], "cache/judge.sqlite"),
    (["prompts", "src.jsonl", "-o", "run/iter-01/samples.parquet"], "run/iter-01/samples.parquet"),
    (["sql", "--run", "run", "SELECT 1 AS x", "-o", "pipe.jsonl"], "pipe.jsonl"),
    (["export", "pairs.parquet", "-o", "null.jsonl"], "null.jsonl"),
], ids=["sql-onto-the-judge-cache", "prompts-onto-samples", "sql-onto-a-pipe", "export-onto-a-device"])
def test_the_dno_process_refuses_the_issues_examples(world, args, target):
    path = world / target
    if not os.path.lexists(path):
        pytest.skip(f"{target}: cannot be made here")
    before, listing = _state(path), _listing(world)
    assert target in _cli_error(_dno(*args, cwd=world))
    assert _state(path) == before and _listing(world) == listing


@pytest.mark.parametrize("args", [
    ["prompts", "pipe.jsonl", "-o", "{tmp}/p.parquet"],
    ["judge", "pipe.jsonl", "--judge", "oracle:addition", "-o", "{tmp}/j.parquet"],
    ["export", "pipe.jsonl", "-o", "{tmp}/dpo.jsonl"],
    ["sql", "--run", "run", "--file", "pipe.jsonl"],
    ["pairs", "judgments.parquet", "samples.parquet", "--sql", "pipe.jsonl", "-o", "{tmp}/pairs.parquet"],
    ["sample", "prompts.parquet", "--model", "model", "--config", "pipe.jsonl", "-o", "{tmp}/s.parquet"],
], ids=["prompts", "judge", "export", "sql-file", "pairs-sql", "config"])
def test_a_pipe_as_an_input_never_blocks(world, tmp_path, args):
    proc = _dno(*[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=world, timeout=60)
    assert "pipe.jsonl" in _cli_error(proc)
    assert stat.S_ISFIFO(os.lstat(world / "pipe.jsonl").st_mode)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- two exports on one output

def test_an_output_that_appears_after_the_check_is_not_replaced(world, tmp_path, monkeypatch):
    """Two `dno export` with different flags on one -o: the second to finish is refused, the first's file stays."""
    import dno_data.export as export_lib

    monkeypatch.chdir(world)
    out = tmp_path / "dpo.jsonl"
    real = export_lib.preference_rows

    def meanwhile(*a, **kw):  # this export has passed its checks; another finishes first
        other = _dno("export", "pairs.parquet", "--string", "-o", out, cwd=world)
        assert other.returncode == 0, other.stderr
        return real(*a, **kw)

    monkeypatch.setattr(export_lib, "preference_rows", meanwhile)
    result = _invoke(["export", "pairs.parquet", "-o", out])
    line = _one_line_error(result)
    assert str(out) in line and "--force" in line
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["prompt"] == "12+34="  # the --string export's file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dpo.jsonl.dno.json", "dpo.jsonl"]


def test_two_exports_at_once_exactly_one_writes(world, tmp_path):
    out = tmp_path / "dpo.jsonl"
    from conftest import ROOT

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, "-m", "stages.cli", "export", "pairs.parquet", *flags, "-o", str(out)],
                              cwd=world, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for flags in ([], ["--string"])]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert loser.startswith("error: ") and loser.count("\n") == 1 and str(out) in loser
    winner_string = next(i for i, (code, _) in enumerate(results) if code == 0) == 1
    first = json.loads(out.read_text().splitlines()[0])
    assert isinstance(first["prompt"], str) == winner_string


# ---------------------------------------------------------------- the library: paths and atomic writes

@pytest.mark.parametrize("kind", ["prompts", "samples", "train", "model import-gguf", "export", "export-dataset",
                                  "report", "sql"])
def test_dev_null_is_never_an_output_nor_an_input(kind):
    """Checked without writing anything: the check alone refuses /dev/null (the table above writes to its twin)."""
    from dno_data.errors import DnoError
    from dno_data.paths import check_input, check_output, identify

    before = os.lstat("/dev/null")
    with pytest.raises(DnoError, match="/dev/null: is a character device"):
        check_output(Path("/dev/null"), kind=kind, replace_own=True)
    with pytest.raises(DnoError, match="/dev/null: is a character device"):
        check_input(Path("/dev/null"))
    assert identify("/dev/null").special
    after = os.lstat("/dev/null")
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)


def test_atomic_path_leaves_the_old_file_on_an_error_and_no_temporary(tmp_path):
    from dno_data.atomic import atomic_path

    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_swaps_a_folder_in_whole(tmp_path):
    from dno_data.atomic import atomic_path

    out = tmp_path / "folder"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_a_refused_publish_removes_the_temporary_file(tmp_path):
    from dno_data.errors import DnoError
    from dno_data.paths import write_output

    out = tmp_path / "x.csv"
    out.write_text("the user's own\n")
    with pytest.raises(DnoError, match="a file dno did not write"):
        write_output(out, "sql", lambda tmp: tmp.write_text("x\n1\n"))
    assert out.read_text() == "the user's own\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_write_artifact_replaces_only_its_own_kind(tmp_path):
    """The check again at the rename: even a caller that skipped check_output cannot replace another kind."""
    from dno_data.artifacts import write_artifact
    from dno_data.errors import DnoError

    path = write_example(tmp_path / "samples.parquet", "samples")
    before = _state(path)
    with pytest.raises(DnoError, match="is a samples artifact"):
        write_example(path, "prompts")
    assert _state(path) == before
    write_artifact([sample_row("s9", "p9", "9")], path, "samples", None)  # its own kind: replaced
    assert _state(path) != before and sorted(p.name for p in tmp_path.iterdir()) == ["samples.parquet"]


def test_a_sidecar_vouches_only_for_the_bytes_dno_wrote(tmp_path):
    from dno_data.errors import DnoError
    from dno_data.paths import identify, sidecar_path, write_output

    out = tmp_path / "result.csv"
    write_output(out, "sql", lambda tmp: tmp.write_text("x\n1\n"))
    assert identify(out).owner == "file:sql"
    write_output(out, "sql", lambda tmp: tmp.write_text("x\n2\n"))  # a rerun replaces its own result
    assert out.read_text() == "x\n2\n" and identify(out).owner == "file:sql"
    with pytest.raises(DnoError, match="is a file written by `dno sql`, not a file written by `dno report`"):
        write_output(out, "report", lambda tmp: tmp.write_text("<html>"))
    out.write_text("x\n2\n# my notes\n")  # edited by hand: the user's file now
    assert identify(out).owner is None
    with pytest.raises(DnoError, match="changed since `dno sql` wrote it"):
        write_output(out, "sql", lambda tmp: tmp.write_text("x\n3\n"))
    assert out.read_text() == "x\n2\n# my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [sidecar_path(out).name, "result.csv"]


def test_a_crash_between_the_sidecar_and_the_rename_keeps_the_old_file_dnos(tmp_path, monkeypatch):
    from dno_data.paths import identify, write_output

    out = tmp_path / "result.csv"
    write_output(out, "sql", lambda tmp: tmp.write_text("x\n1\n"))
    real = os.replace

    def crash(src, dst):  # the sidecar is written, the result's rename never happens
        if Path(dst) == out:
            raise OSError("power cut")
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_output(out, "sql", lambda tmp: tmp.write_text("x\n2\n"))
    monkeypatch.undo()
    assert out.read_text() == "x\n1\n" and identify(out).owner == "file:sql"
    write_output(out, "sql", lambda tmp: tmp.write_text("x\n3\n"))
    assert out.read_text() == "x\n3\n"


def test_folders_dno_writes_name_their_command(world, tmp_path, monkeypatch):
    """The export's datasets folder carries dno-manifest.json (datasets still loads it); a datasets
    folder without it, or a folder of another command, is refused even with --force."""
    from datasets import Dataset, load_from_disk

    from dno_data.errors import DnoError
    from dno_data.paths import check_output, identify

    monkeypatch.chdir(world)
    ours = tmp_path / "ours"
    assert _invoke(["export", "pairs.parquet", "--format", "hf-dataset", "-o", ours]).exit_code == 0
    assert identify(ours).owner == "folder:export" and len(load_from_disk(str(ours))) == 1
    theirs = tmp_path / "theirs"
    Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]}).save_to_disk(str(theirs))
    before = _state(theirs)
    line = _one_line_error(_invoke(["export", "pairs.parquet", "--format", "hf-dataset", "--force", "-o", theirs]))
    assert "is a datasets folder dno did not write" in line and _state(theirs) == before
    imported = tmp_path / "imported"
    imported.mkdir()
    (imported / "dno-manifest.json").write_text(json.dumps({"lineage": {"stage": "model import-gguf"}}))
    check_output(imported, kind="model import-gguf", replace_own=True)  # --force: its own folder
    with pytest.raises(DnoError, match="pass --force"):
        check_output(imported, kind="model import-gguf", replace_own=False)
    with pytest.raises(DnoError, match="not a checkpoint written by `dno train`"):
        check_output(imported, kind="train")
