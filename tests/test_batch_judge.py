"""`dno judge --batch`: the OpenAI Batch API path against the local test server's files and batches endpoints.

A killed run resumes its batches by id and submits no request twice; answers fill the call cache;
failed, expired and refused requests are status rows; batches are split by the API's limits;
--dry-run prices at the batch rate. The CLI runs as real subprocesses where a kill is tested;
every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the fake OpenAI server needs aiohttp")

from conftest import FAKE_SERVER_SAFETY, cli_env, judge_groups, run_cli, write_judge_samples  # noqa: E402
from dno_data.artifacts import read_artifact  # noqa: E402
from support.fake_openai import FakeOpenAIServer, quality  # noqa: E402

SAFE = {**FAKE_SERVER_SAFETY, "max_seconds": 120}


def judge_args(samples: Path, out: Path, url: str, cache: Path, *extra) -> list[str]:
    return ["judge", str(samples), "-o", str(out), "--judge", "openai:m", "--base-url", url, "--cache", str(cache),
            "--timeout", "10", "--max-retries", "1", "--prompts-per-part", "4", *map(str, extra)]


def batch_args(samples, out, url, cache, *extra):
    return judge_args(samples, out, url, cache, "--batch", "--batch-poll", "0.1", *extra)


def scores_ok(out: Path, samples: Path) -> list[dict]:
    rows = read_artifact(out, "judgments").to_pylist()
    text = {r["sample_id"]: r["response"] for r in read_artifact(samples, "samples").to_pylist()}
    assert sorted(r["sample_id_a"] for r in rows) == sorted(text)
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["score"] == quality(text[r["sample_id_a"]])
    return rows


def test_batch_judges_like_the_interactive_path_and_fills_the_cache(tmp_path):
    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(10, third="plain"))
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(**SAFE) as srv:
        done = run_cli(*batch_args(samples, tmp_path / "b.parquet", srv.base_url, cache), cwd=tmp_path,
                       env={"OPENAI_API_KEY": ""})
        assert done.returncode == 0, done.stderr
        st = srv.stats
        assert st.chat_requests == 0 and st.batches_created == 1 and st.batch_requests == 10
        assert set(st.batch_custom_ids.values()) == {1}
        assert "cost of this run (batch price)" in done.stderr and "calls made" in done.stderr
        assert re.search(r"judge batch: 10/10 requests", done.stderr)  # the final progress line
        # a later run without --batch (another output, same requests) pays nothing: the cache holds them all
        again = run_cli(*judge_args(samples, tmp_path / "i.parquet", srv.base_url, cache), cwd=tmp_path,
                        env={"OPENAI_API_KEY": ""})
        assert again.returncode == 0, again.stderr
        assert srv.stats.chat_requests == 0 and srv.stats.batch_requests == 10
    batch_rows = scores_ok(tmp_path / "b.parquet", samples)
    cached_rows = scores_ok(tmp_path / "i.parquet", samples)
    assert not any(r["cached"] for r in batch_rows) and all(r["cached"] for r in cached_rows)
    key = lambda r: (r["judgment_id"], r["score"], r["call_key"])  # noqa: E731
    assert sorted(map(key, batch_rows)) == sorted(map(key, cached_rows))
    assert not (tmp_path / "b.parquet.parts").exists()
    with sqlite3.connect(cache) as db:  # the report prices these calls at the batch rate
        assert db.execute("SELECT count(*), sum(batch) FROM calls").fetchone() == (10, 10)


@pytest.mark.parametrize("when", ["before the create answer", "while polling"])
def test_killed_batch_run_resumes_by_id_and_submits_nothing_twice(tmp_path, when):
    """SIGKILL between submit and collect: at the worst moment (the batch exists on the server, its id never
    reached the client) and while polling. The rerun collects the same batch; every request was sent once."""
    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(12, third="plain"))
    out, cache = tmp_path / "judgments.parquet", tmp_path / "cache.sqlite"
    ledger = Path(str(out) + ".parts") / "batches.json"
    hold = {"batch_create_delay": 60} if when == "before the create answer" else {"batch_delay": 60}
    with FakeOpenAIServer(**SAFE, **hold) as srv:
        cmd = [sys.executable, "-m", "stages.cli", *batch_args(samples, out, srv.base_url, cache)]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if srv.stats.batches_created and (when != "while polling" or '"batch_id": "batch' in _read(ledger)):
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the judge ended before it could be killed: " + proc.stderr.read().decode()
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stderr.close()
        assert srv.stats.batches_created == 1 and not out.exists()
        if when == "before the create answer":
            assert '"batch_id": null' in _read(ledger)  # the id never reached the record
        srv.configure(batch_create_delay=0, batch_delay=0)
        # a run without --batch would pay again for the recorded requests: refused
        refused = run_cli(*judge_args(samples, out, srv.base_url, cache), cwd=tmp_path, env={"OPENAI_API_KEY": ""})
        assert refused.returncode == 1 and "rerun with --batch" in refused.stderr and srv.stats.chat_requests == 0
        if when == "while polling":  # the held batch ends now (its timer was set at its creation)
            _end_held_batches(srv)
        done = run_cli(*batch_args(samples, out, srv.base_url, cache), cwd=tmp_path, env={"OPENAI_API_KEY": ""},
                       timeout=120)
        assert done.returncode == 0, done.stderr
        st = srv.stats
    scores_ok(out, samples)
    assert st.batches_created == 1 and st.batch_requests == 12 and st.chat_requests == 0
    assert len(st.batch_custom_ids) == 12 and set(st.batch_custom_ids.values()) == {1}


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _end_held_batches(srv) -> None:
    """Run the batches the server holds (their batch_delay was long): what the provider does later."""
    for bid, status in srv.stats.batch_statuses.items():
        if status == "in_progress":
            srv.run_batch_now(bid)


def test_failed_expired_and_refused_requests_are_status_rows(tmp_path):
    """One batch fails part-way (two requests get a 500), one expires half done, one is refused whole;
    each request without an answer is an error row naming why, and the rerun sends only those again."""
    from dno_data.openai_api import batch as batch_api

    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(12, third="plain"))
    out, cache = tmp_path / "judgments.parquet", tmp_path / "cache.sqlite"
    with FakeOpenAIServer(**SAFE, batch_max_requests=4, script=["ok", "500", "ok", "500"],
                          batch_script=["ok", "expire", "fail"]) as srv:
        from dno_data.stages.judge import JudgeConfig, run

        cfg = JudgeConfig.from_options(samples=samples, output=out, judge="openai:m", base_url=srv.base_url,
                                       cache=cache, prompts_per_part=4, batch=True, batch_poll=0.1, max_retries=0,
                                       max_failure_rate=1.0)
        old = batch_api.MAX_REQUESTS
        batch_api.MAX_REQUESTS = 4  # the server's limit in this test: 12 requests make 3 batches
        try:
            run(cfg)
            rows = read_artifact(out, "judgments").to_pylist()
            by_call = {}
            for r in rows:
                by_call.setdefault(r["call_key"], set()).add((r["status"], (r["error"] or "").split(":")[0]))
            kinds = sorted(v for s in by_call.values() for v in s)
            assert kinds.count(("ok", "")) == 2 + 2  # batch 1: 2 of 4 answered; batch 2: the first half ran
            assert kinds.count(("error", "BatchRequestError 500")) == 2
            assert kinds.count(("error", "BatchExpired")) == 2
            assert kinds.count(("error", "BatchRejected")) == 4
            first = srv.stats
            assert first.batches_created == 3 and first.batch_requests == 8  # the refused batch's 4 never ran
            # rerun: only the 8 failed requests go out again (as new batches), and all succeed
            run(cfg)
        finally:
            batch_api.MAX_REQUESTS = old
        st = srv.stats
    scores_ok(out, samples)
    assert st.batches_created == 3 + 2 and st.batch_requests == 8 + 8
    assert sorted(st.batch_custom_ids.values()).count(2) == 4  # the 500s and the expired were asked again


def test_a_batch_is_split_by_the_apis_limits(tmp_path):
    """Over the requests limit (or the size limit) of one input file, the calls go out as several batches,
    each within the server's limits."""
    from dno_data.openai_api import batch as batch_api

    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(9, third="plain"))
    with FakeOpenAIServer(**SAFE, batch_max_requests=4, batch_max_bytes=4000) as srv:
        from dno_data.stages.judge import JudgeConfig, run

        cfg = JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge="openai:m",
                                       base_url=srv.base_url, no_cache=True, batch=True, batch_poll=0.1)
        old = batch_api.MAX_REQUESTS, batch_api.MAX_BYTES
        batch_api.MAX_REQUESTS, batch_api.MAX_BYTES = 4, 4000
        try:
            run(cfg)
        finally:
            batch_api.MAX_REQUESTS, batch_api.MAX_BYTES = old
        st = srv.stats
    scores_ok(cfg.output, samples)
    assert st.batches_created >= 3 and set(st.batch_statuses.values()) == {"completed"}
    assert st.batch_requests == 9 and set(st.batch_custom_ids.values()) == {1}


def test_dry_run_prices_at_the_batch_rate(tmp_path, capsys):
    from dno_data.stages.judge import JudgeConfig, run

    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(20, third="plain"))
    costs = {}
    for batch in (False, True):
        cfg = JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge="openai:gpt-4o",
                                       no_cache=True, dry_run=True, batch=batch, api_key_env="DNO_TEST_NO_KEY")
        run(cfg)
        err = capsys.readouterr().err
        [costs[batch]] = re.findall(r"estimated cost.*?\$([\d.,]+)", err)
        assert ("(batch price)" in err) == batch
    assert float(costs[True]) == pytest.approx(float(costs[False]) / 2, abs=1e-4)


def test_batch_prices_are_the_factor_times_every_price(tmp_path):
    from dno_data.errors import DnoError
    from dno_data.openai_api.costs import load_prices

    table = tmp_path / "prices.json"
    table.write_text('{"_batch_factor": 0.4, "a": [1.0, 2.0], "b": [1.0, 2.0, 0.5]}')
    assert load_prices(table, batch=True)["a"][:2] == pytest.approx((0.4, 0.8))
    assert load_prices(table, batch=True)["b"] == pytest.approx((0.4, 0.8, 0.2))
    assert load_prices(table)["b"] == (1.0, 2.0, 0.5)
    assert load_prices(batch=True)["gpt-4o"] == (1.25, 5.0, 0.625)  # the shipped table: half price
    table.write_text('{"a": [1.0]}')
    with pytest.raises(DnoError, match="--prices"):
        load_prices(table)


def test_batch_is_refused_for_a_judge_that_runs_here(tmp_path, cli):
    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(2, third="plain"))
    r = cli("judge", samples, "-o", tmp_path / "j.parquet", "--judge", "oracle:addition", "--batch")
    assert r.returncode == 1 and r.stderr.startswith("error: --batch") and "Traceback" not in r.stderr
    assert not (tmp_path / "j.parquet.parts").exists()
