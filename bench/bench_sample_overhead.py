"""`dno sample` against the bare engine: the same prompts and settings through `vllm.LLM.generate` (or HF
`generate`) directly, through `dno sample` in process, and through `dno sample` as a whole process.

    ../vllm-venv/bin/python bench/bench_sample_overhead.py --backend vllm --model DIR --prompts 1000 -k 1 \
        --max-new-tokens 8                      # the goal: dno <= 1.05x the bare engine's wall time
    python bench/bench_sample_overhead.py --backend hf --model DIR --smoke     # the smallest size (tests)

Prompts: bench/questions.py's questions, numbered to make them distinct, imported with `dno prompts` (not
timed). Each side runs in a fresh process of its own, in this order:
  bare        load the tokenizer and the engine (vllm.LLM with dno's settings: --dtype, enforce_eager;
              without CUDA 0.3 of RAM for the KV cache and chunked prefill off; or AutoModelForCausalLM),
              render each prompt with the chat template, one `LLM.generate` over all prompts (n=K, the
              per-prompt seeds dno uses) or HF `generate` in batches of --batch-size, decode.
              Timed: load + generate (and the whole process).
  in-process  dno_data.stages.sample.run(SampleConfig) in a fresh process: read prompts, lineage hashing,
              load, template check, parts of --dno-batch-size prompts (one generate call each), Parquet.
              Timed: the call, and the whole process.
  process     `python -m stages.cli sample ...` with the same options: the whole process, wall clock.
Ratios: in-process / bare (load + generate), and process / bare (whole processes). With --temperature 0
the two sides must give the same number of output tokens (`same_tokens`). Prints one JSON line per side
and a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from questions import QUESTIONS, add_sampling_args  # noqa: E402  bench/questions.py


def bare(a, prompts: list[dict]) -> dict:
    from dno_data.generation import prompt_seed
    from dno_data.models import load_tokenizer, render_prompt

    t0 = time.perf_counter()
    tok = load_tokenizer(a.model, padding_side="left")
    texts = [render_prompt(tok, p["messages"]) for p in prompts]
    seeds = [prompt_seed(a.seed, p["prompt_id"]) for p in prompts]
    greedy = a.temperature <= 0
    if a.backend == "vllm":
        import torch
        import vllm

        # dno's settings without CUDA (dno_data/generation/vllm.py): 0.3 of RAM for the KV cache, chunked prefill off
        kw = {} if torch.cuda.is_available() else {"gpu_memory_utilization": 0.3, "enable_chunked_prefill": False}
        llm = vllm.LLM(model=str(a.model), dtype=a.dtype, enforce_eager=a.enforce_eager, **kw)
        t_load = time.perf_counter() - t0
        t1 = time.perf_counter()
        sps = [vllm.SamplingParams(n=a.k, temperature=0.0 if greedy else a.temperature, top_p=1.0 if greedy else a.top_p,
                                   top_k=0, max_tokens=a.max_new_tokens, seed=s) for s in seeds]
        inputs = [{"prompt_token_ids": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]
        outs = llm.generate(inputs, sps, use_tqdm=False)
        tokens = 0
        for out in outs:
            for c in out.outputs:
                ids = list(c.token_ids)
                tokens += len(ids) - (c.finish_reason == "stop" and bool(ids) and ids[-1] == tok.eos_token_id)
    else:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(a.threads)
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).eval()
        t_load = time.perf_counter() - t0
        t1 = time.perf_counter()
        tokens = 0
        for i in range(0, len(texts), a.dno_batch_size):
            enc = tok(texts[i:i + a.dno_batch_size], add_special_tokens=False, padding=True, return_tensors="pt")
            torch.manual_seed(seeds[i])
            with torch.no_grad():
                out = model.generate(**enc, do_sample=not greedy, num_return_sequences=a.k,
                                     max_new_tokens=a.max_new_tokens, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id,
                                     **({} if greedy else {"temperature": a.temperature, "top_p": a.top_p,
                                                           "top_k": None}))
            for ids in out[:, enc["input_ids"].shape[1]:].tolist():
                ids = ids[: ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids
                ids = [t for t in ids if t != tok.pad_token_id]
                tokens += len(ids)
                tok.decode(ids, skip_special_tokens=True)
    return {"load_seconds": t_load, "generate_seconds": time.perf_counter() - t1,
            "seconds": time.perf_counter() - t0, "output_tokens": tokens}


def sample_options(a, prompts: Path, out: Path) -> dict:
    opts = dict(prompts=prompts, output=out, model=a.model, backend=a.backend, k=a.k, temperature=a.temperature,
                top_p=a.top_p, max_new_tokens=a.max_new_tokens, batch_size=a.dno_batch_size, dtype=a.dtype,
                seed=a.seed, threads=a.threads, force=True, split=None)
    if a.backend == "vllm":
        opts["enforce_eager"] = a.enforce_eager
    return opts


def in_process(a, prompts: Path, out: Path) -> dict:
    from dno_data.artifacts import read_artifact
    from dno_data.stages.sample import SampleConfig, run

    t0 = time.perf_counter()
    run(SampleConfig.from_options(**sample_options(a, prompts, out)))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "output_tokens": sum(read_artifact(out, "samples")["num_tokens"].to_pylist())}


def cli_args(a, prompts: Path, out: Path) -> list[str]:
    args = ["sample", str(prompts), "-o", str(out), "--model", str(a.model), "--backend", a.backend, "-k", str(a.k),
            "--temperature", str(a.temperature), "--top-p", str(a.top_p), "--max-new-tokens", str(a.max_new_tokens),
            "--batch-size", str(a.dno_batch_size), "--dtype", a.dtype, "--seed", str(a.seed), "--threads",
            str(a.threads), "--force", "--split", "all"]
    return args + (["--enforce-eager"] if a.backend == "vllm" and a.enforce_eager else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    p.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    p.add_argument("--dtype", default=None, help="default: bfloat16 (vllm), float32 (hf)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dno-batch-size", type=int, default=None,
                   help="dno's --batch-size: prompts per part, one generate call each (default: all prompts, as "
                        "the bare side's one call; hf: 16 on both sides)")
    p.add_argument("--no-enforce-eager", dest="enforce_eager", action="store_false",
                   help="vllm: let it compile / capture CUDA graphs (both sides)")
    p.add_argument("--smoke", action="store_true", help="the smallest size: 8 prompts, k 1, 4 tokens, greedy")
    p.add_argument("--side", choices=("bare", "in-process"), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.smoke:
        a.prompts, a.k, a.max_new_tokens, a.temperature, a.threads = 8, 1, 4, 0.0, 1
    a.dtype = a.dtype or ("bfloat16" if a.backend == "vllm" else "float32")
    a.dno_batch_size = a.dno_batch_size or (a.prompts if a.backend == "vllm" else 16)
    a.model = str(Path(a.model).resolve())
    if a.side:
        work = Path(a.work)
        if a.side == "bare":
            from dno_data.artifacts import read_artifact

            got = bare(a, read_artifact(work / "prompts.parquet", "prompts").to_pylist())
        else:
            got = in_process(a, work / "prompts.parquet", work / "samples-in-process.parquet")
        got.update(process_seconds=time.perf_counter() - T_START,
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("RESULT " + json.dumps(got), flush=True)
        return

    from dno_data.stages.prompts import PromptsConfig
    from dno_data.stages.prompts import run as make_prompts

    work = Path(tempfile.mkdtemp(prefix="dno-bench-sample-"))
    src = work / "q.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"{QUESTIONS[i % len(QUESTIONS)]} ({i + 1})"}) + "\n"
                           for i in range(a.prompts)))
    make_prompts(PromptsConfig(src=src, output=work / "prompts.parquet"))
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    base = [a for a in sys.argv[1:]]
    results = {}
    load0 = os.getloadavg()[0]
    for side in ("bare", "in-process", "process"):
        if side == "process":
            cmd = [sys.executable, "-m", "stages.cli", *cli_args(a, work / "prompts.parquet", work / "samples.parquet")]
        else:
            cmd = [sys.executable, __file__, *base, "--model", a.model, "--side", side, "--work", str(work)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode:  # the engine's workers log the root cause long before the last lines
            (work / f"{side}.stderr").write_text(proc.stderr)
            sys.exit(f"{side} failed (its whole log: {work / f'{side}.stderr'}):\n{proc.stderr[-3000:]}")
        if side == "process":
            from dno_data.artifacts import read_artifact

            got = {"output_tokens": sum(read_artifact(work / "samples.parquet", "samples")["num_tokens"].to_pylist())}
        else:
            got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
        results[side] = {**got, "wall_seconds": wall}
        print(json.dumps({"side": side, **{k: round(v, 3) if isinstance(v, float) else v
                                           for k, v in results[side].items()}}), flush=True)
    b, i, w = results["bare"], results["in-process"], results["process"]
    print(json.dumps({
        "backend": a.backend, "model": a.model, "prompts": a.prompts, "k": a.k, "max_new_tokens": a.max_new_tokens,
        "temperature": a.temperature, "dtype": a.dtype, "dno_batch_size": a.dno_batch_size, "threads": a.threads,
        "seconds": {"bare": round(b["seconds"], 2), "bare_generate": round(b["generate_seconds"], 2),
                    "bare_process": round(b["wall_seconds"], 2), "dno_in_process": round(i["seconds"], 2),
                    "dno_process": round(w["wall_seconds"], 2)},
        "ratio_in_process": round(i["seconds"] / b["seconds"], 3),
        "ratio_process": round(w["wall_seconds"] / b["wall_seconds"], 3),
        "output_tokens": {"bare": b["output_tokens"], "dno": i["output_tokens"]},
        "same_tokens": b["output_tokens"] == i["output_tokens"] == w["output_tokens"],
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }), flush=True)


if __name__ == "__main__":
    main()
