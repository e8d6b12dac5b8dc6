-- At most $max_pairs of the new pairs, a seeded random subset (`dno pairs --max-pairs`): e.g. offline
-- DPO's pairs capped to DNO's count at the same iteration, so both train on as many pairs for as many
-- optimizer steps. Which pairs is deterministic: the lowest hash of (pair_id, $seed), ties by pair_id.
-- The placeholder after FROM is replaced by the query of pairs_narrow.sql.
SELECT * FROM $assembled
ORDER BY hash(pair_id, $seed), pair_id
LIMIT $max_pairs
