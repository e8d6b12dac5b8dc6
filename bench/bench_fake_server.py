"""Load benchmark of the fake OpenAI-compatible server (tests/support/fake_openai.py).

Starts the server as a child process, drives a bounded load, prints one JSON line with
requests/s and the server's CPU use::

    python bench/bench_fake_server.py --requests 3000 --concurrency 64 --latency 0.2
    python bench/bench_fake_server.py --requests 3000 --concurrency 64 --latency 0.2 --client openai
    python bench/bench_fake_server.py --smoke    # the smallest size: 200 requests, concurrency 16, latency 0.01 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BENCH_PROMPT = (
    "Which response is better? Answer with A or B.\n"
    '<response id="A">\nanswer number {i}\n</response>\n<response id="B">\nanother answer {j}\n</response>'
)


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


async def _bench_load(
    url: str, requests: int, concurrency: int, deadline: float, client: str
) -> tuple[list[float], int]:
    """Send ``requests`` chat requests with ``concurrency`` workers; (latencies of successes, errors)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    if client == "openai":
        import openai

        oc = openai.AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=0, timeout=30.0)

        async def one(i: int) -> bool:
            r = await oc.chat.completions.create(
                model="bench",
                messages=[{"role": "user", "content": _BENCH_PROMPT.format(i=i, j=i % 7)}],
                logprobs=True,
                top_logprobs=2,
                max_tokens=1,
            )
            return r.choices[0].message.content in ("A", "B")

        close = oc.close
    else:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(total=30)
        )
        headers = {"Authorization": "Bearer sk-bench"}

        async def one(i: int) -> bool:
            payload = {
                "model": "bench",
                "messages": [{"role": "user", "content": _BENCH_PROMPT.format(i=i, j=i % 7)}],
                "logprobs": True,
                "top_logprobs": 2,
            }
            async with session.post(url + "/chat/completions", json=payload, headers=headers) as r:
                data = await r.json()
                return r.status == 200 and data["choices"][0]["message"]["content"] in ("A", "B")

        close = session.close

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            try:
                ok = await one(i)
            except Exception:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), timeout=max(1.0, deadline - time.monotonic() + 5)
        )
    finally:
        await close()
    return latencies, errors


def main(argv: list[str] | None = None) -> int:
    import subprocess

    p = argparse.ArgumentParser(
        prog="python bench/bench_fake_server.py", description="Bounded load test of the fake server."
    )
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--client", choices=("aiohttp", "openai"), default="aiohttp")
    p.add_argument("--max-seconds", type=float, default=120.0, help="hard bound on the whole run")
    p.add_argument("--smoke", action="store_true", help="the smallest size (a few seconds)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.smoke:
        a.requests, a.concurrency, a.latency = 200, 16, 0.01
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.support.fake_openai", "--port", "0", "--latency", str(a.latency),
            "--max-requests", str(a.requests + a.concurrency + 10), "--max-seconds", str(a.max_seconds + 10),
            "--keep-bodies", "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"server did not start: {line!r}")
        url = line.split(" ", 1)[1]
        cpu0, client_cpu0, t0 = _proc_cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
        deadline = time.monotonic() + a.max_seconds
        lat, errors = asyncio.run(_bench_load(url, a.requests, a.concurrency, deadline, a.client))
        wall = time.perf_counter() - t0
        cpu1, client_cpu = _proc_cpu_seconds(proc.pid), time.process_time() - client_cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    lat.sort()
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    result = {
        "client": a.client,
        "requests": a.requests,
        "ok": len(lat),
        "errors": errors,
        "concurrency": a.concurrency,
        "latency": a.latency,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(lat) / wall, 1),
        "ideal_requests_per_s": round(a.concurrency / a.latency, 1) if a.latency else None,
        "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
        "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1) if lat else None,
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 3),
        "server_cpu_pct_of_one_core": None if server_cpu is None else round(100 * server_cpu / wall, 1),
        "server_cpu_ms_per_request": None if server_cpu is None or not lat else round(1000 * server_cpu / len(lat), 3),
        "client_cpu_s": round(client_cpu, 3),
    }
    print(json.dumps(result), flush=True)
    return 0 if len(lat) == a.requests else 1


if __name__ == "__main__":
    sys.exit(main())
