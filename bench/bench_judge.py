"""Judge stage against a local OpenAI-compatible server: throughput, warm cache, faults, secrets.

    python bench/bench_judge.py                       # all five measurements (~3-4 minutes)
    python bench/bench_judge.py --calls 5000 --concurrency 64 --latency 0.2 --warm 100000
    python bench/bench_judge.py --cases 5             # only the 20 %-errors comparison
    python bench/bench_judge.py --smoke               # all five at the smallest size (tests/test_bench.py)

1. throughput: `dno judge --mode rubric` (one call per prompt) over --calls prompts against the
   test server with --latency seconds per call at --concurrency; ideal = concurrency / latency.
   Baseline in the same run: a bare client loop (the openai client, same transport, same
   concurrency, no cache, no Parquet) against the same server.
2. warm cache: judge >= --warm judgments (6 candidates per prompt), then judge them again into a
   new file with the server gone: zero calls, time of the whole rerun.
3. faults: --fault-rate of the calls answered 429 (with Retry-After) or 500: every judgment ends
   ok or as an explicit failure row, none lost, none duplicated.
4. secrets: no file the stage wrote contains the API key.
5. errors vs the bare loop: --error-calls calls at --latency and --concurrency with --fault-rate
   of them answered 429 (Retry-After 1 s) or 500, `dno judge` with its default settings
   against the bare client loop with the same retry budget, in the same run.
Every `dno judge` runs as its own process; the figures are whole-process timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from dno_data.artifacts import write_artifact

KEY = "sk-bench-SECRET-7f3a9c"


def make_samples(path: Path, prompts: int, k: int) -> int:
    rows = []
    for p in range(prompts):
        msgs = [{"role": "user", "content": f"Question {p}: explain item {p % 97} briefly."}]
        for i in range(k):
            text = "GOOD answer" if i == 0 else "BAD answer" if i == 1 else f"an answer to {p}, variant {i}"
            rows.append({"sample_id": f"s{p}-{i}", "prompt_id": f"p{p:06d}", "messages": msgs, "prompt_text": None,
                         "reference": None, "response": text, "source": "teacher" if i == k - 1 else "policy",
                         "generator": "bench", "generator_id": "bench", "sample_index": i, "seed": 0,
                         "temperature": 0.7, "top_p": 0.95, "num_tokens": 3, "finish_reason": "stop"})
    write_artifact(rows, path, "samples", {"stage": "bench", "inputs": [], "config": {}})
    return len(rows)


class Server:
    def __init__(self, **opts):
        args = [sys.executable, "-m", "tests.support.fake_openai", "--port", "0", "--max-seconds", "900"]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).resolve().parents[1])  # the repo root: tests.support
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"server did not start: {line} {self.proc.stderr.read()}")
        self.url = line.split()[1]

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def judge(samples: Path, out: Path, url: str, cache: Path, concurrency: int, *extra: str,
          part: str | None = "256") -> tuple[float, str]:
    cmd = [sys.executable, "-m", "stages.cli", "judge", str(samples), "-o", str(out), "--judge", "openai:bench",
           "--base-url", url, "--cache", str(cache), "--concurrency", str(concurrency),
           *(["--prompts-per-part", part] if part else []), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": KEY},
                          timeout=1200)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return dt, proc.stderr


def field(summary: str, name: str) -> str:
    m = re.search(rf"^\s*{re.escape(name)}\s+(.+)$", summary, re.M)
    return m.group(1).strip() if m else "?"


async def bare_client(url: str, n: int, concurrency: int, max_retries: int = 0) -> float:
    """The baseline: the same client and transport, a semaphore, nothing else."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=max_retries,
                                http_client=openai.DefaultAioHttpClient())
    sem = asyncio.Semaphore(concurrency)
    msgs = [{"role": "user", "content": 'Rate <response id="id1">\nGOOD\n</response> id1_score'}]

    async def one():
        async with sem:
            try:
                await client.chat.completions.with_raw_response.create(model="bench", messages=msgs)
            except openai.OpenAIError:  # failed for good after the retries: counted as done, as dno does
                pass

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    dt = time.perf_counter() - t0
    await client.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--warm", type=int, default=100_000)
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--fault-calls", type=int, default=2000)
    ap.add_argument("--error-calls", type=int, default=3000)
    ap.add_argument("--cases", default="1,2,3,4,5", help="which measurements to run, e.g. 1,5")
    ap.add_argument("--smoke", action="store_true",
                    help="the smallest size: 64 calls at latency 0.01 s, 60 warm judgments, 32 fault and error calls")
    args = ap.parse_args()
    if args.smoke:
        args.calls, args.latency, args.warm, args.fault_calls, args.error_calls = 64, 0.01, 60, 32, 32
    cases = {int(c) for c in args.cases.split(",")}
    tmp = Path(tempfile.mkdtemp(prefix="dno-bench-judge-"))
    ideal = args.concurrency / args.latency

    if 1 in cases:
        throughput(args, tmp, ideal)
    if 2 in cases:
        warm_cache(args, tmp)
    if 3 in cases:
        faults(args, tmp)
    if 5 in cases:
        errors_vs_bare_loop(args, tmp, ideal)
    if 4 in cases:
        secrets(tmp)


def throughput(args, tmp: Path, ideal: float) -> None:
    samples = tmp / "throughput-samples.parquet"
    make_samples(samples, args.calls, 2)
    srv = Server(latency=args.latency)
    base = asyncio.run(bare_client(srv.url, args.calls, args.concurrency))
    dt, out = judge(samples, tmp / "throughput.parquet", srv.url, tmp / "cache1.sqlite", args.concurrency)
    srv.stop()
    calls = int(field(out, "calls made"))
    rate = float(field(out, "calls / s"))
    print(f"1. throughput: {calls} calls, latency {args.latency}s, concurrency {args.concurrency}, ideal {ideal:.0f}/s")
    print(f"   bare client loop   : {args.calls / base:6.1f} calls/s ({args.calls / base / ideal:.1%} of ideal)")
    print(f"   dno judge, calling : {rate:6.1f} calls/s ({rate / ideal:.1%} of ideal; {rate * base / args.calls:.2f}x the bare loop)")
    print(f"   dno judge, process : {calls / dt:6.1f} calls/s over {dt:.1f}s wall (startup, Parquet, cache included)")



def warm_cache(args, tmp: Path) -> None:
    prompts = -(-args.warm // 6)
    samples = tmp / "warm-samples.parquet"
    n_judgments = make_samples(samples, prompts, 6)
    srv = Server(latency=0)
    judge(samples, tmp / "warm-fill.parquet", srv.url, tmp / "cache2.sqlite", 64)
    srv.stop()
    # the same URL (the cache keys answers by server), with nothing listening there now: any call would fail
    dt, out = judge(samples, tmp / "warm-rerun.parquet", srv.url, tmp / "cache2.sqlite", 64, "--max-retries", "0")
    t = pq.read_table(tmp / "warm-rerun.parquet")
    ok = sum(s == "ok" for s in t["status"].to_pylist())
    print(f"2. warm cache: {n_judgments} judgments ({prompts} calls) again with the server gone: "
          f"calls made {field(out, 'calls made')}, cache hits {field(out, 'cache hits')}, "
          f"{ok}/{len(t)} ok, {dt:.2f}s whole process ({n_judgments / dt:,.0f} judgments/s)")



def faults(args, tmp: Path) -> None:
    samples = tmp / "fault-samples.parquet"
    n = make_samples(samples, args.fault_calls, 4)
    srv = Server(latency=0.02, error_429_rate=args.fault_rate / 2, error_500_rate=args.fault_rate / 2,
                 retry_after=1, seed=1)
    dt, out = judge(samples, tmp / "faults.parquet", srv.url, tmp / "cache3.sqlite", 64, "--max-retries", "6")
    stats = srv.stop()
    t = pq.read_table(tmp / "faults.parquet")
    ids = t["judgment_id"].to_pylist()
    statuses = {s: t["status"].to_pylist().count(s) for s in set(t["status"].to_pylist())}
    print(f"3. faults ({args.fault_rate:.0%} of calls 429/500): {len(t)} rows for {n} candidates, "
          f"{len(set(ids))} unique judgment ids, statuses {statuses}, {dt:.1f}s")
    m = re.search(r'"by_status": (\{[^}]*\})', stats)
    print(f"   server saw: {m.group(1) if m else stats.strip()[-300:]}")



def secrets(tmp: Path) -> None:
    leaks = [str(p) for p in tmp.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    print(f"4. secrets: {sum(1 for p in tmp.rglob('*') if p.is_file())} files written, "
          f"{len(leaks)} contain the API key {leaks if leaks else ''}")


def errors_vs_bare_loop(args, tmp: Path, ideal: float) -> None:
    n = args.error_calls
    samples = tmp / "errors-samples.parquet"
    make_samples(samples, n, 2)
    faults = dict(latency=args.latency, error_429_rate=args.fault_rate / 2, error_500_rate=args.fault_rate / 2,
                  retry_after=1, seed=2)
    srv = Server(**faults)
    base = asyncio.run(bare_client(srv.url, n, args.concurrency, max_retries=6))
    srv.stop()
    srv = Server(**faults)
    dt, out = judge(samples, tmp / "errors.parquet", srv.url, tmp / "cache5.sqlite", args.concurrency, part=None)
    srv.stop()
    calling = float(field(out, "calls / s"))
    print(f"5. {args.fault_rate:.0%} of calls 429/500 (Retry-After 1 s), {n} calls, latency {args.latency}s, "
          f"concurrency {args.concurrency}, default parts, 6 retries")
    print(f"   bare client loop   : {base:6.1f}s ({n / base:6.1f} calls/s, {n / base / ideal:.1%} of ideal)")
    print(f"   dno judge, calling : {n / calling:6.1f}s ({calling:6.1f} calls/s; {n / calling / base:.2f}x the bare "
          f"loop's time); whole process {dt:.1f}s")


if __name__ == "__main__":
    main()
