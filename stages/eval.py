"""`dno eval PROMPTS --model DIR --judge SPEC -o eval.parquet`: held-out win-rate against the teacher.

    dno eval runs/demo/prompts.parquet --model runs/demo/iter-01/checkpoint \
        --judge oracle:addition --teacher reference -o runs/demo/iter-01/eval.parquet

Greedy answers (temperature 0) by default; accuracy is reported for verifiable judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from dno_data.api import ApiSettings, make_runner
from dno_data.artifacts import Parts, make_lineage, read_artifact
from dno_data.cli_utils import check_output_path, one_line_errors, summary, up_to_date
from dno_data.generation import SamplingParams, make_generator
from dno_data.evaluation import eval_summary, evaluate_rows
from dno_data.judges import make_judge
from dno_data.models import check_model_dir
from dno_data.sampling import select_prompts
from dno_data.teachers import Teacher


@dataclass(frozen=True)
class EvalConfig:
    prompts: Path
    model: Path
    judge: str
    output: Path
    teacher: str | None = "reference"  # reference | python:module:function | openai:MODEL | None (policy only)
    mode: str | None = None  # judge mode (see dno judge --help)
    split: str | None = "eval"
    temperature: float = 0.0  # greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 32
    backend: str = "hf"
    dtype: str = "auto"
    threads: int | None = None
    base_url: str | None = None  # openai judges: the server
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    cache: Path | None = None  # judge cache (SQLite)
    force: bool = False
    fresh: bool = False


def run(cfg: EvalConfig) -> Path:
    prompts = read_artifact(cfg.prompts, "prompts")
    check_output_path(cfg.output, [cfg.prompts])
    check_model_dir(cfg.model)
    judge = make_judge(cfg.judge, cfg.mode)
    teacher = Teacher(cfg.teacher) if cfg.teacher else None
    lineage = make_lineage("eval", [cfg.prompts, cfg.model], {**cfg.__dict__, "judge_id": judge.judge_id})
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows = select_prompts(prompts, cfg.prompts, None, cfg.split)
    if teacher is not None:
        teacher.check_prompts(rows, cfg.prompts)
    parts = Parts(cfg.output, lineage, "eval", fresh=cfg.fresh)
    generator = make_generator(cfg.backend, cfg.model, dtype=cfg.dtype, threads=cfg.threads)
    settings = ApiSettings(cfg.base_url, cfg.api_key_env, cfg.concurrency)
    evaluate_rows(rows, parts, generator=generator, params=SamplingParams(1, cfg.temperature, cfg.top_p, cfg.max_new_tokens),
                  teacher=teacher, judge=judge, model_name=str(cfg.model), seed=cfg.seed, batch_size=cfg.batch_size,
                  runner_factory=lambda: make_runner(settings, cfg.cache))
    table = parts.finish(lineage).to_pylist()
    summary(f"eval {cfg.model} -> {cfg.output}", eval_summary(table, teacher is not None, seed=cfg.seed))
    return cfg.output


@one_line_errors
def command(
    prompts: Annotated[Path, typer.Argument(help="prompts.parquet with an eval split.")],
    model: Annotated[Path, typer.Option(help="HF model folder to evaluate.")],
    judge: Annotated[str, typer.Option(help="oracle:NAME | python:module:function.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="eval.parquet to write.")],
    teacher: Annotated[str, typer.Option(help="reference | python:module:function | openai:MODEL | none (judge the policy alone).")] = "reference",
    mode: Annotated[Optional[str], typer.Option(help="Judge mode: rubric|pairwise (openai), score|pairwise (python).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Prompts of this split; 'all' for every prompt.")] = "eval",
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus top-p when sampling.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed when sampling.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts per batch and per resumable part.")] = 32,
    backend: Annotated[str, typer.Option(help="Generation backend: hf.")] = "hf",
    dtype: Annotated[str, typer.Option(help="auto|float32|bfloat16|float16.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="openai judges: OpenAI-compatible server URL.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Name of the variable holding the API key.")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="openai judges: requests in flight.")] = 16,
    cache: Annotated[Optional[Path], typer.Option(help="Judge cache (SQLite).")] = None,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard unfinished parts of a different run.")] = False,
):
    """Evaluate a model on held-out prompts against the teacher."""
    run(EvalConfig(prompts, model, judge, output, None if teacher == "none" else teacher, mode, None if split == "all" else split, temperature,
                   top_p, max_new_tokens, seed, batch_size, backend, dtype, threads, base_url, api_key_env, concurrency,
                   cache, force, fresh))
