"""`dno sample PROMPTS -o samples.parquet --model DIR`: K responses per prompt from the policy.

    dno sample runs/demo/prompts.parquet -o runs/demo/iter-01/samples.parquet \
        --model runs/demo/policy-0 --partition 1 -k 5 --temperature 0.7 --top-p 0.95 \
        --teacher reference

Writes finished batches to `<output>.parts/`; after a crash, the same command resumes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from dno_data.artifacts import Parts, describe_inputs, make_lineage, read_artifact
from dno_data.cli_utils import check_output_path, one_line_errors, summary, up_to_date
from dno_data.errors import DnoError
from dno_data.generation import SamplingParams, make_generator
from dno_data.ids import stable_hash
from dno_data.models import check_model_dir
from dno_data.sampling import sample_rows, select_prompts
from dno_data.teachers import Teacher


@dataclass(frozen=True)
class SampleConfig:
    prompts: Path
    output: Path
    model: Path | None = None  # HF folder of the policy pi_t; None = teacher only
    backend: str = "hf"  # hf (transformers)
    k: int = 5  # samples per prompt (the paper: 5)
    temperature: float = 0.7  # the paper: 0.7
    top_p: float = 0.95  # the paper: 0.95
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 16  # prompts per generate() call and per resumable part
    partition: int | None = None  # only prompts of this iteration partition
    split: str | None = "train"  # train | eval | None for all
    teacher: str | None = None  # reference | python:module:function
    dtype: str = "auto"
    threads: int | None = None  # torch CPU threads
    force: bool = False
    fresh: bool = False  # discard unfinished parts of a different run


def run(cfg: SampleConfig) -> Path:
    if cfg.model is None and cfg.teacher is None:
        raise DnoError("nothing to sample: pass --model DIR, --teacher SPEC or both")
    if cfg.k < 1 or cfg.batch_size < 1:
        raise DnoError("-k and --batch-size must be at least 1")
    prompts = read_artifact(cfg.prompts, "prompts")
    check_output_path(cfg.output, [cfg.prompts])
    if cfg.model is not None:
        check_model_dir(cfg.model)
    teacher = Teacher(cfg.teacher) if cfg.teacher else None
    inputs = [cfg.prompts] + ([cfg.model] if cfg.model else [])
    lineage = make_lineage("sample", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows = select_prompts(prompts, cfg.prompts, cfg.partition, cfg.split)
    params = SamplingParams(cfg.k, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    generator, generator_id = None, ""
    if cfg.model is not None:
        model_hash = lineage["inputs"][1]["sha256"]
        generator_id = stable_hash("generator", cfg.backend, model_hash, params.__dict__)
    if teacher is not None:
        teacher.check_prompts(rows, cfg.prompts)
    parts = Parts(cfg.output, lineage, "samples", fresh=cfg.fresh)
    if cfg.model is not None and parts.count_done() < -(-len(rows) // cfg.batch_size):
        generator = make_generator(cfg.backend, cfg.model, dtype=cfg.dtype, threads=cfg.threads)
    counts = sample_rows(rows, parts, generator=generator, params=params, generator_name=str(cfg.model),
                         generator_id=generator_id, seed=cfg.seed, batch_size=cfg.batch_size, teacher=teacher)
    table = parts.finish(lineage)
    by_source = Counter(table["source"].to_pylist())
    summary(f"samples -> {cfg.output}", {"prompts": len(rows), **{f"{k} samples": v for k, v in by_source.items()},
                                         **{k: v for k, v in counts.items() if v}})
    return cfg.output


@one_line_errors
def command(
    prompts: Annotated[Path, typer.Argument(help="prompts.parquet (from `dno prompts`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="samples.parquet to write.")],
    model: Annotated[Optional[Path], typer.Option(help="HF model folder of the current policy.")] = None,
    backend: Annotated[str, typer.Option(help="Generation backend: hf.")] = "hf",
    k: Annotated[int, typer.Option("-k", "--k", help="Samples per prompt.")] = 5,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling top-p.")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Longest response in tokens.")] = 256,
    seed: Annotated[int, typer.Option(help="Sampling seed (part of each sample_id).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts per batch and per resumable part.")] = 16,
    partition: Annotated[Optional[int], typer.Option(help="Only prompts of this partition (iteration).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Only prompts of this split (train|eval); 'all' for every prompt.")] = "train",
    teacher: Annotated[Optional[str], typer.Option(help="Add one teacher response per prompt: reference | python:module:function.")] = None,
    dtype: Annotated[str, typer.Option(help="Model dtype: auto|float32|bfloat16|float16.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads.")] = None,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard unfinished parts of a different run.")] = False,
):
    """Sample K responses per prompt from the policy (and a teacher's answer)."""
    run(SampleConfig(prompts, output, model, backend, k, temperature, top_p, max_new_tokens, seed, batch_size,
                     partition, None if split == "all" else split, teacher, dtype, threads, force, fresh))
