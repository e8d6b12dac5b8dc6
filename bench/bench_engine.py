"""`--engine ray` against the local engine, and how the Ray engine scales with workers.

    python bench/bench_engine.py [--prompts 2000] [--sleep-batches 96] [--sleep 0.5]

1. Overhead: the same `dno sample` (a tiny HF model built here, --prompts prompts, k 2, 8 new
   tokens, batch 16, one torch thread per process) run as a whole process three ways, in this
   order: `--engine local`, `--engine ray --workers 1`, `--engine ray --workers 2`. Ray starts a
   local cluster in each run (its start-up is part of the timing). The three outputs are checked
   to hold the same rows. Ratio: ray / local wall time.
2. Scaling: the Ray engine (dno_data.engines.ray.run_units) over the batches of a generator whose
   cost is a fixed sleep per batch (standing in for a GPU, which a CPU machine lacks): 1 worker,
   then 4, on one local cluster of 4 logical CPUs. Ratios: the speed-up of 4 workers over 1, whole
   (actor start-up included) and after every worker was ready.

Prints one JSON line per measurement and a summary line. Needs `pip install 'dno-data[ray]'`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tiny_model(folder: Path) -> Path:
    from dno_data.tasks import addition

    tok = addition.build_tokenizer()
    model = addition.build_model(tok, hidden=32, layers=1, heads=2, seed=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _prompts(folder: Path, n: int) -> Path:
    rows = [{"prompt": f"{i // 100}+{i % 100}", "reference": str(i // 100 + i % 100)} for i in range(n)]
    src = folder / "problems.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / "prompts.parquet"
    subprocess.run([sys.executable, "-m", "stages.cli", "prompts", str(src), "-o", str(out), "--reference-column",
                    "reference", "--eval-size", "0"], check=True, cwd=ROOT, capture_output=True)
    return out


def overhead(prompts: int) -> dict:
    from dno_data.artifacts import read_artifact

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, data = _tiny_model(tmp / "model"), _prompts(tmp, prompts)
        base = [sys.executable, "-m", "stages.cli", "sample", str(data), "--model", str(model), "-k", "2",
                "--max-new-tokens", "8", "--batch-size", "16", "--temperature", "1.0", "--teacher", "reference",
                "--threads", "1"]
        env = {**os.environ, "DNO_PROGRESS_INTERVAL": "3600"}
        env.pop("RAY_ADDRESS", None)
        runs = {"local": [], "ray-1": ["--engine", "ray", "--workers", "1"],
                "ray-2": ["--engine", "ray", "--workers", "2"]}
        secs, tables = {}, {}
        for name, extra in runs.items():
            out = tmp / f"{name}.parquet"
            t0 = time.perf_counter()
            proc = subprocess.run([*base, "-o", str(out), *extra], cwd=ROOT, env=env, capture_output=True, text=True)
            secs[name] = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{name}: {proc.stderr.strip().splitlines()[-1]}")
            tables[name] = sorted(read_artifact(out, "samples").to_pylist(), key=lambda r: r["sample_id"])
        same = tables["local"] == tables["ray-1"] == tables["ray-2"]
    return {"bench": "overhead", "prompts": prompts, "rows": len(tables["local"]), "same_rows": same,
            **{f"{k}_s": round(v, 1) for k, v in secs.items()},
            "ray-1/local": round(secs["ray-1"] / secs["local"], 2), "ray-2/local": round(secs["ray-2"] / secs["local"], 2)}


class SleepGenerator:
    """A generator whose cost is a fixed sleep per batch (a GPU's batch time, on a machine without one)."""

    name = "sleep"
    tokenizer = None
    model_dir = "sleep"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def generate(self, prompts, params, seeds, messages=None):
        from dno_data.generation import Completion

        time.sleep(self.seconds)
        return [[Completion(f"answer {s}", 2, "stop") for _ in range(params.n)] for s in seeds]

    def close(self) -> None:
        pass


def _setup(seconds: float):
    return SleepGenerator(seconds), None


def scaling(batches: int, seconds: float) -> dict:
    import ray
    from functools import partial

    from dno_data.engines.ray import run_units
    from dno_data.generation import SamplingParams
    from dno_data.sampling import work_batch

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _node_ip_address="127.0.0.1")
    prompts = [{"prompt_id": f"p{i}", "messages": [{"role": "user", "content": str(i)}], "reference": None}
               for i in range(batches * 8)]
    units = [(b, (prompts[b * 8:(b + 1) * 8], None)) for b in range(batches)]
    work = partial(work_batch, params=SamplingParams(n=2), generator_name="sleep", generator_id="sleep", seed=0,
                   teacher=None)
    secs, ready = {}, {}
    for workers in (1, 4):
        got = []
        t0 = time.perf_counter()
        counts = run_units(units, setup=partial(_setup, seconds), work=work, on_result=lambda u, r: got.append(u),
                           workers=workers, what="bench")
        secs[workers] = time.perf_counter() - t0
        ready[workers] = counts["seconds until every worker was ready"]
        assert sorted(got) == list(range(batches))
    ray.shutdown()
    # after start-up: the wall time from the moment every worker was ready (each started actor
    # already worked during the others' start, so this slightly flatters the larger pool)
    return {"bench": "scaling", "batches": batches, "sleep_per_batch_s": seconds, "workers-1_s": round(secs[1], 2),
            "workers-4_s": round(secs[4], 2), "speedup_4_over_1": round(secs[1] / secs[4], 2),
            "start-1_s": ready[1], "start-4_s": ready[4],
            "speedup_after_start": round((secs[1] - ready[1]) / (secs[4] - ready[4]), 2),
            "ideal_4_s": round(batches * seconds / 4, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=2000)
    p.add_argument("--sleep-batches", type=int, default=96)
    p.add_argument("--sleep", type=float, default=0.5, help="seconds per batch of the sleeping generator")
    a = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster on 127.0.0.1 only
    sys.path.insert(0, str(ROOT))
    o = overhead(a.prompts)
    print(json.dumps(o), flush=True)
    s = scaling(a.sleep_batches, a.sleep)
    print(json.dumps(s), flush=True)
    print(f"ray/local {o['ray-1/local']}x (1 worker), {o['ray-2/local']}x (2 workers); same rows: {o['same_rows']}; "
          f"4 workers / 1 worker {s['speedup_4_over_1']}x whole, {s['speedup_after_start']}x after start-up")


if __name__ == "__main__":
    main()
