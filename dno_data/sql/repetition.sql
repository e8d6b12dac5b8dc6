-- Repetition check (the paper: a sample with heavily repeated n-grams is an automatic negative).
-- repetition_ratio = the fraction of a response's word 3-grams that repeat an earlier one:
--   1 - distinct 3-grams / 3-grams (0 = none, near 1 = a loop; 0 for fewer than 3 words).
-- Words are the runs of characters between spaces, tabs and line breaks (as Python's str.split()
-- for these; rarer Unicode spaces count as part of a word: plain string functions are ~5x faster
-- than a regular expression here).
-- Computed at pair time (not stored by `dno sample`), so --max-repetition works on any samples file
-- and can change without resampling. `dno pairs` skips it entirely when --max-repetition >= 1 (the
-- ratio is always < 1), and passes only the texts that may exceed it: the cheap bound below, as a
-- polars expression over the response column (dno_data/pairs.py: repetition_suspects), is about 3x
-- faster than DuckDB's list_unique over millions of short lists.
-- Views: texts(sample_id, response). Parameter: $max_repetition.
WITH w AS (
    SELECT s.sample_id,
           list_filter(string_split(replace(replace(replace(s.response, chr(10), ' '), chr(9), ' '), chr(13), ' '), ' '),
                       lambda x: x <> '') AS words
    FROM texts s
),
counted AS (
    SELECT sample_id, words, len(words) AS n, CAST(list_unique(words) AS BIGINT) AS d FROM w
),
r AS (
    -- A cheap exact bound first: a word's first occurrence at position j >= 3 starts a new 3-gram
    -- (the one ending at j), so distinct 3-grams >= distinct words - 2 and the ratio is at most
    -- 1 - max(distinct words - 2, 1) / 3-grams. Texts whose bound is <= $max_repetition (most
    -- natural text) skip the 3-grams; repetition_ratio is NULL for them (pass a negative
    -- $max_repetition to compute it everywhere).
    SELECT sample_id,
           CASE WHEN n < 3 THEN 0.0
                WHEN 1.0 - greatest(d - 2, 1) / (n - 2) <= $max_repetition THEN NULL
                ELSE 1.0 - list_unique([words[i] || ' ' || words[i + 1] || ' ' || words[i + 2]
                                         FOR i IN range(1, n - 1)]) / (n - 2)
           END AS repetition_ratio
    FROM counted
)
SELECT sample_id, repetition_ratio, coalesce(repetition_ratio > $max_repetition, false) AS repetitive FROM r
