"""prompts.parquet: every prompt of a run, with its iteration partition and split."""

import pyarrow as pa

from .common import MESSAGES

NAME = "prompts"
VERSION = 1
MADE_BY = "dno prompts SRC -o prompts.parquet"

SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),  # hash of the normalized messages
        pa.field("messages", MESSAGES, nullable=False),  # the conversation up to the answer
        pa.field("reference", pa.string()),  # optional reference answer (verifiable tasks, teacher)
        pa.field("partition", pa.int32()),  # iteration 1..T that uses the prompt; null for eval
        pa.field("split", pa.string(), nullable=False),  # "train" | "eval"
        pa.field("source", pa.string()),  # file (and row) the prompt came from
    ]
)
