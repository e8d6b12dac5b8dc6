"""`dno train` against TRL's DPOTrainer on the same pairs, model, batch, max length and steps.

    python bench/bench_train.py                                   # the tiny test model (built here)
    python bench/bench_train.py --model models/smollm2-135m-instruct --pairs 32 --max-length 256
    python bench/bench_train.py --smoke                           # the smallest size (tests/test_bench.py)

Both sides train with the sigmoid loss (beta 0.1), fused AdamW, fp32, no autocast, dropout
off, one process, `--threads` CPU threads, gradient checkpointing on both or off on both
(`--gradient-checkpointing`; TRL's DPOConfig turns it on by default, so it is set explicitly),
and TRL precomputes the reference log-probs (`precompute_ref_log_probs=True`) as dno does. Each side runs in a fresh process (so peak RSS
is its own), `--repeats` times alternating dno, TRL, dno, TRL... (other jobs may share the machine:
a change of load falls on both). Timed: reference pass + training loop (imports, model loading and
saving excluded); also the whole process's wall time. Prints one JSON line per run and a final JSON
line with the median pairs/s of each side, the median of the per-repeat ratios (each dno run against
the TRL run right after it), the highest peak RSS of each side and the load average before and after.
TRL: `pip install trl peft` (TRL 1.16 measured).

    python bench/bench_train.py --model models/smollm2-135m-instruct --pairs 64 --lengths 256-512 \
        --max-length 512 --batch-size 4 --steps 16 --repeats 3          # realistic lengths (docs/benchmarks.md)
    python bench/bench_train.py --model DIR --mixed-precision bf16 --lora-r 16 ...   # on a GPU (bench/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the a model answer is good because it explains each step clearly and briefly so that "
         "readers can follow what happens next with care water light sun tree river stone").split()


def make_pairs(n: int, seed: int, tokenizer, tiny: bool, lengths: tuple[int, int] | None = None) -> list[dict]:
    """n pairs: an addition problem (tiny model) or an everyday question, two answers of varied length.

    With `lengths` (lo, hi), each answer is cut so that prompt + answer is a uniform draw from lo..hi tokens
    of `tokenizer` (within a token or two: the cut text is tokenized again by each side)."""
    from questions import QUESTIONS  # bench/questions.py (the script folder is on sys.path)
    from dno_data.models import render_prompt

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        if tiny:
            a, b = rng.randrange(10, 99), rng.randrange(10, 99)
            messages = [{"role": "user", "content": f"{a}+{b}"}]
            chosen, rejected = str(a + b), str(a + b + rng.choice((-1, 1, 10)))
        elif lengths:
            prompt_tokens = len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])
            chosen, rejected = (_answer_of_tokens(tokenizer, rng, rng.randint(*lengths) - prompt_tokens)
                                for _ in range(2))
        else:
            chosen = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(10, 120))) + "."
            rejected = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(10, 120))) + "."
        rows.append({"messages": messages, "prompt_text": render_prompt(tokenizer, messages),
                     "chosen": chosen, "rejected": rejected, "i": i})
    return rows


def _answer_of_tokens(tokenizer, rng: random.Random, tokens: int) -> str:
    """Words drawn at random, cut to `tokens` tokens."""
    words = " ".join(rng.choice(WORDS) for _ in range(2 * tokens + 8))
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][:max(1, tokens)]
    return tokenizer.decode(ids).strip()


def tiny_model_dir(out: Path) -> Path:
    from dno_data.tasks import addition

    if not (out / "config.json").exists():
        tok = addition.build_tokenizer()
        model = addition.build_model(tok, hidden=32, layers=1, heads=2, seed=0)
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return out


def pairs_parquet(rows: list[dict], path: Path) -> Path:
    from dno_data.artifacts import write_artifact

    table = []
    for r in rows:
        table.append({
            "pair_id": f"c{r['i']}>r{r['i']}", "prompt_id": f"p{r['i']}", "prompt": r["messages"],
            "prompt_text": r["prompt_text"], "chosen_sample_id": f"c{r['i']}", "rejected_sample_id": f"r{r['i']}",
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "chosen_source": "policy", "rejected_source": "policy",
            "chosen_truncated": False, "rejected_truncated": False, "chosen_score": 6.0, "rejected_score": 1.0,
            "chosen_winrate": 1.0, "rejected_winrate": 0.0, "margin": 5.0, "pair_type": "policy>policy",
            "rule": "paper", "target": 1.0, "replayed_from": None,
        })
    return write_artifact(table, path, "pairs", None)


# ---------------------------------------------------------------- one side, in its own process

def run_dno(args, work: Path) -> dict:
    from dno_data.artifacts import read_artifact
    from dno_data.training import TrainOptions
    from dno_data.training.fit import fit
    from dno_data.training.reference import reference_logps
    from dno_data.training.setup import setup

    pairs = read_artifact(work / "pairs.parquet", "pairs")
    opts = TrainOptions(beta=0.1, loss="hard", learning_rate=args.lr, batch_size=args.batch_size,
                        max_steps=args.steps, warmup_ratio=0.0, lr_scheduler="linear", max_grad_norm=1.0,
                        max_length=args.max_length, save_every=0, threads=args.threads,
                        group_by_length=args.group_by_length, gradient_checkpointing=args.gradient_checkpointing,
                        mixed_precision=args.mixed_precision, lora_r=args.lora_r, lora_alpha=2.0 * max(1, args.lora_r))
    import transformers.optimization  # noqa: F401  imports are not timed (TRL's happen before its timer too)

    out = work / f"dno-{os.getpid()}"
    s = setup(pairs, args.model, out, opts, {"bench": os.getpid()}, fresh=True)
    t0 = time.perf_counter()
    reference_logps(s, opts, log=lambda *_: None)
    t_ref = time.perf_counter() - t0
    result = fit(s, opts, log=lambda *_: None)
    seconds = time.perf_counter() - t0
    # padding: each micro-batch's chosen and rejected rows are right-padded to its longest (after the timer)
    real = padded = 0
    for i in range(0, len(s.examples), args.batch_size):
        batch = s.examples[i:i + args.batch_size]
        real += sum(len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in batch)
        padded += 2 * len(batch) * max(max(len(ex["chosen_ids"]), len(ex["rejected_ids"])) for ex in batch)
    return {"ref_seconds": t_ref, "seconds": seconds, "steps": result.steps, "pairs": len(s.examples),
            "final_loss": result.history[-1]["loss"], "padding_share": round(1 - real / padded, 3)}


def run_trl(args, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from dno_data.models import load_tokenizer

    torch.set_num_threads(args.threads)
    rows = json.loads((work / "pairs.json").read_text())
    data = Dataset.from_list([{"prompt": r["prompt_text"], "chosen": r["chosen"], "rejected": r["rejected"]}
                              for r in rows])
    tok = load_tokenizer(args.model, padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    cfg = DPOConfig(output_dir=str(work / f"trl-{os.getpid()}"), per_device_train_batch_size=args.batch_size,
                    max_steps=args.steps, learning_rate=args.lr, beta=0.1, loss_type=["sigmoid"], warmup_steps=0,
                    lr_scheduler_type="linear", max_grad_norm=1.0, max_length=args.max_length,
                    precompute_ref_log_probs=True, precompute_ref_batch_size=args.batch_size,
                    report_to="none", save_strategy="no", logging_steps=1, use_cpu=not torch.cuda.is_available(),
                    bf16=args.mixed_precision == "bf16", fp16=False,
                    dataloader_num_workers=0, seed=0, disable_tqdm=True,
                    gradient_checkpointing=args.gradient_checkpointing)
    # TRL precomputes the reference log-probs while the trainer is built: time that pass on its own
    ref_seconds = []
    real_precompute = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **kw):
        t = time.perf_counter()
        try:
            return real_precompute(self, *a, **kw)
        finally:
            ref_seconds.append(time.perf_counter() - t)

    DPOTrainer._precompute_ref_logps = timed_precompute
    peft_config = None
    if args.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2.0 * args.lora_r, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, peft_config=peft_config)
    if not ref_seconds:
        raise SystemExit("TRL did not precompute the reference log-probs while building the trainer")
    t0 = time.perf_counter()
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"ref_seconds": sum(ref_seconds), "seconds": sum(ref_seconds) + time.perf_counter() - t0,
            "steps": out.global_step,
            "pairs": out.global_step * args.batch_size, "final_loss": losses[-1] if losses else None}


def child(args) -> None:
    t0 = time.perf_counter()
    work = Path(args.work)
    got = run_dno(args, work) if args.side == "dno" else run_trl(args, work)
    got.update(side=args.side, process_seconds=time.perf_counter() - T_START,
               side_seconds=time.perf_counter() - t0,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(got), flush=True)


# ---------------------------------------------------------------- the comparison

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF model folder (default: the tiny test model, built here)")
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: one epoch)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--group-by-length", action="store_true", help="dno side: length-grouped batches")
    p.add_argument("--gradient-checkpointing", action="store_true", help="both sides (default: off on both)")
    p.add_argument("--lengths", default=None, metavar="LO-HI",
                   help="prompt + answer of LO..HI tokens each (e.g. 256-512; a real --model only)")
    p.add_argument("--mixed-precision", default="no", choices=("no", "bf16"), help="both sides: bf16 autocast")
    p.add_argument("--lora-r", type=int, default=0, help="both sides: LoRA adapters of this rank (all linear layers)")
    p.add_argument("--smoke", action="store_true", help="the smallest size: 16 pairs, 2 steps, one run each")
    p.add_argument("--side", choices=("dno", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.smoke:
        args.pairs, args.steps, args.repeats = 16, 2, 1
    if args.side:
        return child(args)

    from dno_data.models import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    tiny = args.model is None
    args.model = str(tiny_model_dir(work / "tiny-model") if tiny else Path(args.model).resolve())
    args.steps = args.steps or args.pairs // args.batch_size
    lengths = tuple(int(x) for x in args.lengths.split("-")) if args.lengths else None
    rows = make_pairs(args.pairs, 0, load_tokenizer(args.model, padding_side="right"), tiny, lengths)
    (work / "pairs.json").write_text(json.dumps(rows))
    pairs_parquet(rows, work / "pairs.parquet")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    runs: dict[str, list[dict]] = {"dno": [], "trl": []}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for side in ("dno", "trl"):  # alternating, so a change of the machine's load falls on both
            cmd = [sys.executable, __file__, "--side", side, "--work", str(work), "--model", args.model,
                   "--pairs", str(args.pairs), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--max-length", str(args.max_length), "--lr", str(args.lr), "--threads", str(args.threads),
                   "--mixed-precision", args.mixed_precision, "--lora-r", str(args.lora_r)]
            cmd += ["--group-by-length"] * args.group_by_length
            cmd += ["--gradient-checkpointing"] * args.gradient_checkpointing
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            got = {**json.loads(line[7:]), "wall_seconds": wall, "load_average": os.getloadavg()[0]}
            print(json.dumps(got), flush=True)
            runs[side].append(got)
    rate = lambda r: r["pairs"] / r["seconds"]  # noqa: E731
    med = statistics.median
    d, t = runs["dno"], runs["trl"]
    # each repeat's dno run and the TRL run right after it make one ratio; the median of those is the figure
    ratios = [rate(x) / rate(y) for x, y in zip(d, t)]
    summary = {
        "model": "tiny" if tiny else args.model, "pairs": args.pairs, "lengths": args.lengths,
        "batch_size": args.batch_size, "steps": args.steps, "max_length": args.max_length, "threads": args.threads,
        "repeats": args.repeats, "gradient_checkpointing": args.gradient_checkpointing,
        "group_by_length": args.group_by_length, "mixed_precision": args.mixed_precision, "lora_r": args.lora_r,
        "dno_pairs_per_s": round(med(rate(x) for x in d), 3), "trl_pairs_per_s": round(med(rate(x) for x in t), 3),
        "speed_ratio": round(med(ratios), 3), "speed_ratios": [round(x, 3) for x in ratios],
        "wall_ratio_trl_over_dno": round(med(x["wall_seconds"] for x in t) / med(x["wall_seconds"] for x in d), 3),
        "dno_peak_rss_mb": round(max(x["peak_rss_mb"] for x in d)),
        "trl_peak_rss_mb": round(max(x["peak_rss_mb"] for x in t)),
        "rss_ratio": round(max(x["peak_rss_mb"] for x in d) / max(x["peak_rss_mb"] for x in t), 3),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(summary))


T_START = time.perf_counter()

if __name__ == "__main__":
    main()
