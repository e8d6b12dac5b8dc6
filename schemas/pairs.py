"""pairs.parquet: large-margin chosen/rejected pairs ready for the contrastive loss.

`prompt`, `chosen` and `rejected` are in TRL's conversational preference form (a list of
{role, content} messages; chosen / rejected hold one assistant message), so the file loads
straight into TRL's DPOTrainer with its real prompt. Each answer is stored once, there: its text is
the message's content (DuckDB `chosen[1].content`). `prompt_text` is the prompt as the policy saw it.
"""

import pyarrow as pa

from .common import MESSAGES

NAME = "pairs"
VERSION = 4  # 2: chosen_truncated, rejected_truncated; 3: TRL form (prompt, chosen, rejected as messages; *_text)
# 4: chosen_text / rejected_text dropped (each answer once, in chosen / rejected: half the file at chat length)
MADE_BY = "dno pairs JUDGMENTS SAMPLES -o pairs.parquet"

PAIR_TYPES = ("teacher>policy", "policy>teacher", "policy>policy")

SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),  # hash(chosen_sample_id, rejected_sample_id)
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", MESSAGES, nullable=False),  # the prompt's messages (TRL: conversational prompt)
        pa.field("prompt_text", pa.string()),  # rendered prompt the policy sampled from
        pa.field("chosen_sample_id", pa.string(), nullable=False),
        pa.field("rejected_sample_id", pa.string(), nullable=False),
        pa.field("chosen", MESSAGES, nullable=False),  # [{"role": "assistant", "content": the chosen answer}]
        pa.field("rejected", MESSAGES, nullable=False),
        pa.field("chosen_source", pa.string(), nullable=False),  # policy | teacher
        pa.field("rejected_source", pa.string(), nullable=False),
        pa.field("chosen_truncated", pa.bool_(), nullable=False),  # stopped at the length limit, not by EOS
        pa.field("rejected_truncated", pa.bool_(), nullable=False),
        pa.field("chosen_score", pa.float64()),  # mean judge score (null for pairwise judges)
        pa.field("rejected_score", pa.float64()),
        pa.field("chosen_winrate", pa.float64()),  # E_{y'~policy} P(chosen > y')
        pa.field("rejected_winrate", pa.float64()),
        pa.field("margin", pa.float64()),  # chosen_score - rejected_score (or win-rate margin)
        pa.field("pair_type", pa.string(), nullable=False),  # one of PAIR_TYPES
        pa.field("rule", pa.string(), nullable=False),  # paper | best-worst | sql:FILE
        pa.field("target", pa.float64(), nullable=False),  # label for the soft loss; 1.0 = hard
        pa.field("replayed_from", pa.string()),  # pairs file this row was replayed from, else null
    ]
)
