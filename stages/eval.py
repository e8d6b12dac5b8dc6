"""`dno eval PROMPTS --model DIR --judge SPEC -o eval.parquet`: held-out win-rate against the teacher.

    dno eval runs/demo/prompts.parquet --model runs/demo/iter-01/checkpoint \
        --judge oracle:addition --teacher reference -o runs/demo/iter-01/eval.parquet

Greedy answers (temperature 0) by default; accuracy is reported for verifiable judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dno_data.artifacts import read_artifact

from dno_data.lineage import make_lineage

from dno_data.parts import Parts
from dno_data.generation import SamplingParams, make_generator
from dno_data.evaluation import eval_summary, evaluate_rows
from dno_data.judges import make_judge
from dno_data.models import check_model_dir
from dno_data.reproducibility import DEFAULT_THREADS, configure_torch
from dno_data.openai_api.runner import make_runner
from dno_data.sampling import select_prompts
from dno_data.openai_api.call_cache import default_cache_path
from dno_data.teachers import Teacher, TeacherApi

from .common import check_output_path, summary, up_to_date
from .options import (API_TIMEOUT, API_KEY_ENV, BASE_URL, CACHE, CONCURRENCY, DTYPE, FORCE, JUDGE, MAX_NEW_TOKENS,
                      MAX_RETRIES, MODE, NO_CACHE, OUTPUT_FILE, RPM, SEED, SYSTEM_PROMPT, TEACHER_MAX_NEW_TOKENS,
                      TEACHER_SPECS, TEACHER_TEMPERATURE, TEMPERATURE, TEMPLATE, THREADS, TIMEOUT, TOP_P, TPM, at_least,
                      api_settings, build_command, none_if, one_of, opt)


@dataclass(frozen=True)
class EvalConfig:
    prompts: Path = opt("prompts.parquet with an eval split.", argument=True)
    model: Path = opt("HF model folder to evaluate.")
    judge: str = JUDGE.field()
    output: Path = OUTPUT_FILE.field(help="eval.parquet to write.")
    teacher: str | None = opt(f"The answer to beat: {TEACHER_SPECS} | none (judge the policy alone).", "reference",
                              cli_type=str, to_config=none_if("none"))
    mode: str | None = MODE.field(None)
    split: str | None = opt("Prompts of this split; 'all' for every prompt.", "eval", cli_type=str,
                            to_config=none_if("all"))
    temperature: float = TEMPERATURE.field(0.0)  # greedy
    top_p: float = TOP_P.field(1.0)
    max_new_tokens: int = MAX_NEW_TOKENS.field(256)
    seed: int = SEED.field(0)
    batch_size: int = opt("Prompts per batch and per resumable part.", 32, check=at_least(1))
    backend: str = opt("Generation backend: hf.", "hf", check=one_of("hf"))
    dtype: str = DTYPE.field("auto")
    threads: int = THREADS.field(DEFAULT_THREADS)
    # openai judges and teacher: the server and how it is called
    base_url: str | None = BASE_URL.field(None)
    api_key_env: str = API_KEY_ENV.field("OPENAI_API_KEY")
    concurrency: int = CONCURRENCY.field(16)
    rpm: float | None = RPM.field(None)
    tpm: float | None = TPM.field(None)
    timeout: float = TIMEOUT.field(API_TIMEOUT)
    max_retries: int = MAX_RETRIES.field(6)
    cache: Path | None = CACHE.field(None)  # default $DNO_CACHE or ~/.cache/dno/judge.sqlite
    no_cache: bool = NO_CACHE.field(False)
    template: Path | None = TEMPLATE.field(None)
    system_prompt: str | None = SYSTEM_PROMPT.field(None)
    teacher_temperature: float = TEACHER_TEMPERATURE.field(0.0)
    teacher_max_new_tokens: int = TEACHER_MAX_NEW_TOKENS.field(1024)
    force: bool = FORCE.field(False)


def run(cfg: EvalConfig) -> Path:
    prompts = read_artifact(cfg.prompts, "prompts")
    check_output_path(cfg.output, [cfg.prompts], kind="eval")
    check_model_dir(cfg.model)
    judge = make_judge(cfg.judge, cfg.mode, template=cfg.template, system=cfg.system_prompt)
    settings = api_settings(cfg)  # the one server and call policy of this command's openai: judge and teacher
    cache = None if cfg.no_cache else (cfg.cache or default_cache_path())
    teacher = None
    if cfg.teacher:
        teacher = Teacher(cfg.teacher, TeacherApi(settings=settings, temperature=cfg.teacher_temperature,
                                                  max_tokens=cfg.teacher_max_new_tokens, cache=cache))
    if cfg.backend == "hf":
        configure_torch(cfg.threads)  # before the lineage, which records it
    lineage = make_lineage("eval", [cfg.prompts, cfg.model], cfg, judge_id=judge.judge_id)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows = select_prompts(prompts, cfg.prompts, None, cfg.split)
    if teacher is not None:
        teacher.check_prompts(rows, cfg.prompts)
    parts = Parts(cfg.output, lineage, "eval", fresh=cfg.force)
    generator = make_generator(cfg.backend, cfg.model, dtype=cfg.dtype, threads=cfg.threads)
    params = SamplingParams(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    evaluate_rows(rows, parts, generator=generator, params=params,
                  teacher=teacher, judge=judge, model_name=str(cfg.model), seed=cfg.seed, batch_size=cfg.batch_size,
                  runner_factory=lambda: make_runner(settings, cache, cfg.no_cache))
    table = parts.finish(lineage).to_pylist()
    summary(f"eval {cfg.model} -> {cfg.output}", eval_summary(table, teacher is not None, seed=cfg.seed))
    return cfg.output


command = build_command(EvalConfig, run, "Evaluate a model on held-out prompts against the teacher.")
