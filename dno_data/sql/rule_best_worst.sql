-- @rule best-worst: one pair a prompt, best against worst by win-rate
-- @param min_margin float 0.0 [0,1]: best-worst: least win-rate gap to keep a pair.
-- Best against worst by win-rate: one pair per prompt, kept when
--   winrate(best) - winrate(worst) >= $min_margin and > 0 (ties are dropped).
-- Automatic negatives (repetitive; truncated under --truncated negative) are never the best. Works with score and pairwise judgments alike.
-- Output: prompt_id, chosen_sample_id, rejected_sample_id, drop_reason (NULL for a pair).
WITH c AS (
    SELECT * FROM candidates WHERE winrate IS NOT NULL
),
judged AS (  -- one pass per prompt: best and worst by ordering keys (no window, no self-join)
    SELECT prompt_id,
           -- best: not an automatic negative, highest win-rate, then highest score, then sample_id
           arg_min({id: sample_id, w: winrate, auto: automatic_negative},
                   {auto: automatic_negative, w: -winrate, no_score: score IS NULL, s: -score, id: sample_id}) AS b,
           -- worst: an automatic negative first, lowest win-rate, then lowest score (none first), last sample_id
           arg_max({id: sample_id, w: winrate, auto: automatic_negative},
                   {auto: automatic_negative, w: -winrate, no_score: score IS NULL, s: -score, id: sample_id}) AS w
    FROM c
    GROUP BY prompt_id
),
verdict AS (
    SELECT prompt_id, b.id AS chosen_sample_id, w.id AS rejected_sample_id,
           CASE WHEN b.id = w.id OR b.auto THEN 'no_positive'
                WHEN w.auto AND NOT b.auto THEN NULL
                WHEN b.w - w.w <= 0 THEN 'tie'
                WHEN b.w - w.w < $min_margin THEN 'below_min_margin'
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
