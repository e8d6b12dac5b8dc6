"""Running a judge over candidate groups (dno_data.judges.run): parts and the request pool."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("aiohttp", reason="the fake OpenAI server needs aiohttp")

from conftest import FAKE_SERVER_SAFETY, write_judge_samples  # noqa: E402
from dno_data.artifacts import read_artifact  # noqa: E402
from support.fake_openai import FakeOpenAIServer  # noqa: E402


def test_slow_calls_in_several_parts_do_not_drain_the_request_pool(tmp_path):
    """One slow call in each of the first parts (a retry's backoff, a hang) must not hold back the
    calls of later parts: the other request slots keep working while the slow ones wait."""
    from dno_data.stages.judge import JudgeConfig, run

    groups = [(f"question {i}?", [(f"a{i}", "policy"), (f"b{i}", "policy"), (f"c{i}", "policy")]) for i in range(40)]
    samples = write_judge_samples(tmp_path / "samples.parquet", groups)  # pairwise: 6 calls per prompt
    script = ["hang" if i % 6 == 0 else "ok" for i in range(24)]  # the first call of each of the first 4 parts
    with FakeOpenAIServer(**{**FAKE_SERVER_SAFETY, "hang_seconds": 3}, latency=0.02, script=script) as srv:
        cfg = JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge="openai:m", mode="pairwise", base_url=srv.base_url,
                          no_cache=True, concurrency=8, prompts_per_part=1, timeout=20, max_retries=0)
        worker = threading.Thread(target=run, args=(cfg,))
        worker.start()
        deadline = time.monotonic() + 30
        while srv.stats.chat_requests == 0 and time.monotonic() < deadline:  # the stage has started calling
            time.sleep(0.01)
        time.sleep(2.0)
        during_the_hangs = srv.stats.chat_requests
        worker.join(timeout=60)
    rows = read_artifact(cfg.output, "judgments").to_pylist()
    assert len(rows) == 240 and {r["status"] for r in rows} == {"ok"}
    assert during_the_hangs >= 60  # 4 slots hang, 4 keep going; parts held back: at most 4 parts x 6 = 24
