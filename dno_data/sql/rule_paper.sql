-- @rule paper: every positive, DNO section 5
-- @rule paper-best best_only: only the best positive of a prompt
-- @param min_positive_score float 5.0 finite: Lowest score of a positive (the paper: 5 or 6).
-- @param teacher_margin float 2.0 >=0: Score gap of a negative below a teacher positive (the paper: 2).
-- @param policy_margin float 1.0 >=0: Score gap of a negative below a policy positive (the paper: 1).
-- @param prefer_positive str "policy" policy|teacher: paper-best: policy|teacher wins a tie for the best score.
-- @param max_negatives int? null >=1: Most negatives per positive (default: all that qualify).
-- @param distinct_negatives bool true: Identical rejected texts of a positive make one pair (not in the paper).
-- `--rule paper`: the DNO-Prct pair rule of Section 5 of Rosset et al. 2024 (arXiv 2404.03715).
--   Every candidate (policy sample or teacher) scoring >= $min_positive_score is a positive.
--   Each positive is paired with every other candidate of its prompt that scores at least
--   $teacher_margin lower when the positive is the teacher, $policy_margin lower when it is a policy
--   sample, and strictly lower (so a margin of 0 never pairs two samples both ways).
--   A positive may be another positive's negative (a policy 6 against a policy 5).
--   Example: teacher 6, policy 5/4/3/1 -> teacher > {4, 3, 1} and policy-5 > {4, 3, 1}.
--   An automatic negative (a sample with heavily repeated n-grams, or a truncated one under
--   --truncated negative) is never a positive and is a negative of every positive of its prompt,
--   whatever its score (the paper makes repetitive samples negatives).
--   A prompt with no positive gives no pairs.
-- Not in the paper, both optional:
--   $distinct_negatives: identical rejected texts of one positive make one pair (K samples often
--   repeat the same wrong answer; each copy would weigh the same pair again); --no-distinct-negatives
--   gives the paper's rule exactly.
--   $max_negatives: at most that many negatives per positive (NULL: all), lowest scores first.
-- `--rule paper-best` ($best_only): a narrower variant with ONE positive a prompt, the best-scored
--   candidate (ties go to the source named by $prefer_positive, then to win-rate); the rest as above.
-- Output: prompt_id, chosen_sample_id, rejected_sample_id, drop_reason (NULL for a pair).
-- Aggregates, not windows, where a window is not needed: the best candidate of a prompt is an
-- arg_min, one copy of a rejected text is a GROUP BY; the window of $max_negatives runs only when
-- it is set. Identical texts are found by candidates.sql's response_hash (64 bits: two different
-- texts collide with a chance of 2^-64, about 5e-20).
WITH c AS (
    SELECT * FROM candidates WHERE score IS NOT NULL
),
best AS (  -- paper-best: not an automatic negative, highest score, the preferred source, highest win-rate (none last), sample_id
    SELECT arg_min(sample_id, {auto: automatic_negative, s: -score, other: source <> $prefer_positive,
                               no_w: winrate IS NULL, w: -coalesce(winrate, 0), id: sample_id}) AS sample_id
    FROM c WHERE $best_only
    GROUP BY prompt_id
),
positive AS (
    SELECT * FROM c
    WHERE NOT automatic_negative AND score >= $min_positive_score
      AND (NOT $best_only OR sample_id IN (SELECT sample_id FROM best))
),
qualified AS (
    SELECT p.prompt_id, p.sample_id AS chosen_sample_id, n.sample_id AS rejected_sample_id, n.score, n.response_hash
    FROM positive p
    JOIN c n ON n.prompt_id = p.prompt_id AND n.sample_id <> p.sample_id
    WHERE n.automatic_negative
       OR (n.score < p.score
           AND n.score <= p.score - CASE WHEN p.source = 'teacher' THEN $teacher_margin ELSE $policy_margin END)
),
negatives AS (  -- with $distinct_negatives, each rejected text once: its copy of lowest (score, sample_id)
    SELECT prompt_id, chosen_sample_id, first.id AS rejected_sample_id, first.score AS score
    FROM (SELECT prompt_id, chosen_sample_id,
                 arg_min({id: rejected_sample_id, score: score}, {s: score, id: rejected_sample_id}) AS first
          FROM qualified WHERE $distinct_negatives
          GROUP BY prompt_id, chosen_sample_id, response_hash)
    UNION ALL
    SELECT prompt_id, chosen_sample_id, rejected_sample_id, score FROM qualified WHERE NOT $distinct_negatives
),
kept AS (  -- $max_negatives: the lowest-scored ones of each positive
    SELECT prompt_id, chosen_sample_id, rejected_sample_id FROM negatives WHERE $max_negatives IS NULL
    UNION ALL
    SELECT prompt_id, chosen_sample_id, rejected_sample_id FROM negatives WHERE $max_negatives IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY chosen_sample_id ORDER BY score, rejected_sample_id) <= $max_negatives
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
