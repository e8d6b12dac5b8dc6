"""The hf sampling backend through dno against a hand-written batched `model.generate` loop.

    python bench/bench_hf_overhead.py [--model DIR] [--prompts 16] [-k 4] [--max-new-tokens 48] [--repeats 2]

Same model (SmolLM2-135M-Instruct by default), prompts, chat template and settings (n=K,
temperature 0.7, top-p 0.95, batches of 16 prompts). dno: the whole `dno sample` stage in process
(dno_data.stages.sample.run: read prompts, hash inputs for the lineage, load the model, the template check,
per-sample seeding, resumable parts, the final Parquet file). Hand-written: load the tokenizer and
model, render, `generate(do_sample=True, num_return_sequences=K)`, decode. Each side runs
`--repeats` times, alternating, and the best time counts (other jobs may share the machine).
Prints one JSON line: seconds and output tokens/s of each, and dno's overhead in percent.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from questions import QUESTIONS, add_sampling_args  # bench/questions.py (the script's folder is on sys.path)


def hand_written(model_dir: str, questions: list[str], k: int, max_new_tokens: int, batch: int, threads: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in questions]
    tokens = 0
    torch.manual_seed(0)
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], add_special_tokens=False, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.95, top_k=None,
                                 num_return_sequences=k, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id, eos_token_id=tok.eos_token_id)
        for ids in out[:, enc["input_ids"].shape[1]:].tolist():
            ids = ids[: ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids
            tokens += len(ids)
            tok.decode(ids, skip_special_tokens=True)
    return time.perf_counter() - t0, tokens


def through_dno(model_dir: str, prompts: Path, out: Path, k: int, max_new_tokens: int, batch: int, threads: int,
                seed: int):
    from dno_data.artifacts import read_artifact
    from dno_data.stages.sample import SampleConfig, run

    t0 = time.perf_counter()
    run(SampleConfig.from_options(prompts=prompts, output=out, model=model_dir, backend="hf", k=k, temperature=0.7, top_p=0.95,
                     max_new_tokens=max_new_tokens, batch_size=batch, threads=threads, dtype="float32", seed=seed,
                     force=True, split=None))
    secs = time.perf_counter() - t0
    return secs, sum(read_artifact(out, "samples")["num_tokens"].to_pylist())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    from dno_data.stages.prompts import PromptsConfig
    from dno_data.stages.prompts import run as make_prompts

    questions = (QUESTIONS * 4)[: a.prompts]
    tmp = Path(tempfile.mkdtemp(prefix="dno-bench-hf-"))
    src = tmp / "q.jsonl"
    src.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    prompts = make_prompts(PromptsConfig(src=src, output=tmp / "prompts.parquet"))

    dno_runs, hand_runs = [], []
    for r in range(a.repeats):
        hand_runs.append(hand_written(a.model, questions, a.k, a.max_new_tokens, a.batch_size, a.threads))
        dno_runs.append(through_dno(a.model, prompts, tmp / "samples.parquet", a.k, a.max_new_tokens, a.batch_size,
                                    a.threads, seed=r))
    best = lambda runs: min(runs, key=lambda x: x[0])  # noqa: E731
    (ds, dt), (hs, ht) = best(dno_runs), best(hand_runs)
    result = {
        "model": a.model, "prompts": a.prompts, "k": a.k, "max_new_tokens": a.max_new_tokens, "threads": a.threads,
        "dno_seconds": round(ds, 2), "dno_output_tokens": dt, "dno_tokens_per_s": round(dt / ds, 1),
        "hand_seconds": round(hs, 2), "hand_output_tokens": ht, "hand_tokens_per_s": round(ht / hs, 1),
        "all_dno_seconds": [round(x[0], 2) for x in dno_runs], "all_hand_seconds": [round(x[0], 2) for x in hand_runs],
        "overhead_wall_pct": round(100 * (ds / hs - 1), 1),
        "overhead_tokens_per_s_pct": round(100 * (1 - (dt / ds) / (ht / hs)), 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
