"""`dno demo`: the whole DNO loop on a toy task that runs on a laptop CPU in a few minutes.

    dno demo                       # writes runs/demo/, prints a table per iteration, plots report.png
    dno demo --compare -o runs/compare   # the paper's comparison on this task (dno_data/compare.py)
    dno demo --compare --seeds 0,1,2 -o runs/compare   # ... every arm with 3 seeds (`just compare`)
    dno demo --compare --methods dno,offline-dpo,sft,rft,offline-kto -o runs/compare   # with offline KTO

The task is 2-digit addition ("47+85" -> "132"). The initial policy is a tiny
character-level Llama (132 k parameters) that the demo trains itself: supervised training
stops as soon as it gets 20 % of a validation set right, so it starts weak whatever the seed;
the preference oracle is a verifiable judge (`oracle:addition`: 6 for the exact sum, partial
credit of at most 4 otherwise); the teacher is the exact answer. Held-out prompts come from a
split the initial policy never trained on. Each iteration runs the real stages as separate processes:
sample (K per prompt + teacher) -> judge -> pairs (paper rule) -> train (reference = pi_t) -> eval.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..compare import DEFAULT_METHODS, METHODS
from ..config import Config, above, at_least, comma_list, in_range, local_path, opt, seed_list, to_options
from ..config.groups import TEMPERATURE, THREADS, TOP_P
from ..reproducibility import DEFAULT_THREADS


@dataclass(frozen=True, kw_only=True)
class DemoConfig(Config):
    """Run the whole DNO loop on a toy addition task (CPU, a few minutes)."""

    output: Path = opt("Run folder to write.", Path("runs/demo"), flags=("-o", "--output"), changes_output=False,
                       check=local_path)
    iterations: int = opt("DNO iterations.", 3, check=at_least(1))
    digits: int = opt("Operand digits (2: 47+85).", 2, check=in_range(1, 6))
    # one disjoint partition per iteration; gains grow with pairs
    prompts_per_iteration: int = opt("Train prompts per iteration.", 1900, check=at_least(1))
    eval_size: int = opt("Held-out prompts (a split the initial policy never saw).", 500, check=at_least(1))
    sft_accuracy: float = opt("Validation accuracy at which the initial policy stops training.", 0.2,
                              check=in_range(0, 1, lo_open=True))
    k: int = opt("Samples per prompt.", 8, flags=("-k", "--k"), check=at_least(1))
    # diverse samples give more, and more varied, negatives than 0.7
    temperature: float = TEMPERATURE.field(1.0)
    top_p: float = TOP_P.field(1.0)
    # large for this tiny model: beta 0.1 keeps pushing near-miss digits and collapses it
    beta: float = opt("DNO beta (train --beta).", 2.0, check=above(0))
    learning_rate: float = opt("train --learning-rate.", 6e-4, check=above(0))
    batch_size: int = opt("Pairs per training step.", 32, check=at_least(1))
    seed: int = opt("Seed of data, initial policy and sampling.", 0)
    teacher: str = opt("Teacher answers: reference (the exact sum) or python:dno_data.tasks.addition:careless_teacher "
                       "(forgets the units carry on about 1 problem in 5; the judge still checks the true sum).",
                       "reference")
    threads: int = THREADS.field(DEFAULT_THREADS)
    plot: bool = opt("Write report.png.", True)
    compare: bool = opt("Run the paper's comparison instead (`dno compare`: dno, offline-dpo, sft, rft with matched "
                        "budgets) into the output folder; `just compare`.", False)
    methods: tuple[str, ...] = opt(f"With --compare: comma-separated methods among {','.join(METHODS)} (dno is "
                                   "required).", DEFAULT_METHODS, cli_type=str, normalize=comma_list)
    seeds: tuple[int, ...] | None = opt("With --compare: comma-separated seeds of sampling, pair subsets and training "
                                        "(0,1,2), each running every arm; the problems, the initial policy and the "
                                        "held-out split stay those of --seed.", None, cli_type=str,
                                        normalize=seed_list)
    tune: bool = opt("With --compare: pick each arm's learning rate (and beta) from one small grid on a validation "
                     "split first (`dno compare --tune`).", False)

    def validate(self) -> None:
        from ..compare import check_methods
        from ..errors import DnoError

        check_methods(self.methods)
        if (self.seeds is not None or self.tune) and not self.compare:
            raise DnoError("--seeds and --tune are for --compare (dno demo runs one seed: --seed)")


def run(cfg: DemoConfig) -> Path:
    """Write the demo's run folder (prompts, pi_1, every iteration) and return it."""
    from ..console import say
    from ..duckdb_sql import load_sql, query_polars
    from ..loop import check, eval_config, iteration_configs, run_step
    from ..reproducibility import configure_torch
    from ..run_layout import RunLayout
    from ..run_views import open_run
    from ..stages.prompts import PromptsConfig
    from ..tasks import addition as demo_task

    settings = loop_settings(cfg, cfg.output / "policy-0")
    check(settings, eval_initial=True)  # every stage config, before anything runs
    t_start = time.time()
    run_dir = cfg.output
    run_dir.mkdir(parents=True, exist_ok=True)

    # 1. prompts: problems as JSONL, imported like any user's data.
    source = run_dir / "source.jsonl"
    train = demo_task.make_problems(cfg.prompts_per_iteration * cfg.iterations, seed=cfg.seed, digits=cfg.digits)
    held_out = demo_task.make_problems(cfg.eval_size, seed=cfg.seed, digits=cfg.digits, split="heldout")
    rows = [{**p, "split": "train"} for p in train] + [{**p, "split": "eval"} for p in held_out]
    text = "".join(json.dumps(p) + "\n" for p in rows)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    run_step(PromptsConfig(src=source, output=RunLayout(run_dir).prompts, text_column="prompt",
                           reference_column="reference", split_column="split", partitions=cfg.iterations,
                           seed=cfg.seed))

    # 2. the initial policy pi_1 (trained once; kept while the settings are the same).
    policy = run_dir / "policy-0"
    # the held-out split by sorted operands ("canonical") changed the initial policy's data
    stamp = {"digits": cfg.digits, "sft_accuracy": cfg.sft_accuracy, "seed": cfg.seed, "threads": cfg.threads,
             "split": "canonical"}
    marker = policy / "demo-sft.json"
    if not (marker.exists() and json.loads(marker.read_text()) == stamp):
        say(f"training the initial policy (until {cfg.sft_accuracy:.0%} validation accuracy) -> {policy}")
        configure_torch(cfg.threads)
        model, _ = demo_task.train_initial_policy(policy, seed=cfg.seed, digits=cfg.digits,
                                                  stop_at_accuracy=cfg.sft_accuracy)
        say(f"  {model.sft_steps} supervised steps")
        marker.write_text(json.dumps(stamp))

    # 3. the loop, stage by stage, as separate `dno` processes: the iteration of `dno iterate` / `just iterate`.
    if cfg.compare:
        return _compare(settings, cfg.methods, t_start, cfg.seeds, cfg.tune)
    run_step(eval_config(settings, 0))
    for t in range(1, cfg.iterations + 1):
        say(f"\n=== iteration {t} ===")
        for step in iteration_configs(settings, t):
            run_step(step)
        if t < cfg.iterations:  # the last iteration's table is the final one, printed once below
            _report(open_run, load_sql, query_polars, run_dir)

    elapsed = time.time() - t_start
    rows = _report(open_run, load_sql, query_polars, run_dir, final=True)
    if cfg.plot:
        _plot(rows, run_dir / "report.png")
        say(f"plot: {run_dir / 'report.png'}")
    say(f"demo finished in {elapsed:.0f}s; inspect it with: dno sql --run {run_dir} \"SELECT * FROM pairs LIMIT 5\"")
    (run_dir / "report.json").write_text(json.dumps({"config": {k: str(v) if isinstance(v, Path) else v
                                                                for k, v in to_options(cfg).items()},
                                                     "seconds": round(elapsed, 1), "iterations": rows}, indent=2))
    return run_dir


def _compare(settings, methods: tuple[str, ...], t_start: float, seeds: tuple[int, ...] | None = None,
             tune: bool = False) -> Path:
    from dataclasses import replace

    from ..compare import CompareSettings, run_comparison, sft_options_from_train
    from ..compare_table import markdown, table_rows
    from ..console import say

    options = {**settings.options, "sft": sft_options_from_train(settings.of("train"))}
    c = CompareSettings(replace(settings, options=options), methods=methods, seeds=seeds, tune=tune)
    out = run_comparison(c, say=say)
    say("\nthe paper's comparison on the demo task (held-out accuracy, bootstrap 95 % intervals)\n"
        + markdown(table_rows(c)))
    say(f"comparison finished in {time.time() - t_start:.0f}s; table {out} (.csv, .md), plot {out.with_suffix('.png')}")
    return out


def loop_settings(cfg: DemoConfig, policy: Path):
    """The demo's iteration as `dno iterate` settings (policy = the initial policy pi_1)."""
    from ..loop import LoopSettings

    return LoopSettings(
        run=cfg.output, model=policy, judge="oracle:addition", iterations=cfg.iterations, teacher=cfg.teacher,
        options={
            "sample": {"k": cfg.k, "temperature": cfg.temperature, "top_p": cfg.top_p,
                       "max_new_tokens": cfg.digits + 2, "batch_size": 512, "seed": cfg.seed, "threads": cfg.threads},
            "train": {"beta": cfg.beta, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
                      "warmup_ratio": 0.1, "lr_scheduler": "linear", "max_grad_norm": 1.0, "max_length": 32,
                      "save_every": 0, "seed": cfg.seed, "threads": cfg.threads},
            "eval": {"max_new_tokens": cfg.digits + 2, "batch_size": 500, "threads": cfg.threads},
        })


def _report(open_run, load_sql, query_polars, run_dir: Path, final: bool = False) -> list[dict]:
    import polars as pl

    from ..console import say

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

