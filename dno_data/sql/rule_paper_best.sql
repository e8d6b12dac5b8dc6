-- `--rule paper-best`: a narrower variant of the paper rule (rule_paper.sql) with ONE positive a prompt:
--   the positive is the best-scored candidate and must score >= $min_positive_score;
--   every negative scores at least $teacher_margin lower when the positive is the teacher,
--   $policy_margin lower when the positive is a policy sample (and strictly lower);
--   an automatic negative (heavily repeated n-grams; truncated under --truncated negative)
--   is never a positive and always a negative;
--   a prompt with no positive gives no pairs.
-- Ties for the best score go to the source named by $prefer_positive, then to win-rate.
-- With $distinct_negatives, identical rejected texts of a prompt make one pair (K samples often
-- repeat the same wrong answer; each would otherwise weigh the same pair again).
-- At most $max_negatives negatives per prompt (NULL: all), lowest scores first.
-- Output: prompt_id, chosen_sample_id, rejected_sample_id, drop_reason (NULL for a pair).
WITH c AS (
    SELECT * FROM candidates WHERE score IS NOT NULL
),
ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY prompt_id
        ORDER BY automatic_negative, score DESC, (source = $prefer_positive) DESC, winrate DESC NULLS LAST, sample_id
    ) AS rank
    FROM c
),
positive AS (
    SELECT * FROM ranked WHERE rank = 1 AND NOT automatic_negative AND score >= $min_positive_score
),
qualified AS (
    SELECT p.prompt_id, p.sample_id AS chosen_sample_id, n.sample_id AS rejected_sample_id, n.score,
           row_number() OVER (PARTITION BY p.prompt_id, s.response ORDER BY n.score, n.sample_id) AS copy
    FROM positive p
    JOIN c n ON n.prompt_id = p.prompt_id AND n.sample_id <> p.sample_id
    JOIN samples s ON s.sample_id = n.sample_id
    WHERE n.automatic_negative
       OR (n.score < p.score
           AND n.score <= p.score - CASE WHEN p.source = 'teacher' THEN $teacher_margin ELSE $policy_margin END)
),
negatives AS (
    SELECT *, row_number() OVER (PARTITION BY prompt_id ORDER BY score, rejected_sample_id) AS k
    FROM qualified
    WHERE NOT $distinct_negatives OR copy = 1
),
kept AS (
    SELECT prompt_id, chosen_sample_id, rejected_sample_id
    FROM negatives WHERE $max_negatives IS NULL OR k <= $max_negatives
)
SELECT prompt_id, chosen_sample_id, rejected_sample_id, NULL::VARCHAR AS drop_reason FROM kept
UNION ALL
SELECT prompt_id, NULL, NULL,
       CASE WHEN count(score) = 0 THEN 'no_valid_judgments'
            WHEN NOT bool_or(prompt_id IN (SELECT prompt_id FROM positive)) THEN 'no_positive'
            ELSE 'no_negative_with_margin' END
FROM candidates
WHERE prompt_id NOT IN (SELECT prompt_id FROM kept)
GROUP BY prompt_id
