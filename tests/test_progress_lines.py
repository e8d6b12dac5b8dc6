"""Progress a cluster's log can read: with stderr not a terminal (a file, as under Slurm or nohup),
every long local loop prints `what: done/total unit (pct), rate, elapsed, ETA` lines at
$DNO_PROGRESS_INTERVAL; on a terminal it draws a bar instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

LINE = r"^{what}: [\d,]+/[\d,]+ {unit} \(\d+ %\), [\d.]+ {unit}/s, \d+s elapsed"


def dno(*args, stderr_to, cwd, interval="0"):
    env = dict(os.environ, DNO_PROGRESS_INTERVAL=interval)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(stderr_to, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "stages.cli", *map(str, args)], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=300)
    text = stderr_to.read_text()
    assert proc.returncode == 0, text
    return text


def lines_of(text: str, what: str, unit: str) -> list[str]:
    return re.findall(LINE.format(what=re.escape(what), unit=unit) + ".*$", text, re.M)


@pytest.mark.e2e  # a whole command in a process of its own: the second tier
def test_sample_and_train_print_progress_lines_to_a_file(tmp_path, tiny_model, stage_prompts):
    from dno_data.stages.judge import JudgeConfig, run as judge
    from dno_data.stages.pairs import PairsConfig, run as pairs

    prompts = stage_prompts()
    log = dno("sample", prompts, "-o", tmp_path / "samples.parquet", "--model", tiny_model, "--partition", 1, "-k", 4,
              "--max-new-tokens", 4, "--teacher", "reference", "--batch-size", 2, "--temperature", 1.5,
              stderr_to=tmp_path / "sample.log", cwd=tmp_path)
    sample = lines_of(log, "sample", "prompts")
    assert len(sample) >= 3 and sample[-1].startswith("sample: 6/6 prompts (100 %)"), log
    assert "ETA" in sample[0] and "\r" not in log  # a line, not a bar redrawn in place

    judge(JudgeConfig.from_options(samples=tmp_path / "samples.parquet", output=tmp_path / "j.parquet",
                                   judge="oracle:addition"))
    pairs(PairsConfig.from_options(judgments=tmp_path / "j.parquet", samples=tmp_path / "samples.parquet",
                                   output=tmp_path / "pairs.parquet"))
    log = dno("train", tmp_path / "pairs.parquet", "--model", tiny_model, "-o", tmp_path / "ckpt", "--batch-size", 1,
              "--max-length", 32, stderr_to=tmp_path / "train.log", cwd=tmp_path)
    train, reference = lines_of(log, "train", "steps"), lines_of(log, "reference", "pairs")
    assert len(train) >= 2 and re.search(r", loss -?[\d.]+$", train[-1]) and "(100 %)" in train[-1], log
    assert reference and "(100 %)" in reference[-1], log
    assert "\r" not in log


def test_judge_eval_and_sft_print_progress_lines(tmp_path, tiny_model, stage_prompts, monkeypatch, capfd):
    from dno_data.stages.eval import EvalConfig, run as evaluate
    from dno_data.stages.judge import JudgeConfig, run as judge
    from dno_data.stages.sample import SampleConfig, run as sample
    from dno_data.stages.sft import SftConfig, run as sft

    monkeypatch.setenv("DNO_PROGRESS_INTERVAL", "0")
    prompts = stage_prompts()
    sample(SampleConfig.from_options(prompts=prompts, output=tmp_path / "s.parquet", model=tiny_model, partition=1, k=2,
                                     max_new_tokens=4, teacher="reference", batch_size=3))
    judge(JudgeConfig.from_options(samples=tmp_path / "s.parquet", output=tmp_path / "j.parquet",
                                   judge="oracle:addition", prompts_per_part=2))
    evaluate(EvalConfig.from_options(prompts=prompts, model=tiny_model, judge="oracle:addition", max_new_tokens=4,
                                     batch_size=2, output=tmp_path / "e.parquet"))
    sft(SftConfig.from_options(data=tmp_path / "s.parquet", model=tiny_model, output=tmp_path / "sft", source="teacher",
                               batch_size=2, max_steps=3, max_length=32))
    err = capfd.readouterr().err
    assert lines_of(err, "sample", "prompts")[-1].startswith("sample: 6/6 prompts (100 %)"), err
    assert len(lines_of(err, "judge", "prompts")) >= 3, err
    assert lines_of(err, "eval", "prompts")[-1].startswith("eval: 4/4 prompts (100 %)"), err
    assert lines_of(err, "sft", "steps")[-1].startswith("sft: 3/3 steps (100 %)"), err


@pytest.mark.e2e  # a whole command in a process of its own: the second tier
def test_a_terminal_gets_a_bar_not_lines(tmp_path, tiny_model, stage_prompts):
    pty = pytest.importorskip("pty")
    prompts = stage_prompts()
    import fcntl
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size (a new pty has 0x0)
    env = dict(os.environ, DNO_PROGRESS_INTERVAL="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("TQDM_DISABLE", None)  # conftest turns tqdm off for the suite
    proc = subprocess.Popen([sys.executable, "-m", "stages.cli", "sample", str(prompts), "-o", str(tmp_path / "s.parquet"),
                             "--model", str(tiny_model), "--partition", "1", "-k", "2", "--max-new-tokens", "4",
                             "--batch-size", "2"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    out = b""
    try:
        while True:  # read while it runs (a full terminal buffer would block it)
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child's end is closed, all read
                break
            if not chunk:
                break
            out += chunk
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(main)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "\r" in text and re.search(r"sample: +100%\|", text), text  # tqdm's bar, redrawn in place
    assert not lines_of(text.replace("\r\n", "\n"), "sample", "prompts"), text
