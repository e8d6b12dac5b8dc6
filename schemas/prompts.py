"""prompts.parquet: every prompt of a run, with its iteration partition and split.

A multi-turn prompt (MT-Bench's shape) asks its user turns one after another: `messages` ends with the
first turn asked (after any context: a system message, earlier turns written by someone else), and
`follow_ups` holds the later user turns, each asked after the model's own answer to the turn before.
`dno eval` asks them all; the other stages use `messages` alone.
"""

import pyarrow as pa

from .common import MESSAGES

NAME = "prompts"
VERSION = 2  # 2: follow_ups, follow_up_references (multi-turn prompts)
MADE_BY = "dno prompts SRC -o prompts.parquet"

SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),  # hash of the normalized messages
        pa.field("messages", MESSAGES, nullable=False),  # the conversation up to the (first) answer
        pa.field("reference", pa.string()),  # optional reference answer (verifiable tasks, teacher)
        pa.field("follow_ups", pa.list_(pa.string())),  # later user turns, asked in order; null: one turn
        pa.field("follow_up_references", pa.list_(pa.string())),  # each follow-up's reference (null: none)
        pa.field("partition", pa.int32()),  # iteration 1..T that uses the prompt; null for eval
        pa.field("split", pa.string(), nullable=False),  # "train" | "eval"
        pa.field("source", pa.string()),  # file (and row) the prompt came from
    ]
)
