"""eval.parquet: held-out prompts, the policy's answer against the teacher's; one row per prompt and turn.

A multi-turn prompt (schemas/prompts.py: follow_ups) has a row per turn: `messages` is the conversation
as the policy saw it at that turn, its own earlier answers included.
"""

import pyarrow as pa

from .common import MESSAGES

NAME = "eval"
VERSION = 2  # 2: turn (a row per turn of a multi-turn prompt), justification
MADE_BY = "dno eval PROMPTS --model DIR --judge SPEC -o eval.parquet"

SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("turn", pa.int32(), nullable=False),  # 1, 2, ...: the user turn answered
        pa.field("messages", MESSAGES, nullable=False),  # the conversation up to this turn's answer
        pa.field("model", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),  # the policy's answer
        pa.field("teacher_response", pa.string()),
        pa.field("judge_id", pa.string(), nullable=False),
        pa.field("policy_score", pa.float64()),
        pa.field("teacher_score", pa.float64()),
        pa.field("win", pa.float64()),  # P(policy > teacher): 1, 0.5 (tie), 0; null on failure
        pa.field("correct", pa.bool_()),  # verifiable judges only
        pa.field("justification", pa.string()),  # the judge's reason for policy_score (rubric, single grades)
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)
