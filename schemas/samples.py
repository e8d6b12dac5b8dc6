"""samples.parquet: K policy responses per prompt, plus optional teacher responses."""

import pyarrow as pa

from .common import MESSAGES

NAME = "samples"
VERSION = 2  # 2: repetition
MADE_BY = "dno sample PROMPTS -o samples.parquet --model DIR"

SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),  # hash(prompt_id, generator, seed, index)
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("messages", MESSAGES, nullable=False),
        pa.field("prompt_text", pa.string()),  # the prompt as rendered for the generator (chat template)
        pa.field("reference", pa.string()),  # carried from prompts, for verifiable judges
        pa.field("response", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # "policy" | "teacher"
        pa.field("generator", pa.string(), nullable=False),  # model folder / teacher spec
        pa.field("generator_id", pa.string(), nullable=False),  # hash of generator + decoding params
        pa.field("sample_index", pa.int32(), nullable=False),  # 0..K-1 for policy, 0 for teacher
        pa.field("seed", pa.int64()),
        pa.field("temperature", pa.float32()),
        pa.field("top_p", pa.float32()),
        pa.field("num_tokens", pa.int32()),  # response tokens under the generator's tokenizer
        pa.field("finish_reason", pa.string()),  # "stop" | "length" | "teacher"
        # fraction of the response's word 3-grams that repeat an earlier one (dno_data/repetition.py), measured
        # when the sample is written; null: not measured (`dno pairs` measures it)
        pa.field("repetition", pa.float64()),
    ]
)
