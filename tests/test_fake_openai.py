"""The fake OpenAI-compatible server, driven by the real `openai` client.

Every server is started and stopped inside its test (context manager, or a subprocess
terminated with a timeout), binds 127.0.0.1 only, and carries a max_seconds safety limit.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import math
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

pytest.importorskip("aiohttp", reason="the fake OpenAI server needs aiohttp (pip install aiohttp)")

from support import fake_openai  # noqa: E402
from support.fake_openai import REFUSAL, FakeOpenAIServer, quality  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAFETY = {"max_seconds": 60, "hang_seconds": 2, "shutdown_timeout": 0.3}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def pair_prompt(a: str, b: str) -> str:
    return (
        "Which response answers the question better? Answer with A or B.\n"
        f'<response id="A">\n{a}\n</response>\n<response id="B">\n{b}\n</response>'
    )


def rubric_prompt(blocks: list[tuple[str, str]]) -> str:
    body = "\n".join(f'<response id="{i}">\n{t}\n</response>' for i, t in blocks)
    return f"Score each response from 1 to 6. Reply in JSON with ID_justification and ID_score.\n{body}"


def make_client(srv: FakeOpenAIServer, **kw) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10.0)
    return openai.OpenAI(base_url=srv.base_url, api_key="sk-test", **kw)


def ask(client: openai.OpenAI, prompt: str, **kw):
    return client.chat.completions.create(model="judge-x", messages=[{"role": "user", "content": prompt}], **kw)


def raw_request(url: str, method: str = "GET") -> tuple[int, dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method=method)
    try:
        with opener.open(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def srv():
    with FakeOpenAIServer(**SAFETY) as s:
        yield s


# ---------------------------------------------------------------- helpers and protocol


def test_doctests():
    result = doctest.testmod(fake_openai)
    assert result.attempted > 5 and result.failed == 0


def test_chat_completion_usage_and_authorization(srv):
    with make_client(srv) as client:
        r = client.chat.completions.create(
            model="judge-x",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        )
        models = client.models.list()
    assert r.object == "chat.completion" and r.id and r.created > 0
    assert r.model == "judge-x"
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "ok: hello there"
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == math.ceil(len("be brief" + "hello there") / 4)
    assert r.usage.completion_tokens == math.ceil(len("ok: hello there") / 4)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert [m.id for m in models.data] == ["fake-judge"]
    stats = srv.stats
    assert stats.authorization == "Bearer sk-test"
    assert stats.requests == 2 and stats.chat_requests == 1
    assert stats.bodies[-1]["model"] == "judge-x"
    assert stats.bodies[-1]["messages"][-1]["content"] == "hello there"
    assert "sk-test" not in json.dumps(stats.summary())  # the printable summary hides the key


def test_cached_tokens_for_a_repeated_prefix(srv):
    """OpenAI's rule: the longest earlier prefix of 1024 + 128 j tokens (4 characters a token); none below 1024."""
    static = "r" * 4 * 1200  # 1200 tokens that every request starts with
    with make_client(srv) as client:
        got = [ask(client, static + tail).usage for tail in ("first", "second", "third")]
        short = [ask(client, "s" * 4 * 1000 + tail).usage for tail in ("a", "b")]
        system = client.chat.completions.create(model="m", messages=[
            {"role": "system", "content": static}, {"role": "user", "content": "q"}]).usage
    assert [u.prompt_tokens_details.cached_tokens for u in got] == [0, 1152, 1152]
    assert [u.prompt_tokens for u in got] == [1202, 1202, 1202]
    assert [u.prompt_tokens_details.cached_tokens for u in short] == [0, 0]
    assert system.prompt_tokens_details.cached_tokens == 1152  # the messages' texts, joined
    with FakeOpenAIServer(prefix_cache_min_tokens=0, prefix_cache_block=16, **SAFETY) as vllm_like, \
            make_client(vllm_like) as client:
        assert [ask(client, "v" * 400 + t).usage.prompt_tokens_details.cached_tokens for t in "ab"] == [0, 96]
    with FakeOpenAIServer(prefix_cache_block=0, **SAFETY) as off, make_client(off) as client:
        assert [ask(client, static + t).usage.prompt_tokens_details.cached_tokens for t in "ab"] == [0, 0]


def test_unknown_route_and_wrong_method_are_openai_errors(srv):
    root = srv.base_url.rsplit("/v1", 1)[0]
    status, body = raw_request(root + "/v1/nope")
    assert status == 404
    assert set(body["error"]) >= {"message", "type", "code"}
    status, body = raw_request(srv.base_url + "/chat/completions", "GET")
    assert status == 405 and body["error"]["type"] == "invalid_request_error"
    with make_client(srv) as client, pytest.raises(openai.NotFoundError):
        client.get("/nope", cast_to=object)


# ---------------------------------------------------------------- answer policy


def test_rubric_scores_in_order(srv):
    blocks = [("id1", "a GOOD answer"), ("id2", "a BAD answer"), ("x-3", "something else")]
    with make_client(srv) as client:
        content = ask(client, rubric_prompt(blocks)).choices[0].message.content
    data = json.loads(content)
    score_keys = [k for k in data if k.endswith("_score")]
    assert score_keys == ["id1_score", "id2_score", "x-3_score"]
    assert all(f"{i}_justification" in data for i, _ in blocks)
    assert data["id1_score"] == 6 and data["id2_score"] == 1
    assert data["x-3_score"] == quality("something else")
    assert 1 <= data["x-3_score"] <= 6


def test_pairwise_winner_both_orders_and_tie(srv):
    with make_client(srv) as client:
        assert ask(client, pair_prompt("GOOD one", "BAD one")).choices[0].message.content == "A"
        assert ask(client, pair_prompt("BAD one", "GOOD one")).choices[0].message.content == "B"
        assert ask(client, pair_prompt("same text", "same text")).choices[0].message.content == "A"


def _top(choice) -> dict[str, float]:
    assert choice.logprobs is not None and choice.logprobs.content
    token = choice.logprobs.content[0]
    assert token.token == choice.message.content
    top = {t.token: t.logprob for t in token.top_logprobs}
    assert set(top) == {"A", "B"}
    assert math.isclose(sum(math.exp(v) for v in top.values()), 1.0, rel_tol=1e-9)
    assert math.isclose(token.logprob, top[token.token])
    return top


def test_pairwise_logprobs(srv):
    with make_client(srv) as client:
        good_first = ask(client, pair_prompt("GOOD", "BAD"), logprobs=True, top_logprobs=5).choices[0]
        good_second = ask(client, pair_prompt("BAD", "GOOD"), logprobs=True, top_logprobs=2).choices[0]
        tie = ask(client, pair_prompt("same", "same"), logprobs=True, top_logprobs=2).choices[0]
        # two hash-scored texts of different quality
        texts = [f"plain answer {i}" for i in range(30)]
        a = texts[0]
        b = next(t for t in texts if quality(t) != quality(a))
        mixed = ask(client, pair_prompt(a, b), logprobs=True, top_logprobs=2).choices[0]
        plain = ask(client, pair_prompt("GOOD", "BAD")).choices[0]
    assert math.isclose(math.exp(_top(good_first)["A"]), sigmoid(5))
    assert math.isclose(math.exp(_top(good_second)["B"]), sigmoid(5))
    assert tie.message.content == "A" and math.isclose(math.exp(_top(tie)["A"]), 0.6)
    winner = "A" if quality(a) > quality(b) else "B"
    assert mixed.message.content == winner
    assert math.isclose(math.exp(_top(mixed)[winner]), sigmoid(abs(quality(a) - quality(b))))
    assert plain.logprobs is None


# ---------------------------------------------------------------- faults


def test_429_carries_retry_after():
    with FakeOpenAIServer(script=["429"], retry_after=1, **SAFETY) as srv, make_client(srv) as client:
        with pytest.raises(openai.RateLimitError) as exc:
            ask(client, "hi")
        assert exc.value.response.headers["retry-after"] == "1"
        assert exc.value.type == "rate_limit_exceeded"
        assert srv.stats.by_status == {429: 1}


def test_500_raises_internal_server_error(srv):
    srv.set_script(["500"])
    with make_client(srv) as client:
        with pytest.raises(openai.InternalServerError) as exc:
            ask(client, "hi")
        assert exc.value.type == "server_error"
        assert ask(client, "hi").choices[0].message.content == "ok: hi"  # the script is used up


def test_hang_times_out_the_client(srv):
    srv.set_script(["hang"])
    t0 = time.monotonic()
    with make_client(srv, timeout=0.5) as client, pytest.raises(openai.APITimeoutError):
        ask(client, "hi")
    assert time.monotonic() - t0 < 1.9


def test_truncate_and_garbage(srv):
    prompt = rubric_prompt([("id1", "GOOD"), ("id2", "BAD")])
    srv.set_script(["ok", "truncate", "garbage"])
    with make_client(srv) as client:
        full = ask(client, prompt).choices[0]
        cut = ask(client, prompt).choices[0]
        junk = ask(client, prompt).choices[0]
    assert full.finish_reason == "stop"
    assert cut.finish_reason == "length"
    assert cut.message.content == full.message.content[: len(full.message.content) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.message.content)
    assert junk.message.content == REFUSAL
    assert srv.stats.by_behaviour == {"ok": 1, "truncate": 1, "garbage": 1}


def test_client_retries_through_429_and_500():
    with FakeOpenAIServer(script=["429", "500", "ok"], retry_after=0.05, **SAFETY) as srv:
        with make_client(srv, max_retries=3) as client:
            r = ask(client, "retry me")
        assert r.choices[0].message.content == "ok: retry me"
        stats = srv.stats
        assert stats.requests == 3
        assert stats.by_status == {429: 1, 500: 1, 200: 1}


def test_rates_are_seeded_and_configurable():
    def run(seed: int) -> dict[str, int]:
        with FakeOpenAIServer(seed=seed, error_500_rate=0.3, garbage_rate=0.3, **SAFETY) as srv:
            with make_client(srv) as client:
                for _ in range(30):
                    try:
                        ask(client, "x")
                    except openai.InternalServerError:
                        pass
            return srv.stats.by_behaviour

    first, again = run(7), run(7)
    assert first == again
    assert first.get("500", 0) > 0 and first.get("garbage", 0) > 0 and first.get("ok", 0) > 0
    with FakeOpenAIServer(error_500_rate=1.0, **SAFETY) as srv, make_client(srv) as client:
        with pytest.raises(openai.InternalServerError):
            ask(client, "x")
        srv.configure(error_500_rate=0.0)
        assert ask(client, "x").choices[0].message.content == "ok: x"
    with pytest.raises(ValueError):
        FakeOpenAIServer(error_429_rate=0.7, error_500_rate=0.7)
    with pytest.raises(ValueError):
        FakeOpenAIServer(script=["explode"])


def test_latency_overlaps_across_concurrent_requests():
    async def load(url: str) -> list[str]:
        async with openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0, timeout=10) as client:
            rs = await asyncio.gather(
                *(
                    client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                    for i in range(40)
                )
            )
        return [r.choices[0].message.content for r in rs]

    with FakeOpenAIServer(latency=0.3, **SAFETY) as srv:
        t0 = time.monotonic()
        answers = asyncio.run(asyncio.wait_for(load(srv.base_url), timeout=10))
        elapsed = time.monotonic() - t0
        assert answers == [f"ok: q{i}" for i in range(40)]
        assert 0.3 <= elapsed < 2.0
        assert srv.stats.max_in_flight > 10


# ---------------------------------------------------------------- limits and process mode


def test_max_requests_stops_the_server():
    with FakeOpenAIServer(max_requests=2, **SAFETY) as srv:
        with make_client(srv) as client:
            ask(client, "one")
            ask(client, "two")
        assert srv.wait_stopped(5)
        assert srv.stats.stop_reason == "max_requests" and srv.stats.requests == 2
        with make_client(srv) as client, pytest.raises(openai.APIConnectionError):
            ask(client, "three")


def test_max_seconds_stops_the_server():
    with FakeOpenAIServer(max_seconds=0.3) as srv:
        assert srv.wait_stopped(5)
        assert srv.stats.stop_reason == "max_seconds"


def _start_process(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_openai", "--port", "0", "--max-seconds", "30", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout=15):
            proc.kill()
            proc.communicate(timeout=5)
            pytest.fail("the server process printed nothing in 15 s")
    finally:
        sel.close()
    line = proc.stdout.readline().strip()
    if not line.startswith("READY http://127.0.0.1:"):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        pytest.fail(f"unexpected first line {line!r}; stderr: {err}")
    return proc, line.split(" ", 1)[1]


def test_process_mode_ready_answer_and_sigterm():
    proc, url = _start_process("--latency", "0.05", "--max-requests", "10")
    try:
        with openai.OpenAI(base_url=url, api_key="sk-proc", max_retries=0, timeout=10) as client:
            r = client.chat.completions.create(model="p", messages=[{"role": "user", "content": "ping"}])
        assert r.choices[0].message.content == "ok: ping"
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["stop_reason"] == "SIGTERM" and summary["requests"] == 1
    assert "sk-proc" not in err


def test_process_mode_exits_at_max_requests():
    proc, url = _start_process("--max-requests", "1", "--script", "garbage")
    try:
        with openai.OpenAI(base_url=url, api_key="sk-proc", max_retries=0, timeout=10) as client:
            r = client.chat.completions.create(model="p", messages=[{"role": "user", "content": "ping"}])
        assert r.choices[0].message.content == REFUSAL
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert json.loads(err.strip().splitlines()[-1])["stop_reason"] == "max_requests"


# ---------------------------------------------------------------- files and batches


def batch_file(prompts: list[str], url: str = "/v1/chat/completions") -> bytes:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": url,
              "body": {"model": "judge-x", "messages": [{"role": "user", "content": p}]}} for i, p in enumerate(prompts)]
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def wait_batch(client: openai.OpenAI, bid: str, limit: float = 10.0):
    deadline = time.monotonic() + limit
    while True:
        b = client.batches.retrieve(bid)
        if b.status in ("completed", "failed", "expired", "cancelled") or time.monotonic() > deadline:
            return b
        time.sleep(0.02)


def jsonl(client: openai.OpenAI, file_id: str | None) -> dict[str, dict]:
    if file_id is None:
        return {}
    return {x["custom_id"]: x for x in map(json.loads, client.files.content(file_id).text.splitlines())}


def test_batches_upload_create_retrieve_and_download(srv):
    """The Batch API through the real client: a batch that completes with a line that fails (500), one that
    expires half done, one refused at validation (a duplicate custom_id), one over the requests limit, a list."""
    srv.set_script(["ok", "500", "ok"])
    srv.set_batch_script(["ok", "expire"])
    with make_client(srv) as client:
        f = client.files.create(file=("in.jsonl", batch_file([pair_prompt("GOOD", "BAD"), "x", "hello"])),
                                purpose="batch")
        assert f.purpose == "batch" and f.bytes > 0 and client.files.retrieve(f.id).id == f.id
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        b = wait_batch(client, b.id)
        assert b.status == "completed" and (b.request_counts.completed, b.request_counts.failed) == (2, 1)
        out, err = jsonl(client, b.output_file_id), jsonl(client, b.error_file_id)
        assert out["r0"]["response"]["body"]["choices"][0]["message"]["content"] == "A"
        assert out["r2"]["response"]["body"]["choices"][0]["message"]["content"] == "ok: hello"
        assert err["r1"]["response"]["status_code"] == 500

        f2 = client.files.create(file=("in.jsonl", batch_file(["a", "b", "c", "d"])), purpose="batch")
        b2 = wait_batch(client, client.batches.create(input_file_id=f2.id, endpoint="/v1/chat/completions",
                                                      completion_window="24h").id)
        assert b2.status == "expired" and sorted(jsonl(client, b2.output_file_id)) == ["r0", "r1"]
        assert {x["error"]["code"] for x in jsonl(client, b2.error_file_id).values()} == {"batch_expired"}

        dup = batch_file(["a"]) * 2
        b3 = client.batches.create(input_file_id=client.files.create(file=("d.jsonl", dup), purpose="batch").id,
                                   endpoint="/v1/chat/completions", completion_window="24h")
        assert b3.status == "failed" and "Duplicate custom_id" in b3.errors.data[0].message
        srv.batch_max_requests = 2
        b4 = client.batches.create(input_file_id=f2.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert b4.status == "failed" and "more than 2 requests" in b4.errors.data[0].message

        listed = [x.id for x in client.batches.list(limit=2)]  # newest first, over two pages
        assert listed == [b4.id, b3.id, b2.id, b.id]
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_nope")
    st = srv.stats
    assert st.files_uploaded == 3 and st.batches_created == 4 and st.batch_requests == 3 + 4
    assert st.chat_requests == 0  # batch lines are not chat requests


def test_a_held_batch_can_be_cancelled_or_run_now(srv):
    srv.configure(batch_delay=60)
    with make_client(srv) as client:
        f = client.files.create(file=("in.jsonl", batch_file(["a", "b"])), purpose="batch")
        b1 = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        b2 = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert client.batches.retrieve(b1.id).status == "in_progress"
        assert client.batches.cancel(b1.id).status == "cancelled"
        srv.run_batch_now(b2.id)
        assert client.batches.retrieve(b2.id).status == "completed"
