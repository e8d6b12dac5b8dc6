"""judgments.parquet: one row per score (kind=score) or per ordered comparison (kind=pair).

A failure (exception, unparseable output, refusal) is a row with a non-"ok" status and
null score / probability: never a silent tie or a silent preference.
"""

import pyarrow as pa

NAME = "judgments"
VERSION = 2  # 2: justification, call_key, cached
MADE_BY = "dno judge SAMPLES -o judgments.parquet --judge SPEC"

STATUSES = ("ok", "error", "unparseable", "refused")

SCHEMA = pa.schema(
    [
        pa.field("judgment_id", pa.string(), nullable=False),  # hash(prompt_id, judge_id, ids, order)
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("judge_id", pa.string(), nullable=False),  # hash of judge spec and parameters
        pa.field("judge", pa.string(), nullable=False),  # the spec as given, e.g. oracle:addition
        pa.field("kind", pa.string(), nullable=False),  # "score" | "pair"
        pa.field("sample_id_a", pa.string(), nullable=False),  # the scored sample, or the first shown
        pa.field("sample_id_b", pa.string()),  # the second shown (kind=pair), else null
        pa.field("position", pa.int32(), nullable=False),  # where a was shown: 0-based index / 0=ab, 1=ba
        pa.field("score", pa.float64()),  # kind=score: the judge's score (1..6 for the rubric)
        pa.field("prob_a_wins", pa.float64()),  # kind=pair: P(a > b)
        pa.field("correct", pa.bool_()),  # verifiable judges: is the answer right
        pa.field("status", pa.string(), nullable=False),  # one of STATUSES
        pa.field("error", pa.string()),  # why it failed, for status != ok
        pa.field("raw_output", pa.string()),  # what the judge said, verbatim
        pa.field("justification", pa.string()),  # rubric judges: the reason given for this score
        pa.field("call_key", pa.string()),  # API judges: cache key of the request that produced the row
        pa.field("cached", pa.bool_()),  # API judges: answered from the cache (paid earlier)
    ]
)
