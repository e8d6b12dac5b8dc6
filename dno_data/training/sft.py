"""Supervised fine-tuning (`dno sft`): token NLL on the response only, with the parts of `dno train`.

    examples   which responses to imitate, chosen in DuckDB (dno_data/sql/sft_*.sql):
               teacher   the teacher rows of a samples file (SFT on the teacher's answers)
               best      each prompt's best judged policy sample (rejection-sampling fine-tuning, RFT)
               chosen    the chosen side of a pairs file, once per distinct chosen sample
    sft        setup.py (cycle=True: --max-steps may pass over the examples several times) ->
               fit.py with the NLL objective -> save.py (no reference): a checkpoint like `dno train`'s

The loss is the mean negative log-likelihood per response token of a micro-batch: the prompt
tokens are masked out, and an EOS is appended only to a response that ended by itself (one
that stopped at the length limit gets none, data.encode_pair).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..duckdb_sql import connect, load_sql, query_arrow, used_params
from ..repetition import repetition_table
from ..errors import DnoError
from .data import build_sft_examples, collate_sft, row_logps
from .fit import Objective
from .options import TrainOptions

SOURCES = ("teacher", "best", "chosen")  # chosen: from a pairs file
EXAMPLE_COLUMNS = ("example_id", "prompt_id", "messages", "prompt_text", "response", "truncated", "score")


def select_examples(source: str, *, samples: pa.Table | None = None, judgments: pa.Table | None = None,
                    pairs: pa.Table | None = None, min_score: float | None = None,
                    max_repetition: float = 0.5) -> pa.Table:
    """The rows to imitate (EXAMPLE_COLUMNS), one per example, in a stable order."""
    if source not in SOURCES:
        raise DnoError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")
    con = connect()
    try:
        if source == "chosen":
            con.register("pairs", pairs)
            return query_arrow(con, load_sql("sft_chosen"))
        con.register("samples", samples)
        if source == "teacher":
            return query_arrow(con, load_sql("sft_teacher"))
        con.register("judgments", judgments)
        repetition_table(con, samples, max_repetition)
        cand = load_sql("candidates")
        con.execute(f"CREATE TEMP TABLE candidates AS {cand}",
                    used_params(cand, {"truncated": "keep", "hash_responses": False}))  # sft_best.sql needs no hash
        best = load_sql("sft_best")
        return query_arrow(con, best, {"min_score": min_score})
    finally:
        con.close()


def _nll_step(model, batch, s, opts):
    """Mean NLL per response token of the micro-batch (the prompt is masked by loss_mask)."""
    import torch

    logps = row_logps(model, batch, s.keep_logits)
    tokens = batch["loss_mask"][:, 1:].sum().clamp(min=1)
    loss = -logps.sum() / tokens
    return loss, torch.stack([loss.detach().float(), tokens.float()])


NLL = Objective(("loss", "response_tokens"), collate_sft, _nll_step)


def sft(examples: pa.Table, model_dir: Path, output: Path, opts: TrainOptions, lineage: dict,
        fresh: bool = False, log=print) -> dict | None:
    """Fine-tune and write the checkpoint; the metrics on the main process, None on the others."""
    from .fit import fit
    from .save import save_checkpoint
    from .setup import setup

    if len(examples) == 0:
        raise DnoError("no examples to train on (no teacher answer, no judged sample passing --min-score, "
                       "or an empty pairs file)")
    s = setup(examples, model_dir, output, opts, lineage, fresh, encode=build_sft_examples, cycle=True)
    result = fit(s, opts, log, objective=NLL)
    h = result.history
    distinct = len({ex["example_id"] for ex in s.examples})
    metrics = {"examples": s.pairs_in, "examples_used": distinct, "dropped_too_long": s.dropped_too_long,
               "truncated_responses": sum(ex.get("truncated_sides", 0) for ex in s.examples),  # trained without EOS
               "passes": round(len(s.examples) / max(1, distinct), 2), "tokens": s.tokens,
               "steps": result.steps, "train_seconds": round(result.seconds, 2),
               "first_loss": h[0]["loss"] if h else None, "final_loss": h[-1]["loss"] if h else None}
    save_checkpoint(s, result, output, None, model_dir, opts, lineage, metrics, objective="sft")
    return metrics if s.accelerator.is_main_process else None
