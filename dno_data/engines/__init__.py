"""Engines: where a stage's batches run. The stage decides what a batch is and what is done with
it; an engine only runs the same library function over the batches, here or elsewhere.

  local  this process, batch after batch (the stage's own loop; the default)
  ray    a pool of Ray actors, each holding one model or judge (ray.py)

A stage hands an engine its batches as (unit, payload) pairs numbered as its resumable parts,
a `setup()` that builds a worker's state (a generator, a judge) and a `work(state, payload)`
that turns one batch into rows; the engine gives each result back to the stage, in the
driver's process, which checks and writes it as that unit's part. Resume, locks and the
output's checks stay where they are for the local path.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DnoError


def resumed_items(units: Sequence[Sequence], todo: Sequence[int]) -> int:
    """How many items the units already written hold (a progress line's starting count).

    >>> resumed_items([[1, 2], [3], [4, 5]], [1])
    4
    """
    left = set(todo)
    return sum(len(u) for i, u in enumerate(units) if i not in left)


def check_unit_rows(rows: list[dict], prompt_ids: set[str], unit: int, unique: str | None = None) -> None:
    """Before a worker's rows become unit `unit`'s part: every row belongs to a prompt of that unit,
    and no `unique` key appears twice; else one error line, and nothing of it is written."""
    seen: set = set()
    for r in rows:
        if r["prompt_id"] not in prompt_ids:
            raise DnoError(f"batch {unit}: a worker returned a row of prompt {r['prompt_id']}, which is not in that "
                           "batch; nothing of it was written")
        if unique is not None:
            if r[unique] in seen:
                raise DnoError(f"batch {unit}: a worker returned {unique} {r[unique]} twice; nothing of it was "
                               "written")
            seen.add(r[unique])
