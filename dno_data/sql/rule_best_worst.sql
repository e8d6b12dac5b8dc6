-- Best against worst by win-rate: one pair per prompt, kept when
--   winrate(best) - winrate(worst) >= $min_margin and > 0 (ties are dropped).
-- Automatic negatives (repetitive; truncated under --truncated negative) are never the best. Works with score and pairwise judgments alike.
-- Output: prompt_id, chosen_sample_id, rejected_sample_id, drop_reason (NULL for a pair).
WITH c AS (
    SELECT * FROM candidates WHERE winrate IS NOT NULL
),
best AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (PARTITION BY prompt_id ORDER BY automatic_negative, winrate DESC, score DESC NULLS LAST, sample_id) AS r
        FROM c) WHERE r = 1
),
worst AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (PARTITION BY prompt_id ORDER BY automatic_negative DESC, winrate, score NULLS FIRST, sample_id DESC) AS r
        FROM c) WHERE r = 1
),
judged AS (
    SELECT b.prompt_id, b.sample_id AS chosen_sample_id, w.sample_id AS rejected_sample_id,
           b.winrate - w.winrate AS gap, b.automatic_negative AS best_auto_negative, w.automatic_negative AS worst_auto_negative
    FROM best b JOIN worst w USING (prompt_id)
),
verdict AS (
    SELECT *,
           CASE WHEN chosen_sample_id = rejected_sample_id OR best_auto_negative THEN 'no_positive'
                WHEN worst_auto_negative AND NOT best_auto_negative THEN NULL
                WHEN gap <= 0 THEN 'tie'
                WHEN gap < $min_margin THEN 'below_min_margin'
           END AS drop_reason
    FROM judged
)
SELECT prompt_id,
       CASE WHEN drop_reason IS NULL THEN chosen_sample_id END AS chosen_sample_id,
       CASE WHEN drop_reason IS NULL THEN rejected_sample_id END AS rejected_sample_id,
       drop_reason
FROM verdict
UNION ALL
SELECT DISTINCT prompt_id, NULL, NULL, 'no_valid_judgments'
FROM candidates WHERE prompt_id NOT IN (SELECT prompt_id FROM c)
