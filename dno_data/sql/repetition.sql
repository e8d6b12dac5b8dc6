-- Repetition check (the paper: a sample with heavily repeated n-grams is an automatic negative).
-- repetition_ratio = the fraction of a response's word 3-grams that repeat an earlier one:
--   1 - distinct 3-grams / 3-grams (0 = none, near 1 = a loop; 0 for fewer than 3 words).
-- Words are the runs of non-whitespace characters. Vectorised in DuckDB, computed at pair time
-- (not stored by `dno sample`), so --max-repetition can change without resampling and any samples
-- file works. `dno pairs` skips it entirely when --max-repetition >= 1: the ratio is always < 1.
-- Views: samples. Parameter: $max_repetition.
WITH w AS (
    SELECT sample_id, regexp_extract_all(response, '[^[:space:]]+') AS words FROM samples
),
r AS (
    SELECT sample_id,
           CASE WHEN len(words) < 3 THEN 0.0
                ELSE 1.0 - list_unique([words[i] || ' ' || words[i + 1] || ' ' || words[i + 2]
                                         FOR i IN range(1, len(words) - 1)]) / (len(words) - 2)
           END AS repetition_ratio
    FROM w
)
SELECT sample_id, repetition_ratio, repetition_ratio > $max_repetition AS repetitive FROM r
