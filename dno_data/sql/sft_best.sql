-- `dno sft --source best` (rejection-sampling fine-tuning): each prompt's best judged policy sample.
-- Views: samples, candidates (candidates.sql: mean score and win-rate per sample). Parameter:
-- $min_score (NULL: any score; a pairwise judge gives no score, so then only NULL keeps samples).
-- Never chosen: a truncated sample (it stopped at the length limit, not by EOS), a repetitive one,
-- an unjudged one, the teacher's. Best = highest score, then highest win-rate against the other
-- samples; ties go to the lowest sample_index, then the lowest sample_id, so a rerun picks the same.
WITH ranked AS (
    SELECT c.sample_id, c.score,
           row_number() OVER (PARTITION BY c.prompt_id
                              ORDER BY c.score DESC NULLS LAST, c.winrate DESC NULLS LAST,
                                       s.sample_index, c.sample_id) AS k
    FROM candidates c JOIN samples s USING (sample_id)
    WHERE c.source = 'policy' AND c.judged AND NOT c.truncated AND NOT c.repetitive
      AND ($min_score IS NULL OR c.score >= $min_score)
)
SELECT s.sample_id AS example_id, s.prompt_id, s.messages, s.prompt_text, s.response,
       false AS truncated, r.score
FROM ranked r JOIN samples s USING (sample_id)
WHERE r.k = 1
ORDER BY s.prompt_id
