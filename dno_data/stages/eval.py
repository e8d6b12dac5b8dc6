"""`dno eval PROMPTS --model DIR --judge SPEC -o eval.parquet`: held-out win-rate against the teacher.

    dno eval runs/demo/prompts.parquet --model runs/demo/iter-01/checkpoint \
        --judge oracle:addition --teacher reference -o runs/demo/iter-01/eval.parquet

Greedy answers (temperature 0) by default; accuracy is reported for verifiable judges.
`--engine ray` answers on Ray actors (which also judge, for a judge and teacher that run code or a
model; an openai: judge or teacher is asked by this process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, at_least, group, one_of, opt
from ..config.groups import (GREEDY, REVISION, TEACHER_SPECS, Api, Engine, JudgeSettings, ModelLoading, Sampling,
                             TeacherCall)
from .common import FORCE, OUTPUT_FILE


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    """Evaluate a model on held-out prompts against the teacher."""

    prompts: Path = opt("prompts.parquet with an eval split.", argument=True)
    model: Path = opt("HF model folder (or Hugging Face Hub id, org/name) to evaluate.")
    revision: str | None = REVISION.field(None)
    # the judge and how it is asked: --judge SPEC, --judge-mode, --judge-template, ... (as dno judge's options)
    judge: JudgeSettings = group(JudgeSettings, prefix="judge_",
                                 aliases={"mode": ("--mode",), "template": ("--template",),
                                          "system_prompt": ("--system-prompt",)})
    output: Path = OUTPUT_FILE.field(help="eval.parquet to write.")
    teacher: str | None = opt(f"The answer to beat: {TEACHER_SPECS} | none (judge the policy alone).", "reference",
                              none_word="none")
    split: str | None = opt("Prompts of this split; 'all' for every prompt.", "eval", none_word="all")
    sampling: Sampling = group(Sampling, factory=lambda: GREEDY)  # greedy
    batch_size: int = opt("Prompts per batch and per resumable part.", 32, check=at_least(1))
    backend: str = opt("Generation backend: hf.", "hf", check=one_of("hf"))
    loading: ModelLoading = group(ModelLoading)
    api: Api = group(Api)  # openai judges and teacher: the server and how it is called
    teacher_call: TeacherCall = group(TeacherCall, prefix="teacher_")
    engine: Engine = group(Engine)
    force: bool = FORCE.field(False)


def run(cfg: EvalConfig) -> Path:
    """Write cfg.output (resuming finished batches) and return its path."""
    from ..artifacts import read_artifact
    from ..console import summary, up_to_date
    from ..evaluation import eval_summary, evaluate_rows
    from ..generation import SamplingParams, make_generator
    from ..lineage import make_lineage
    from ..hub import hub_lineage, pinned
    from ..models import check_answer_length, check_model_dir
    from ..openai_api.call_cache import default_cache_path
    from ..openai_api.runner import make_runner
    from ..parts import Parts
    from ..reproducibility import configure_torch
    from ..sampling import select_prompts
    from ..teachers import Teacher, TeacherApi
    from ..paths import check_output
    from ..storage import public

    prompts = read_artifact(cfg.prompts, "prompts")
    check_output(cfg.output, [cfg.prompts], kind="eval")
    model = check_model_dir(cfg.model, revision=cfg.revision)  # a Hub id: its snapshot folder (dno_data.hub)
    check_answer_length(model, cfg.sampling.max_new_tokens)
    judge = cfg.judge.make()
    settings = cfg.api.settings()  # the one server and call policy of this command's openai: judge and teacher
    cache = cfg.api.cache_path(default_cache_path())
    teacher = None
    if cfg.teacher:
        teacher = Teacher(cfg.teacher, TeacherApi(settings=settings, temperature=cfg.teacher_call.temperature,
                                                  max_tokens=cfg.teacher_call.max_new_tokens, cache=cache))
    if cfg.backend == "hf":
        configure_torch(cfg.loading.threads)  # before the lineage, which records it
    lineage = make_lineage("eval", [cfg.prompts, model], cfg, judge_id=judge.judge_id,
                           **hub_lineage(judge))  # a reward:ID judge: its repository and commit
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows = select_prompts(prompts, cfg.prompts, None, cfg.split)
    if teacher is not None:
        teacher.check_prompts(rows, cfg.prompts)
    parts = Parts(cfg.output, lineage, "eval", fresh=cfg.force)
    sp = cfg.sampling
    params = SamplingParams(n=1, temperature=sp.temperature, top_p=sp.top_p, max_new_tokens=sp.max_new_tokens)
    common = dict(params=params, teacher=teacher, judge=judge, model_name=public(str(cfg.model)), seed=sp.seed,
                  batch_size=cfg.batch_size, runner_factory=lambda: make_runner(settings, cache, cfg.api.no_cache))
    if cfg.engine.ray:
        from ..evaluation import EvalWorker, evaluate_rows_ray
        from ..judges.base import SyncJudge

        # a judge that runs code or a model judges on the workers (with a teacher that does too); an
        # openai: judge or teacher is asked here, with this machine's call cache
        local = isinstance(judge, SyncJudge) and (teacher is None or teacher.runs_code)
        # an s3:// model: each worker fetches its own copy; a Hub id: resolved there at the commit found here
        worker = EvalWorker(pinned(public(str(cfg.model)), model), dict(dtype=cfg.loading.dtype, threads=cfg.loading.threads),
                            judge=cfg.judge if local else None, teacher=cfg.teacher if local else None)
        evaluate_rows_ray(rows, parts, worker=worker, engine=cfg.engine, **common)
    else:
        generator = make_generator(cfg.backend, model, dtype=cfg.loading.dtype, threads=cfg.loading.threads)
        evaluate_rows(rows, parts, generator=generator, **common)
    table = parts.finish(lineage).to_pylist()
    summary(f"eval {cfg.model} -> {cfg.output}", eval_summary(table, teacher is not None, seed=sp.seed))
    return cfg.output

