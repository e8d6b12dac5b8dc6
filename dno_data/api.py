"""The Python API: every `dno` command as a function of its typed config, the same call the CLI makes.

    from dno_data.api import (JudgeConfig, JudgeSettings, PairsConfig, PromptsConfig, SampleConfig, Sampling,
                              TrainConfig, TrainOptions, judge, pairs, prompts, sample, train)

    prompts(PromptsConfig(src="data.jsonl", output="runs/r/prompts.parquet", partitions=2))
    sample(SampleConfig(prompts="runs/r/prompts.parquet", output="runs/r/iter-01/samples.parquet",
                        model="models/sft", partition=1, k=4, sampling=Sampling(temperature=0.7),
                        teacher="reference"))
    judge(JudgeConfig(samples="runs/r/iter-01/samples.parquet", output="runs/r/iter-01/judgments.parquet",
                      judge=JudgeSettings(spec="oracle:addition")))
    pairs(PairsConfig(judgments=..., samples=..., output="runs/r/iter-01/pairs.parquet"))
    train(TrainConfig(pairs=..., model="models/sft", output="runs/r/iter-01/checkpoint",
                      training=TrainOptions(beta=0.1, learning_rate=5e-7)))

A config is checked when it is built (a bad value is a DnoError naming the option); each function
does the stage's work (resuming what a killed run finished, skipping an up-to-date output) and
returns what it wrote. `from_options(SampleConfig, temperature=0.5, ...)` builds a config from the
command line's option names; `command_line(cfg)` is the `dno` command that equals a config.
Nothing heavy is imported until a stage runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import from_options, replace, to_options

# name -> (module, attribute)
_EXPORTS = {
    "Api": ("dno_data.config.groups", "Api"),
    "JudgeSettings": ("dno_data.config.groups", "JudgeSettings"),
    "ModelLoading": ("dno_data.config.groups", "ModelLoading"),
    "Sampling": ("dno_data.config.groups", "Sampling"),
    "TeacherCall": ("dno_data.config.groups", "TeacherCall"),
    "TrainOptions": ("dno_data.training.options", "TrainOptions"),
    "RuleParams": ("dno_data.pair_rules", "RuleParams"),
    "LoopSettings": ("dno_data.loop", "LoopSettings"),
    "command_line": ("dno_data.loop", "command_line"),
}


def _functions() -> dict[str, str]:
    """Python name -> command, from the registry: `sample`, ..., `evaluate` (eval is a builtin), `import_gguf`."""
    from .stages import STAGES

    return {{"eval": "evaluate"}.get(n, n.split()[-1].replace("-", "_")): n for n in STAGES}


def __getattr__(name: str) -> Any:
    from .stages import STAGES, load

    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    if name in _functions():  # e.g. sample(cfg): dno_data.stages.sample.run
        return load(_functions()[name])[1]
    for command, stage in STAGES.items():  # e.g. SampleConfig
        if stage.config == name:
            return load(command)[0]
    raise AttributeError(f"module 'dno_data.api' has no attribute {name!r}")


def run(cfg) -> Any:
    """Run the stage whose config `cfg` is (e.g. a SampleConfig runs `dno sample`) and return what it wrote."""
    from .stages import load, stage_name

    return load(stage_name(cfg))[1](cfg)


def __dir__() -> list[str]:
    from .stages import STAGES

    return sorted([*_EXPORTS, *_functions(), *(s.config for s in STAGES.values()), "run", "from_options",
                   "replace", "to_options"])


__all__ = ["from_options", "replace", "run", "to_options"]
