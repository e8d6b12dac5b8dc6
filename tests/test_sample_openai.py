"""`dno sample --backend openai` and `--teacher openai:MODEL` against the fake OpenAI server."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import FAKE_SERVER_SAFETY, problem_rows, write_jsonl
from dno_data.artifacts import read_artifact
from dno_data.lineage import read_lineage
from dno_data.errors import DnoError
from support.fake_openai import FakeOpenAIServer


@pytest.fixture
def prompts6(tmp_path):
    from dno_data.stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(6))
    return run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))


def _cfg(prompts, out, tokenizer, url, **kw):
    from dno_data.stages.sample import SampleConfig

    base = dict(prompts=prompts, output=out, model="fake-policy", backend="openai", base_url=url, tokenizer=tokenizer,
                k=3, max_new_tokens=16, temperature=0.7, top_p=0.9, seed=5, batch_size=4, concurrency=4,
                max_retries=2, timeout=10)
    base.update(kw)
    return SampleConfig.from_options(**base)


def test_openai_backend_samples_k_per_prompt(tmp_path, prompts6, tiny_model, monkeypatch):
    from dno_data.stages.sample import run

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")

    with FakeOpenAIServer(**FAKE_SERVER_SAFETY, keep_bodies=100) as srv:
        run(_cfg(prompts6, tmp_path / "s.parquet", tiny_model, srv.base_url))
        stats = srv.stats
    rows = read_artifact(tmp_path / "s.parquet", "samples").to_pylist()
    assert len(rows) == 6 * 3 and stats.chat_requests == 18  # one request per sample
    assert Counter(r["prompt_id"] for r in rows) == Counter({r["prompt_id"]: 3 for r in rows})
    assert all(r["source"] == "policy" and r["generator"] == "fake-policy" for r in rows)
    assert all(r["response"] == "ok: " + r["messages"][0]["content"] for r in rows)  # the fake's echo
    assert all(r["prompt_text"] and r["prompt_text"].endswith("=") for r in rows)  # rendered by --tokenizer
    assert len({r["sample_id"] for r in rows}) == 18
    bodies = stats.bodies
    assert {b["model"] for b in bodies} == {"fake-policy"}
    assert {(b["temperature"], b["top_p"], b["max_tokens"]) for b in bodies} == {(0.7, 0.9, 16)}
    assert len({b["seed"] for b in bodies}) == 18  # each sample its own seed
    assert "sk-secret-123" not in str(read_lineage(tmp_path / "s.parquet"))
    assert stats.authorization == "Bearer sk-secret-123"


def test_openai_backend_retries_and_fails_loudly(tmp_path, prompts6, tiny_model):
    from dno_data.stages.sample import run

    with FakeOpenAIServer(**FAKE_SERVER_SAFETY, script=["429", "500"], retry_after=0) as srv:
        run(_cfg(prompts6, tmp_path / "s.parquet", tiny_model, srv.base_url, k=1))
        assert srv.stats.by_status.get(429) == 1 and srv.stats.by_status.get(500) == 1
    assert read_artifact(tmp_path / "s.parquet", "samples").num_rows == 6

    with FakeOpenAIServer(**FAKE_SERVER_SAFETY, error_500_rate=1.0) as srv:
        with pytest.raises(DnoError, match="--backend openai: a request to .* failed after retries .*rerun to resume"):
            run(_cfg(prompts6, tmp_path / "t.parquet", tiny_model, srv.base_url, k=1, max_retries=0))
    assert not (tmp_path / "t.parquet").exists()


def test_openai_backend_needs_a_tokenizer(tmp_path, prompts6):
    from dno_data.stages.sample import run

    with pytest.raises(DnoError, match="--backend openai needs --tokenizer DIR"):
        run(_cfg(prompts6, tmp_path / "s.parquet", None, "http://127.0.0.1:9/v1"))
    with pytest.raises(DnoError, match="nope: no such tokenizer folder"):
        run(_cfg(prompts6, tmp_path / "s.parquet", tmp_path / "nope", "http://127.0.0.1:9/v1"))


def test_openai_backend_cache_pays_once(tmp_path, prompts6, tiny_model):
    from dno_data.stages.sample import run

    cache = tmp_path / "calls.sqlite"
    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as srv:
        run(_cfg(prompts6, tmp_path / "a.parquet", tiny_model, srv.base_url, cache=cache, k=2))
        run(_cfg(prompts6, tmp_path / "b.parquet", tiny_model, srv.base_url, cache=cache, k=2))
        assert srv.stats.chat_requests == 12  # the second run answered from the cache
        run(_cfg(prompts6, tmp_path / "c.parquet", tiny_model, srv.base_url, cache=cache, k=2, seed=6))
        assert srv.stats.chat_requests == 24  # another seed: other keys
    a, b = (read_artifact(tmp_path / f, "samples").to_pylist() for f in ("a.parquet", "b.parquet"))
    assert a == b


def test_openai_teacher(tmp_path, prompts6, tiny_model):
    from dno_data.stages.sample import run

    with FakeOpenAIServer(**FAKE_SERVER_SAFETY, keep_bodies=100, model="gold") as srv:
        run(_cfg(prompts6, tmp_path / "s.parquet", tiny_model, srv.base_url, backend="hf", model=tiny_model, k=1,
                 max_new_tokens=2, teacher="openai:gpt-4-turbo", teacher_base_url=srv.base_url,
                 teacher_max_new_tokens=64, threads=1))
        bodies = srv.stats.bodies
    rows = read_artifact(tmp_path / "s.parquet", "samples").to_pylist()
    teacher = [r for r in rows if r["source"] == "teacher"]
    assert len(teacher) == 6 and len(rows) == 12
    assert all(r["response"] == "ok: " + r["messages"][0]["content"] for r in teacher)
    assert all(r["generator"] == "openai:gpt-4-turbo" and r["prompt_text"] for r in teacher)
    assert len(bodies) == 6 and {(b["model"], b["max_tokens"], b["temperature"]) for b in bodies} == \
        {("gpt-4-turbo", 64, 0.0)}

    # teacher-only, no policy model: prompt_text stays empty, the answers are the same
    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as srv:
        run(_cfg(prompts6, tmp_path / "t.parquet", None, None, backend="hf", model=None,
                 teacher="openai:gpt-4-turbo", teacher_base_url=srv.base_url, teacher_max_new_tokens=64))
    only = read_artifact(tmp_path / "t.parquet", "samples").to_pylist()
    assert sorted(r["response"] for r in only) == sorted(r["response"] for r in teacher)
    assert {r["sample_id"] for r in only} == {r["sample_id"] for r in teacher}


def test_openai_teacher_errors(tmp_path, prompts6, monkeypatch):
    from dno_data.stages.sample import run

    with pytest.raises(DnoError, match="openai:MODEL needs a model name"):
        run(_cfg(prompts6, tmp_path / "s.parquet", None, None, backend="hf", model=None, teacher="openai:"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(DnoError, match=r"\$OPENAI_API_KEY is not set"):
        run(_cfg(prompts6, tmp_path / "s.parquet", None, None, backend="hf", model=None, teacher="openai:gpt-4-turbo",
                 teacher_base_url="https://api.example.com/v1"))
    with FakeOpenAIServer(**FAKE_SERVER_SAFETY, error_500_rate=1.0) as srv:
        with pytest.raises(DnoError, match="--teacher openai:gold: the request for prompt .* failed after retries"):
            run(_cfg(prompts6, tmp_path / "s.parquet", None, None, backend="hf", model=None, teacher="openai:gold",
                     teacher_base_url=srv.base_url, max_retries=0))


def test_openai_sampling_cli(tmp_path, prompts6, tiny_model, cli):
    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as srv:
        proc = cli("sample", prompts6, "-o", tmp_path / "s.parquet", "--backend", "openai", "--model", "fake",
                   "--base-url", srv.base_url, "--tokenizer", tiny_model, "-k", "2", "--teacher", "openai:gold",
                   "--teacher-base-url", srv.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "policy samples   12" in proc.stderr and "teacher samples  6" in proc.stderr
