"""`dno report`: the HTML page rendered from a tiny hand-built run, its numbers and the best iterate."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import write_example
from dno_data.errors import DnoError
from dno_data.report import best_iterate, collect_run, write_report
from test_queries import _eval, build_run

# eval rows: iteration 0 wins 2 of 10, iteration 1 wins 8 of 10, iteration 2 wins 7 of 10 (same prompts)
WINS = {0: [1, 1, 0, 0, 0, 0, 0, 0, 0, 0], 1: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], 2: [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}


def _write_evals(run: Path, wins=WINS):
    for t, ws in wins.items():
        write_example(run / f"iter-{t:02d}" / "eval.parquet", "eval", [
            {**_eval(f"e{i}", float(w), "teacher answer", bool(w), score=6.0 if w else 2.0, response="x" * (5 + i)),
             "model": f"{run.name}/iter-{t:02d}/checkpoint" if t else "models/sft"}
            for i, w in enumerate(ws)])


def _write_train_log(run: Path, t: int, losses):
    records = run / f"iter-{t:02d}" / "checkpoint.records"
    records.mkdir(parents=True, exist_ok=True)
    (records / "train_log.jsonl").write_text("".join(
        json.dumps({"step": i + 1, "lr": 1e-3, "loss": x, "reward_accuracy": 0.5 + i / 10, "margin": 0.1 * i}) + "\n"
        for i, x in enumerate(losses)))


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> Path:
    run = build_run(tmp_path_factory.mktemp("rep") / "demo")
    _write_evals(run)
    _write_train_log(run, 1, [0.69, 0.5, 0.4])
    _write_train_log(run, 2, [0.6, 0.3])
    # a judge cache holding the two calls iteration 1 made (k2, k3); k1 was a cache hit
    (run / "cache").mkdir()
    db = sqlite3.connect(run / "cache" / "judge.sqlite")
    db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, model TEXT, content TEXT, finish_reason TEXT, "
               "logprobs TEXT, input_tokens INTEGER, output_tokens INTEGER, created_at REAL)")
    db.executemany("INSERT INTO calls VALUES (?, ?, '', 'stop', NULL, ?, ?, 0)",
                   [("k1", "gpt-4o", 999, 999), ("k2", "gpt-4o", 1000, 200), ("k3", "gpt-4o", 3000, 300)])
    db.commit()
    db.close()
    return run


def test_collect_run_numbers(report_run):
    d = collect_run(report_run, resamples=500)
    by = {r.iteration: r for r in d.results}
    assert sorted(by) == [0, 1, 2]
    assert by[1].winrate.value == pytest.approx(0.8) and by[1].winrate.low < 0.8 < by[1].winrate.high
    assert by[1].accuracy.value == pytest.approx(0.8)
    assert by[0].score.value == pytest.approx(2.8)  # 2 x 6 + 8 x 2 over 10
    assert by[1].model == "demo/iter-01/checkpoint" and by[0].model == "models/sft"
    assert d.train_logs[2][-1]["loss"] == 0.3
    # gpt-4o at $2.50 / $10 per 1M tokens: k2 + k3 = 4000 in, 500 out
    assert d.costs == [{"iteration": 1, "judge": "sc", "calls_made": 2, "input_tokens": 4000, "cached_input_tokens": 0,
                        "output_tokens": 500, "batch_calls": 0, "cost_usd": 0.015, "cost_usd_without_prefix_reuse": 0.015,
                        "note": ""}]


def test_costs_bill_cached_prefixes_at_the_cached_price(report_run, tmp_path):
    """A cache that recorded cached tokens: they are billed at gpt-4o's cached-input price ($1.25 per 1M)."""
    from dno_data.openai_api.call_cache import CallCache

    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    CallCache(run / "cache" / "judge.sqlite").close()  # opening it adds the cached_tokens column
    db = sqlite3.connect(run / "cache" / "judge.sqlite")
    db.execute("UPDATE calls SET cached_tokens = 2048 WHERE key = 'k3'")
    db.commit()
    db.close()
    (cost,) = collect_run(run, resamples=200).costs
    assert cost["cached_input_tokens"] == 2048
    assert cost["cost_usd_without_prefix_reuse"] == 0.015
    assert cost["cost_usd"] == round(0.015 - 2048 * (2.5 - 1.25) / 1e6, 4)


def test_costs_bill_batch_answers_at_the_batch_price(report_run, tmp_path):
    """A call the Batch API answered (the cache records it) is priced at the table's _batch_factor (0.5) times the
    interactive price; the others at the interactive price. The cache marks batch answers when it stores them."""
    from dno_data.openai_api.call_cache import CachedCall, CallCache

    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    with sqlite3.connect(run / "cache" / "judge.sqlite") as db:
        db.execute("DELETE FROM calls WHERE key = 'k3'")
    cache = CallCache(run / "cache" / "judge.sqlite")
    cache.put("k3", "gpt-4o", CachedCall("", "stop", None, 3000, 300), batch=True)  # as dno_data.openai_api.batch
    cache.close()
    (cost,) = collect_run(run, resamples=200).costs
    k2, k3 = (1000 * 2.5 + 200 * 10.0) / 1e6, (3000 * 2.5 + 300 * 10.0) / 1e6
    assert cost["batch_calls"] == 1 and cost["cost_usd"] == round(k2 + 0.5 * k3, 4) == 0.0097
    assert cost["cost_usd_without_prefix_reuse"] == cost["cost_usd"]


def test_best_iterate_and_noise(report_run):
    d = collect_run(report_run, resamples=500)
    best = best_iterate(d.results, "winrate", resamples=500)
    assert best.best.iteration == 1 and best.runner_up.iteration == 2
    assert best.within_noise  # 8/10 vs 7/10 on the same prompts
    assert "paired bootstrap over 10 shared prompts" in best.how
    clear = best_iterate([r for r in d.results if r.iteration != 2], "winrate", resamples=500)
    assert clear.best.iteration == 1 and not clear.within_noise  # 8/10 vs 2/10
    assert "beyond noise" in clear.sentence()
    with pytest.raises(DnoError, match="--metric 'nope'"):
        best_iterate(d.results, "nope")


def test_report_page(report_run, tmp_path):
    out = tmp_path / "r" / "report.html"
    rep = write_report([report_run], out, metric="accuracy", resamples=300)
    page = out.read_text()
    for title in ("Held-out results", "Best iterate", "Pair types", "Length drift", "position bias",
                  "Judge calls, cache hits and cost", "Training curves", "Intransitive cycles",
                  "Agreement between judges"):
        assert title in page, title
    # numbers from the run: win-rates with intervals, pair shares, cost, the best checkpoint
    assert re.search(r"80\.0 % \[\d+\.\d, \d+\.\d\]", page)
    assert "66.7" in page and "33.3" in page  # iteration 1's pair types
    assert "0.015" in page  # dollars spent on judge calls
    assert "Best iterate by accuracy: demo iteration 1 (demo/iter-01/checkpoint)" in page
    assert "within noise" in page
    # self-contained: plots embedded, nothing fetched
    assert page.count('src="data:image/png;base64,') == 5
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert sorted(p.name for p in rep.pngs) == ["report-eval.png", "report-judge.png", "report-length_drift.png",
                                                "report-pair_types.png", "report-training.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in rep.pngs)


def test_report_without_a_teacher_says_accuracy_is_na(tmp_path):
    run = tmp_path / "r2"
    write_example(run / "prompts.parquet", "prompts")
    write_example(run / "iter-00" / "eval.parquet", "eval", [_eval("e1", None, None, None, score=3.0),
                                                              _eval("e2", None, None, None, score=5.0)])
    rep = write_report([run], run / "report.html", metric="score", resamples=100)
    page = (run / "report.html").read_text()
    assert "n/a" in page and "Best iterate by mean score: r2 iteration 0" in page
    assert "No other checkpoint was evaluated" in page
    assert [p.name for p in rep.pngs] == ["report-eval.png", "report-length_drift.png"]  # eval answers only
    assert "No API calls" in page


def test_cli_report_two_runs(report_run, tmp_path, cli):
    other = tmp_path / "other"
    write_example(other / "prompts.parquet", "prompts")
    _write_evals(other, {0: [0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 1: [1] * 10})
    proc = cli("report", report_run, other, "-o", tmp_path / "both.html", "--resamples", "200")
    assert proc.returncode == 0, proc.stderr
    assert "Best iterate by win-rate vs teacher: other iteration 1" in proc.stderr
    page = (tmp_path / "both.html").read_text()
    assert "<th class=\"t\">run</th>" in page and ">other<" in page and ">demo<" in page
    bad = cli("report", report_run, "--metric", "nope")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --metric 'nope'") and "Traceback" not in bad.stderr
    missing = cli("report", tmp_path / "nope")
    assert missing.returncode == 1 and "no such run folder" in missing.stderr


def test_report_of_a_run_not_evaluated_yet(tmp_path):
    write_example(tmp_path / "prompts.parquet", "prompts")
    rep = write_report([tmp_path], tmp_path / "report.html", resamples=50)
    assert rep.best is None and rep.pngs == []
    assert "No evaluated checkpoint yet" in (tmp_path / "report.html").read_text()


def test_report_on_a_folder_that_is_not_a_run_is_one_line_and_writes_nothing(tmp_path, tiny_model, cli):
    """A model folder, or a folder of other files, is not a run: one line, and no empty report left in it."""
    other = tmp_path / "data"
    other.mkdir()
    write_example(other / "prompts-copy.parquet", "prompts")  # a dno file, but not where a run keeps it
    for folder in (tiny_model, other):
        before = sorted(p.name for p in folder.iterdir())
        proc = cli("report", folder)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"error: {folder}: no artifacts") and "Traceback" not in proc.stderr
        assert sorted(p.name for p in folder.iterdir()) == before


def test_just_report_runs_dno_report_on_a_run_relative_to_the_callers_folder(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    if shutil.which("just") is None:
        pytest.skip("just is not installed")
    run = build_run(tmp_path / "work" / "runs" / "demo")
    _write_evals(run)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dno").write_text(f'#!/bin/sh\nexec {sys.executable} -m stages.cli "$@"\n')
    (bin_dir / "dno").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["just", "--justfile", str(ROOT / "justfile"), "run=runs/demo", "report"], cwd=tmp_path / "work",
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (run / "report.html").is_file() and "written: runs/demo/report.html" in r.stderr


def test_the_page_template_escapes_every_value():
    """The page is a Jinja template with autoescape: a judge spec or an error message is text, never markup."""
    from dno_data.report import html_table

    table = html_table([{"judge": "python:m:f<script>alert(1)</script>", "share": 0.25, "error": None}])
    assert "<script" not in table and "&lt;script&gt;alert(1)&lt;/script&gt;" in table
    assert '<th class="t">judge</th>' in table and "<td class=\"\">0.25</td>" in table and "—" in table
    assert html_table([]) == '<p class="note">nothing to show</p>'
