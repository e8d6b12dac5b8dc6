-- Replay pairs of earlier iterations: from each earlier pairs file (newest first) take at most
-- fraction_k * (number of new pairs) rows, fraction_k = $fraction / 2^k (the paper: 30 %, 15 %, ...).
-- Which rows is deterministic: the lowest hash of (pair_id, $seed). Pairs whose prompt already
-- has a new pair are not replayed twice.
-- Views: new_pairs, old_pairs (all columns of pairs plus `source_file` and `age` = 0, 1, ...).
WITH n AS (SELECT count(*) AS n_new FROM new_pairs),
eligible AS (
    SELECT o.*, row_number() OVER (PARTITION BY age ORDER BY hash(pair_id || CAST($seed AS VARCHAR))) AS k
    FROM old_pairs o
    WHERE o.pair_id NOT IN (SELECT pair_id FROM new_pairs)
      AND o.prompt_id NOT IN (SELECT prompt_id FROM new_pairs)
)
SELECT * EXCLUDE (k, age, source_file, replayed_from, n_new), source_file AS replayed_from
FROM eligible, n
WHERE k <= floor(n_new * $fraction / pow(2, age))
ORDER BY age, k  -- a stable order: the same inputs give the same file
