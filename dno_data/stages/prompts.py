"""`dno prompts SRC -o prompts.parquet`: import prompts, give them stable ids, partitions and a held-out split.

    dno prompts data.jsonl -o runs/demo/prompts.parquet --partitions 3 --eval-size 200
    dno prompts question.jsonl -o mt_bench.parquet --reference-column reference   # MT-Bench's questions (turns)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, at_least, one_of, opt
from ..errors import DnoError
from .common import FORCE, OUTPUT_FILE


@dataclass(frozen=True, kw_only=True)
class PromptsConfig(Config):
    """Import prompts: stable prompt_id, duplicates removed, partitions and eval split."""

    src: Path = opt("Prompts as JSONL, JSON (also .gz), CSV, Parquet, or a datasets save_to_disk folder.",
                    argument=True)
    output: Path = OUTPUT_FILE.field(help="prompts.parquet to write.")
    # guessed when neither is given: messages, conversations, prompt, instruction (+ input), question, text
    text_column: str | None = opt("Column with a plain-text prompt (`instruction` is joined with an `input` "
                                  "column as Alpaca does).", None)
    messages_column: str | None = opt("Column with a conversation: {role, content} or ShareGPT {from, value} "
                                      "messages; which user turns are asked: --ask-turns.", None)
    turns_column: str | None = opt("Column with a list of user turns (MT-Bench's `turns`), each asked after the "
                                   "model's own answer to the one before (dno eval).", None)
    # last: the earlier turns are context written by someone else; all: the model answers every turn itself
    ask_turns: str = opt("Conversations: last (the last user turn is asked, the turns before it are context, "
                         "the assistant turn after it is the reference) or all (every user turn is asked in "
                         "order, each after the model's own answer; the conversation's answers are the "
                         "references).", "last", check=one_of("last", "all"))
    # optional reference answer (verifiable judges, --teacher reference)
    reference_column: str | None = opt("Column with a reference answer, or a list of one per turn (MT-Bench's "
                                       "`reference`).", None)
    split_column: str | None = opt("Column of train|eval, for data already split.", None)
    system: str | None = opt("System message to put first, when a row has none.", None)
    partitions: int = opt("Disjoint partitions of the train prompts, one per iteration.", 1, check=at_least(1))
    eval_size: int = opt("Prompts held out as the eval split.", 0, check=at_least(0))
    seed: int = opt("Seed of the partition / split assignment.", 0)
    max_prompt_chars: int = opt("Prompts longer than this (characters, all messages) are dropped and counted.",
                                100_000, check=at_least(1))
    force: bool = FORCE.field(False)


def run(cfg: PromptsConfig) -> Path:
    from ..artifacts import write_artifact
    from ..console import summary, up_to_date
    from ..lineage import make_lineage
    from ..paths import check_output
    from ..prompts_import import KINDS, import_prompts

    if not Path(cfg.src).exists():
        raise DnoError(f"{cfg.src}: no such file; pass {KINDS} of prompts")
    check_output(cfg.output, [cfg.src], kind="prompts")
    lineage = make_lineage("prompts", [cfg.src], cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    rows, counts, used = import_prompts(
        cfg.src, text_column=cfg.text_column, messages_column=cfg.messages_column, turns_column=cfg.turns_column,
        ask_turns=cfg.ask_turns,
        reference_column=cfg.reference_column, split_column=cfg.split_column, system=cfg.system, partitions=cfg.partitions,
        eval_size=cfg.eval_size, seed=cfg.seed, max_prompt_chars=cfg.max_prompt_chars,
    )
    write_artifact(rows, cfg.output, "prompts", lineage)
    summary(f"prompts -> {cfg.output}", {**{f"{k} column": v for k, v in used.items()}, **counts,
                                         "written": len(rows)})
    return cfg.output

