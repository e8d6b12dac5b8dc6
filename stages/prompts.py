"""`dno prompts SRC -o prompts.parquet`: import prompts, give them stable ids, partitions and a held-out split.

    dno prompts data.jsonl -o runs/demo/prompts.parquet --partitions 3 --eval-size 200
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from dno_data.artifacts import check_output, make_lineage, write_artifact
from dno_data.cli_utils import one_line_errors, summary, up_to_date
from dno_data.errors import DnoError
from dno_data.prompts_import import import_prompts


@dataclass(frozen=True)
class PromptsConfig:
    src: Path  # JSONL, JSON, CSV or Parquet
    output: Path
    text_column: str | None = None  # a plain-text prompt per row (guessed: prompt, instruction, question, text)
    messages_column: str | None = None  # a list of {role, content} per row (guessed: messages)
    reference_column: str | None = None  # optional reference answer (verifiable judges, teacher=reference)
    split_column: str | None = None  # a column of train|eval, when the data comes already split
    system: str | None = None  # a system message to put first, when a row has none
    partitions: int = 1  # T: one disjoint partition of train prompts per iteration
    eval_size: int = 0  # prompts held out as the eval split
    seed: int = 0  # changes which prompts land in which partition / split
    force: bool = False


def run(cfg: PromptsConfig) -> Path:
    if not Path(cfg.src).is_file():
        raise DnoError(f"{cfg.src}: no such file; pass a JSONL, JSON, CSV or Parquet file of prompts")
    check_output(cfg.output, [cfg.src])
    lineage = make_lineage("prompts", [cfg.src], cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows, counts = import_prompts(
        cfg.src, text_column=cfg.text_column, messages_column=cfg.messages_column,
        reference_column=cfg.reference_column, split_column=cfg.split_column, system=cfg.system, partitions=cfg.partitions,
        eval_size=cfg.eval_size, seed=cfg.seed,
    )
    write_artifact(rows, cfg.output, "prompts", lineage)
    summary(f"prompts -> {cfg.output}", {**counts, "written": len(rows)})
    return cfg.output


@one_line_errors
def command(
    src: Annotated[Path, typer.Argument(help="Prompts as JSONL, JSON, CSV or Parquet.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="prompts.parquet to write.")],
    text_column: Annotated[Optional[str], typer.Option(help="Column with a plain-text prompt.")] = None,
    messages_column: Annotated[Optional[str], typer.Option(help="Column with a list of {role, content} messages.")] = None,
    reference_column: Annotated[Optional[str], typer.Option(help="Column with a reference answer.")] = None,
    split_column: Annotated[Optional[str], typer.Option(help="Column of train|eval, for data already split.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System message to prepend.")] = None,
    partitions: Annotated[int, typer.Option(help="Disjoint partitions, one per iteration.")] = 1,
    eval_size: Annotated[int, typer.Option(help="Prompts held out as the eval split.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the partition / split assignment.")] = 0,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
):
    """Import prompts: stable prompt_id, duplicates removed, partitions and eval split."""
    run(PromptsConfig(src, output, text_column, messages_column, reference_column, split_column, system, partitions,
                      eval_size, seed, force))
