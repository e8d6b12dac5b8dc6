"""The judge cache: a killed run pays nothing twice, concurrent runs share the bill, claims.

The CLI runs as real subprocesses (SIGKILL, two processes at once) against an in-process
FakeOpenAIServer on 127.0.0.1 with a max_seconds limit; every wait is bounded polling.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the fake OpenAI server needs aiohttp")

from conftest import FAKE_SERVER_SAFETY, ROOT, cli_env, judge_groups, run_cli, write_judge_samples  # noqa: E402
from dno_data.config import replace  # noqa: E402
from dno_data.openai_api.runner import ApiSettings, CallRunner  # noqa: E402
from dno_data.artifacts import read_artifact  # noqa: E402
from support.fake_openai import FakeOpenAIServer, quality  # noqa: E402
from dno_data.openai_api.call_cache import HOST, CachedCall, CallCache, scoped_key  # noqa: E402
from dno_data.judges import Candidate, Group, make_judge  # noqa: E402


def judge_cmd(samples: Path, out: Path, url: str, cache: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "stages.cli", "judge", str(samples), "-o", str(out), "--judge", "openai:m",
            "--base-url", url, "--cache", str(cache), "--timeout", "10", "--max-retries", "1", *map(str, extra)]


def cached_keys(cache: Path) -> set[str]:
    """Keys stored in the cache (read-only; empty while the file or table does not exist yet)."""
    if not cache.exists():
        return set()
    try:
        db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5)
        try:
            return {k for (k,) in db.execute("SELECT key FROM calls")}
        finally:
            db.close()
    except sqlite3.OperationalError:
        return set()


def asked_per_key(bodies: list[dict], rows: list[dict], samples: Path) -> Counter:
    """How often each call (cache key) was requested, from the request bodies the server saw.

    A rubric call is one prompt: the body is matched to its call by the question it shows.
    """
    question_of = {r["sample_id"]: r["messages"][0]["content"] for r in read_artifact(samples, "samples").to_pylist()}
    key_of = {question_of[r["sample_id_a"]]: r["call_key"] for r in rows}
    asked = Counter()
    for b in bodies:
        text = [m for m in b["messages"] if m["role"] == "user"][-1]["content"]
        [question] = re.findall(r"<question>\n(.*?)\n</question>", text, re.S)
        asked[key_of[question]] += 1
    return asked


def wait_quiet(srv, seconds: float = 0.3, limit: float = 10.0) -> int:
    """The server's chat request count once nothing is in flight and it stopped changing."""
    deadline = time.monotonic() + limit
    last, since = srv.stats.chat_requests, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        st = srv.stats
        if st.chat_requests != last or st.in_flight:
            last, since = st.chat_requests, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return last
    return srv.stats.chat_requests


def check_judgments(out: Path, samples: Path) -> list[dict]:
    rows = read_artifact(out, "judgments").to_pylist()
    by_id = {r["sample_id"]: r for r in read_artifact(samples, "samples").to_pylist()}
    assert sorted(r["sample_id_a"] for r in rows) == sorted(by_id)  # exactly one row per candidate
    assert len({r["judgment_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["score"] == quality(by_id[r["sample_id_a"]]["response"])
    assert not Path(str(out) + ".parts").exists()
    return rows


# ---------------------------------------------------------------- 5. crash and resume

def test_killed_judge_resumes_without_paying_twice(tmp_path):
    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(80))
    out, cache = tmp_path / "judgments.parquet", tmp_path / "cache.sqlite"
    with FakeOpenAIServer(latency=0.05, keep_bodies=1000, **FAKE_SERVER_SAFETY) as srv:
        cmd = judge_cmd(samples, out, srv.base_url, cache, "--prompts-per-part", 5, "--concurrency", 4)
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 45
            while len(cached_keys(cache)) < 12 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the judge finished before it could be killed: " + proc.stderr.read().decode()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        at_kill = wait_quiet(srv)
        stored = cached_keys(cache)  # answers paid for before the kill
        assert len(stored) >= 12 and not out.exists()

        done = run_cli(*cmd[3:], cwd=tmp_path, env={"OPENAI_API_KEY": ""})
        assert done.returncode == 0, done.stderr
        stats = srv.stats

    rows = check_judgments(out, samples)
    distinct = {r["call_key"] for r in rows}
    stored_as = {scoped_key(srv.base_url.rstrip("/"), k): k for k in distinct}  # the cache keys answers by server
    assert len(distinct) == 80 and set(stored_as) == cached_keys(cache)
    stored = {stored_as[k] for k in stored}
    asked = asked_per_key(stats.bodies, rows, samples)
    assert sum(asked.values()) == stats.chat_requests  # every request body was kept
    assert set(asked) == distinct
    # No call whose answer was stored was asked again; only calls in flight at the kill
    # (at most --concurrency of them) could be asked twice.
    assert all(asked[k] == 1 for k in stored)
    assert stats.chat_requests - at_kill == len(distinct - stored)  # the rerun asked for exactly the rest
    assert stats.chat_requests <= len(distinct) + 4


# ---------------------------------------------------------------- 6. concurrent processes

def test_two_processes_on_one_cache_pay_once(tmp_path):
    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(40))
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(latency=0.1, keep_bodies=1000, **FAKE_SERVER_SAFETY) as srv:
        procs = [subprocess.Popen(judge_cmd(samples, tmp_path / f"{name}.parquet", srv.base_url, cache,
                                            "--prompts-per-part", 5, "--concurrency", 4),
                                  cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for name in ("a", "b")]
        errs = []
        try:
            for p in procs:
                errs.append(p.communicate(timeout=90)[1])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate(timeout=10)
        stats = srv.stats
    assert [p.returncode for p in procs] == [0, 0], errs
    a = check_judgments(tmp_path / "a.parquet", samples)
    b = check_judgments(tmp_path / "b.parquet", samples)
    key = lambda rs: sorted((r["judgment_id"], r["score"], r["position"], r["call_key"]) for r in rs)  # noqa: E731
    assert key(a) == key(b)  # identical scores (and ids)
    distinct = {r["call_key"] for r in a}
    asked = asked_per_key(stats.bodies, a, samples)
    assert len(distinct) == 40 and set(asked) == distinct
    twice = [k for k, n in asked.items() if n > 1]
    assert not twice, f"{len(twice)} of {len(distinct)} calls paid by both processes"
    assert stats.chat_requests == len(distinct)
    # each process paid only for what the other did not
    fresh = [sum(r["cached"] is False for r in rows) for rows in (a, b)]
    assert sum(fresh) == 3 * len(distinct)


# ---------------------------------------------------------------- claims

CLAIMER = """
import sys
from dno_data.openai_api.call_cache import CallCache
c = CallCache(sys.argv[1])
print(c.claim(["held"])[0], flush=True)
c.lease = 0.0
print(c.claim(["expired"])[0], flush=True)
sys.stdin.readline()
"""


def test_claims_live_dead_expired_and_own(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = CallCache(path)
    other = subprocess.Popen([sys.executable, "-c", CLAIMER, str(path)], cwd=ROOT, env=cli_env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "['held']"
        assert other.stdout.readline().strip() == "['expired']"
        # held by a live process: refused (waited for, never called)
        assert cache.claim(["held"]) == ([], ["held"])
        # a live process whose lease ran out: taken over
        assert cache.claim(["expired"]) == (["expired"], [])
        # free keys and our own claims are ours
        assert cache.claim(["free", "expired"]) == (["free", "expired"], [])
        other.stdin.write("\n")
        other.stdin.flush()
        other.wait(timeout=10)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(timeout=10)
    assert other.returncode == 0
    # its owner is gone (a finished process's pid): taken over
    assert cache.claim(["held"]) == (["held"], [])
    owners = dict(cache.db.execute("SELECT key, owner FROM claims"))
    assert set(owners.values()) == {cache.owner} and cache.owner == f"{HOST}:{os.getpid()}"


def test_put_and_release_drop_only_our_claims(tmp_path):
    path = tmp_path / "cache.sqlite"
    ours, theirs = CallCache(path), CallCache(path)
    theirs.owner = f"{HOST}:{os.getppid()}"  # another live process
    assert ours.claim(["a", "b"]) == (["a", "b"], [])
    assert theirs.claim(["a", "c"]) == (["c"], ["a"])
    theirs.release(["a"])  # not its claim: nothing happens
    assert theirs.claim(["a"]) == ([], ["a"])
    ours.put("a", "m", CachedCall('{"id1_score": 5}', "stop", [[{"token": "A", "logprob": -0.1}]], 3, 4))
    ours.release(["b"])
    assert dict(ours.db.execute("SELECT key, owner FROM claims")) == {"c": theirs.owner}
    got = theirs.get_many(["a", "b", "a"])
    assert got == {"a": CachedCall('{"id1_score": 5}', "stop", [[{"token": "A", "logprob": -0.1}]], 3, 4)}
    ours.put("a", "m", CachedCall("other", "stop", None, 0, 0))  # first answer wins
    assert ours.get_many(["a"])["a"].content == '{"id1_score": 5}'


def test_claim_does_not_hand_out_an_answered_key(tmp_path):
    path = tmp_path / "cache.sqlite"
    ours, theirs = CallCache(path), CallCache(path)
    theirs.owner = f"{HOST}:{os.getppid()}"
    assert ours.get_many(["k"]) == {}  # we read the cache: not answered yet
    assert theirs.claim(["k"]) == (["k"], [])  # the other process claims, calls and stores it
    theirs.put("k", "m", CachedCall("answer", "stop", None, 1, 1))
    mine, _ = ours.claim(["k"])  # then we claim what we did not find
    assert mine == []


def test_runner_does_not_pay_for_an_answer_stored_meanwhile(tmp_path):
    path = tmp_path / "cache.sqlite"
    other = CallCache(path)
    other.owner = f"{HOST}:{os.getppid()}"
    group = Group("p1", [{"role": "user", "content": "hello"}], None, [Candidate("s1", "GOOD", "policy")])
    call = make_judge("openai:m", "rubric").plan(group)[0].call
    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as srv:
        runner = CallRunner(ApiSettings(srv.base_url, timeout=5, max_retries=0), CallCache(path))
        real_get_many = runner.cache.get_many

        theirs = other.scoped(runner.endpoint)

        def get_many_then_other_process_answers(keys):
            found = real_get_many(keys)
            if not theirs.get_many([call.key]):  # the other process stores the answer right after our read
                theirs.claim([call.key])
                theirs.put(call.key, "m", CachedCall("from the other process", "stop", None, 1, 1))
            return found

        runner.cache.get_many = get_many_then_other_process_answers

        async def go():
            try:
                return await runner.run([call])
            finally:
                await runner.aclose()

        results, _ = asyncio.run(asyncio.wait_for(go(), timeout=20))
        assert results[call.key].content == "from the other process"
        assert srv.stats.chat_requests == 0


def _open_cache(path):
    from dno_data.openai_api.call_cache import CallCache

    CallCache(path).close()


def test_processes_creating_one_cache_at_once_all_succeed(tmp_path):
    """Switching a new SQLite file to WAL answers "database is locked" without waiting; the cache retries."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn" if sys.platform == "darwin" else "fork")
    failures = 0
    for i in range(15):
        path = tmp_path / f"c{i}.sqlite"
        procs = [ctx.Process(target=_open_cache, args=(path,)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        failures += sum(p.exitcode != 0 for p in procs)
    assert failures == 0


# ---------------------------------------------------------------- the server is part of the key; the file is private

def test_one_cache_does_not_serve_one_servers_answers_for_another(tmp_path):
    from dno_data.stages.judge import JudgeConfig, run

    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(3))
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as a, FakeOpenAIServer(**FAKE_SERVER_SAFETY) as b:
        for srv, out in ((a, "a.parquet"), (b, "b.parquet"), (a, "a2.parquet")):
            run(JudgeConfig.from_options(samples=samples, output=tmp_path / out, judge="openai:m", base_url=srv.base_url, cache=cache, timeout=5,
                            max_retries=0))
        assert (a.stats.chat_requests, b.stats.chat_requests) == (3, 3)  # a's rerun came from the cache
    assert all(r["cached"] for r in read_artifact(tmp_path / "a2.parquet", "judgments").to_pylist())
    assert not any(r["cached"] for r in read_artifact(tmp_path / "b.parquet", "judgments").to_pylist())


def test_the_cache_file_is_private(tmp_path):
    path = tmp_path / "cache.sqlite"
    CallCache(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)  # a cache made before: tightened when opened
    CallCache(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_empty_answer_is_a_failure_and_a_rerun_asks_failed_calls_again(tmp_path, capsys):
    """A 200 answer without choices is not an answer: it is not cached, its rows say error, and
    rerunning the same command asks for it again (and only for it: paid answers come from the cache)."""
    from dno_data.stages.judge import JudgeConfig, run

    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(3))
    cfg = JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge="openai:m", cache=tmp_path / "cache.sqlite", timeout=5,
                      max_retries=0, concurrency=1, max_failure_rate=1.0)
    with FakeOpenAIServer(script=["ok", "empty"], **FAKE_SERVER_SAFETY) as srv:
        run(replace(cfg, base_url=srv.base_url))
        first = read_artifact(cfg.output, "judgments").to_pylist()
        failed = {r["call_key"] for r in first if r["status"] == "error"}
        assert len(failed) == 1 and len(cached_keys(cfg.api.cache)) == 2
        assert all("choices" in r["error"] for r in first if r["status"] == "error")
        run(replace(cfg, base_url=srv.base_url))
        assert srv.stats.chat_requests == 4  # 3, then only the failed call
    again = read_artifact(cfg.output, "judgments").to_pylist()
    assert {r["status"] for r in again} == {"ok"}
    assert {r["call_key"] for r in again if not r["cached"]} == failed
    assert "up to date" not in capsys.readouterr().err


# ---------------------------------------------------------------- 7. judging from several machines

def test_shards_judged_on_several_machines_with_caches_merged_pay_each_call_once(tmp_path, monkeypatch):
    """The README's recipe: each machine judges its shard of the samples into a cache of its own; the driver merges
    the caches (sqlite3 .backup, then ATTACH + INSERT OR IGNORE) and judges the whole samples file: every call a
    cache hit."""
    from dno_data import api
    from dno_data.artifacts import write_artifact
    from dno_data.sharding import in_shard

    monkeypatch.setenv("OPENAI_API_KEY", "")
    samples = write_judge_samples(tmp_path / "samples.parquet", judge_groups(12))
    rows = read_artifact(samples, "samples").to_pylist()

    def judge(samples_file, out, cache):
        return api.judge(api.JudgeConfig.from_options(samples=samples_file, output=out, judge="openai:m",
                                                      base_url=srv.base_url, cache=cache, timeout=10, max_retries=1))

    with FakeOpenAIServer(keep_bodies=100, **FAKE_SERVER_SAFETY) as srv:
        for i in range(2):  # machine i of 2
            shard = write_artifact(in_shard(rows, (i, 2)), tmp_path / f"shard-{i}.parquet", "samples", None)
            judge(shard, tmp_path / f"judgments-{i}.parquet", tmp_path / f"judge-{i}.sqlite")
        paid = srv.stats.chat_requests
        merged = tmp_path / "judge.sqlite"
        first, db = sqlite3.connect(tmp_path / "judge-0.sqlite"), sqlite3.connect(merged)
        first.backup(db)  # sqlite3 judge-0.sqlite ".backup judge.sqlite"
        first.close()
        db.execute("ATTACH ? AS s", (str(tmp_path / "judge-1.sqlite"),))
        db.execute("INSERT OR IGNORE INTO calls SELECT * FROM s.calls")
        db.commit()
        db.close()
        judge(samples, tmp_path / "judgments.parquet", merged)
        assert paid == 12 and srv.stats.chat_requests == paid  # the driver paid nothing
    assert len(check_judgments(tmp_path / "judgments.parquet", samples)) == 12 * 3
