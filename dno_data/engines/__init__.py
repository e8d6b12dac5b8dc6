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
