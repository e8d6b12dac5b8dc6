"""The stages: one module each, with its typed config and `run(cfg)`; the `dno` commands are made from them.

    from dno_data.stages.sample import SampleConfig, run
    run(SampleConfig(prompts="runs/r/prompts.parquet", output="runs/r/iter-01/samples.parquet", model="models/sft"))

(`dno_data.api` gathers them: `from dno_data.api import sample, SampleConfig`.)

A module's config is a frozen dataclass of declared options (dno_data.config), checked when it is
built; `run(cfg)` does the work and returns what it wrote. Pipeline stages (prompts, sample,
judge, pairs, train, eval, ...) talk only through files and never import each other; the loop
(`iterate`, `compare`, `demo`, through dno_data.loop) composes their configs.

STAGES is the registry: a command name, its module and config class, and the one-line help
that `dno --help` lists. A new stage is one module plus one line here; stages/cli.py makes the
command from it. Importing a stage's module loads its config only (the work imports torch,
pyarrow or DuckDB inside `run`).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    module: str  # dno_data.stages.<module>
    config: str  # the config class's name in it
    help: str  # one line: `dno --help`


STAGES: dict[str, Stage] = {
    "prompts": Stage("prompts", "PromptsConfig", "Import prompts: stable prompt_id, duplicates removed, partitions and "
                     "eval split."),
    "sample": Stage("sample", "SampleConfig", "Sample K responses per prompt from the policy (and a teacher's answer)."),
    "merge": Stage("merge", "MergeConfig", "Merge the shards of a sharded `dno sample` run; refuses missing or doubled "
                   "prompts."),
    "judge": Stage("judge", "JudgeConfig", "Judge every prompt's candidates with a preference oracle."),
    "pairs": Stage("pairs", "PairsConfig", "Build large-margin chosen/rejected pairs from judgments (DuckDB)."),
    "train": Stage("train", "TrainConfig", "Train pi_{t+1} on pairs with the DNO contrastive loss (reference = pi_t)."),
    "sft": Stage("sft", "SftConfig", "Supervised fine-tuning on teacher answers, best samples or chosen responses."),
    "eval": Stage("eval", "EvalConfig", "Evaluate a model on held-out prompts against the teacher."),
    "iterate": Stage("iterate", "IterateConfig", "Run DNO iterations over a run folder: sample, judge, pairs, train, "
                     "eval."),
    "compare": Stage("compare", "CompareConfig", "Compare SFT, offline DPO and DNO on one run folder, with matched "
                     "budgets."),
    "export": Stage("export", "ExportConfig", "Write pairs.parquet as TRL / HF datasets preference data (prompt, "
                    "chosen, rejected)."),
    "sql": Stage("sql", "SqlConfig", "Query a run's artifacts with DuckDB SQL."),
    "report": Stage("report", "ReportConfig", "Write an HTML report of one or more runs: results with intervals, best "
                    "iterate, pairs, judge, training."),
    "demo": Stage("demo", "DemoConfig", "Run the whole DNO loop on a toy addition task (CPU, a few minutes)."),
    "model import-gguf": Stage("model", "ImportGgufConfig", "Dequantize a GGUF checkpoint into an HF folder "
                               "(config.json, model.safetensors, tokenizer)."),
}
GROUPS = {"model": "Model folders: import a GGUF checkpoint as an HF folder."}  # commands with sub-commands


def load(name: str):
    """(config class, run function) of the command `name`; the function takes object-storage URLs
    (`s3://...`) wherever the config takes paths (dno_data.staging)."""
    stage = STAGES[name]
    module = importlib.import_module(f"{__name__}.{stage.module}")
    return getattr(module, stage.config), _located(module.run)


@functools.cache  # one function per stage: load(name)[1] is load(name)[1]
def _located(run):
    """run(cfg), on local copies of the config's storage URLs when it has any (dno_data.staging.run_staged)."""

    @functools.wraps(run)
    def run_at(cfg):
        from .. import output_lock
        from ..parts import discard_unstarted_work
        from ..staging import run_staged

        held = output_lock.held()
        try:
            return run_staged(cfg, run)
        except BaseException:
            discard_unstarted_work()  # a refused or failed command leaves no empty work folder behind,
            output_lock.release_all(but=held)  # nor a lock file (in this process: the API, tests)
            raise

    return run_at


def stage_name(cfg) -> str:
    """The command of a config (its class): e.g. "sample", "model import-gguf"."""
    cls = cfg if isinstance(cfg, type) else type(cfg)
    for name, stage in STAGES.items():
        if cls.__module__ == f"{__name__}.{stage.module}" and cls.__name__ == stage.config:
            return name
    raise KeyError(f"{cls.__name__} is not a stage's config")
