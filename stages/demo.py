"""`dno demo`: the whole DNO loop on a toy task that runs on a laptop CPU in a few minutes.

    dno demo                       # writes runs/demo/, prints a table per iteration, plots report.png

The task is multi-digit addition. The initial policy is a tiny character-level Llama that
the demo trains itself (a short supervised run, deliberately weak); the preference oracle is
a verifiable judge (`oracle:addition`: 6 for the exact sum, partial credit below 5 otherwise);
the teacher is the exact answer. Each iteration runs the real stages as separate processes:
sample (K per prompt + teacher) -> judge -> pairs (paper rule) -> train (reference = pi_t) -> eval.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from dno_data.cli_utils import one_line_errors, say
from dno_data.errors import DnoError
from dno_data.loop import LoopSettings, eval_command, iteration_commands, run_dno


@dataclass(frozen=True)
class DemoConfig:
    output: Path = Path("runs/demo")
    iterations: int = 3
    digits: int = 3  # operand digits: 347+589
    prompts_per_iteration: int = 256  # one disjoint partition per iteration
    eval_size: int = 300  # held-out prompts
    sft_steps: int = 420  # short on purpose: a weak initial policy leaves room to improve
    k: int = 4  # samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 32  # pairs per training step
    seed: int = 0
    plot: bool = True


def run(cfg: DemoConfig) -> Path:
    from dno_data import demo_task
    from dno_data.run_views import open_run
    from dno_data.sql import query_polars, load_sql

    if cfg.iterations < 1:
        raise DnoError("--iterations must be at least 1")
    t_start = time.time()
    run_dir = cfg.output
    run_dir.mkdir(parents=True, exist_ok=True)

    # 1. prompts: problems as JSONL, imported like any user's data.
    source = run_dir / "source.jsonl"
    n = cfg.prompts_per_iteration * cfg.iterations + cfg.eval_size
    problems = demo_task.make_problems(n, seed=cfg.seed, digits=cfg.digits)
    text = "".join(json.dumps(p) + "\n" for p in problems)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_dno(["prompts", str(source), "-o", str(run_dir / "prompts.parquet"), "--text-column", "prompt",
             "--reference-column", "reference", "--partitions", str(cfg.iterations),
             "--eval-size", str(cfg.eval_size), "--seed", str(cfg.seed)])

    # 2. the initial policy pi_1 (trained once; kept while the settings are the same).
    policy = run_dir / "policy-0"
    stamp = {"digits": cfg.digits, "sft_steps": cfg.sft_steps, "seed": cfg.seed}
    marker = policy / "demo-sft.json"
    if not (marker.exists() and json.loads(marker.read_text()) == stamp):
        say(f"training the initial policy ({cfg.sft_steps} supervised steps) -> {policy}")
        demo_task.train_initial_policy(policy, steps=cfg.sft_steps, seed=cfg.seed, digits=cfg.digits)
        marker.write_text(json.dumps(stamp))

    # 3. the loop, stage by stage, as separate `dno` processes.
    settings = LoopSettings(
        run=run_dir, model=policy, judge="oracle:addition", iterations=cfg.iterations, teacher="reference",
        sample_args=("-k", str(cfg.k), "--temperature", str(cfg.temperature), "--top-p", str(cfg.top_p),
                     "--max-new-tokens", str(cfg.digits + 3), "--batch-size", "128", "--seed", str(cfg.seed)),
        train_args=("--beta", str(cfg.beta), "--learning-rate", str(cfg.learning_rate), "--batch-size",
                    str(cfg.batch_size), "--warmup-ratio", "0.1", "--max-length", "32", "--seed", str(cfg.seed)),
        eval_args=("--max-new-tokens", str(cfg.digits + 3), "--batch-size", "300"),
    )
    run_dno(eval_command(settings, 0))
    for t in range(1, cfg.iterations + 1):
        say(f"\n=== iteration {t} ===")
        for cmd in iteration_commands(settings, t):
            run_dno(cmd)
        _report(open_run, load_sql, query_polars, run_dir)

    elapsed = time.time() - t_start
    rows = _report(open_run, load_sql, query_polars, run_dir, final=True)
    if cfg.plot:
        _plot(rows, run_dir / "report.png")
        say(f"plot: {run_dir / 'report.png'}")
    say(f"demo finished in {elapsed:.0f}s; inspect it with: dno sql --run {run_dir} \"SELECT * FROM pairs LIMIT 5\"")
    (run_dir / "report.json").write_text(json.dumps({"config": asdict(cfg) | {"output": str(cfg.output)},
                                                     "seconds": round(elapsed, 1), "iterations": rows}, indent=2))
    return run_dir


def _report(open_run, load_sql, query_polars, run_dir: Path, final: bool = False) -> list[dict]:
    import polars as pl

    con, _ = open_run(run_dir)
    df = query_polars(con, load_sql("demo_report"))
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=50, tbl_cols=20):
        say(("\nDNO demo: held-out accuracy per iteration (0 = initial policy)\n" if final else "") + str(df))
    return df.to_dicts()


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(it, [r["accuracy_pct"] for r in rows], marker="o", label="held-out accuracy %")
    ax.plot(it, [r["winrate_vs_teacher_pct"] for r in rows], marker="s", label="win-rate vs teacher %")
    ax.set_xlabel("DNO iteration (0 = initial policy)")
    ax.set_xticks(it)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title("dno demo: addition, tiny policy, verifiable judge")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@one_line_errors
def command(
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder to write.")] = Path("runs/demo"),
    iterations: Annotated[int, typer.Option(help="DNO iterations.")] = 3,
    prompts_per_iteration: Annotated[int, typer.Option(help="Train prompts per iteration.")] = 256,
    eval_size: Annotated[int, typer.Option(help="Held-out prompts.")] = 300,
    sft_steps: Annotated[int, typer.Option(help="Supervised steps of the initial policy.")] = 420,
    k: Annotated[int, typer.Option("-k", "--k", help="Samples per prompt.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of data, initial policy and sampling.")] = 0,
    plot: Annotated[bool, typer.Option(help="Write report.png.")] = True,
):
    """Run the whole DNO loop on a toy addition task (CPU, a few minutes)."""
    run(DemoConfig(output=output, iterations=iterations, prompts_per_iteration=prompts_per_iteration,
                   eval_size=eval_size, sft_steps=sft_steps, k=k, seed=seed, plot=plot))
