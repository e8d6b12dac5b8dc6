-- Replay pairs of earlier iterations (the paper: 30 % of t-1's pairs, 15 % of t-2's, ...).
-- From each earlier pairs file (age 0 = t-1, 1 = t-2, ...) take at most
--   floor($fraction / 2^age * (number of that file's OWN new pairs))
-- rows, chosen among its own new pairs only: rows that file had itself replayed from an older
-- iteration are never replayed again (the older file is passed on its own).
-- No pair_id appears twice: a pair held by several files counts for the newest, and pairs already
-- among the new pairs, or of a prompt that has new pairs, are not replayed.
-- Which rows is deterministic: the lowest hash of (pair_id, age, $seed), so each file is ranked by
-- its own order and a rerun gives the same file.
-- Views: new_pairs(pair_id, prompt_id), old_pairs (all columns of pairs plus `source_file` and
-- `age` = 0, 1, ...). Output: the replayed rows, plus `age` and `k` (the order to write them in).
WITH own AS (
    SELECT * FROM old_pairs WHERE replayed_from IS NULL
),
quota AS (
    SELECT age, floor(count(*) * $fraction / pow(2, age)) AS n_max FROM own GROUP BY age
),
eligible AS (
    SELECT o.*, row_number() OVER (PARTITION BY o.pair_id ORDER BY o.age) AS copy
    FROM own o
    WHERE o.pair_id NOT IN (SELECT pair_id FROM new_pairs)
      AND o.prompt_id NOT IN (SELECT prompt_id FROM new_pairs)
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY age ORDER BY hash(pair_id, age, $seed), pair_id) AS k
    FROM eligible WHERE copy = 1
)
SELECT r.* EXCLUDE (copy, source_file, replayed_from), r.source_file AS replayed_from
FROM ranked r JOIN quota q USING (age)
WHERE r.k <= q.n_max
