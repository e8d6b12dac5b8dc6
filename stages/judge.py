"""`dno judge SAMPLES -o judgments.parquet --judge SPEC`: the preference oracle over each prompt's candidates.

    dno judge runs/demo/iter-01/samples.parquet -o runs/demo/iter-01/judgments.parquet --judge oracle:addition
    dno judge samples.parquet -o judgments.parquet --judge python:my_judges:prefer --mode pairwise

Judges: oracle:exact, oracle:addition (built-in, verifiable), python:module:function
(a scorer fn(messages, response[, reference]) -> float, or with --mode pairwise
fn(messages, a, b[, reference]) -> P(a > b)). Failures are rows with a status.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from dno_data.artifacts import Parts, make_lineage, read_artifact
from dno_data.cli_utils import check_output_path, one_line_errors, summary, up_to_date
from dno_data.errors import DnoError
from dno_data.judges import make_judge
from dno_data.judging import groups_of, judge_groups


@dataclass(frozen=True)
class JudgeConfig:
    samples: Path
    output: Path
    judge: str  # oracle:NAME | python:module:function
    mode: str = "score"  # score (each candidate) | pairwise (each pair, both orders)
    both_orders: bool = True  # pairwise: ask (a, b) and (b, a) to cancel position bias
    prompts_per_part: int = 64  # prompts judged per resumable part
    force: bool = False
    fresh: bool = False


def run(cfg: JudgeConfig) -> Path:
    samples = read_artifact(cfg.samples, "samples")
    if len(samples) == 0:
        raise DnoError(f"{cfg.samples}: no samples to judge; rerun `dno sample`")
    check_output_path(cfg.output, [cfg.samples])
    judge = make_judge(cfg.judge, cfg.mode, cfg.both_orders)
    lineage = make_lineage("judge", [cfg.samples], {**cfg.__dict__, "judge_id": judge.judge_id})
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    groups = groups_of(samples)
    parts = Parts(cfg.output, lineage, "judgments", fresh=cfg.fresh)
    counts = judge_groups(groups, judge, parts, max(1, cfg.prompts_per_part))
    table = parts.finish(lineage)
    status = Counter(table["status"].to_pylist())
    summary(f"judgments -> {cfg.output}", {"prompts": len(groups), "samples": len(samples), "judgments": len(table),
                                           **{f"status {k}": v for k, v in sorted(status.items())},
                                           **{k: v for k, v in counts.items() if v}})
    return cfg.output


@one_line_errors
def command(
    samples: Annotated[Path, typer.Argument(help="samples.parquet (from `dno sample`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="judgments.parquet to write.")],
    judge: Annotated[str, typer.Option(help="oracle:exact | oracle:addition | python:module:function.")],
    mode: Annotated[str, typer.Option(help="score: each candidate; pairwise: each pair.")] = "score",
    both_orders: Annotated[bool, typer.Option(help="Pairwise: judge (a,b) and (b,a).")] = True,
    prompts_per_part: Annotated[int, typer.Option(help="Prompts per resumable part.")] = 64,
    force: Annotated[bool, typer.Option(help="Redo even when the output is up to date.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard unfinished parts of a different run.")] = False,
):
    """Judge every prompt's candidates with a preference oracle."""
    run(JudgeConfig(samples, output, judge, mode, both_orders, prompts_per_part, force, fresh))
