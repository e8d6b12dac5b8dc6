"""eval.parquet: held-out prompts, the policy's answer against the teacher's."""

import pyarrow as pa

from .common import MESSAGES

NAME = "eval"
VERSION = 1
MADE_BY = "dno eval PROMPTS --model DIR --judge SPEC -o eval.parquet"

SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("messages", MESSAGES, nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),  # the policy's answer
        pa.field("teacher_response", pa.string()),
        pa.field("judge_id", pa.string(), nullable=False),
        pa.field("policy_score", pa.float64()),
        pa.field("teacher_score", pa.float64()),
        pa.field("win", pa.float64()),  # P(policy > teacher): 1, 0.5 (tie), 0; null on failure
        pa.field("correct", pa.bool_()),  # verifiable judges only
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)
