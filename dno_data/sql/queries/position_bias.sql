-- Judge position bias per iteration: pairwise judges P(first shown wins) (0.5 = none); score judges the mean score by shown position.
-- Only judgments with status ok. For pairwise rows sample_id_a is the answer shown first. Score judges: the policy's
-- samples only: the teacher's answer (often shown in one slot, and better) would read as a bias of that slot.
SELECT iteration,
       any_value(judge) AS judge,
       kind,
       CASE WHEN kind = 'pair' THEN NULL ELSE position END AS shown_position,
       count(*) AS judgments,
       round(avg(prob_a_wins), 4) AS p_first_shown_wins,
       round(avg(score), 3) AS mean_score
FROM judgments AS j
WHERE status = 'ok'
  AND (kind = 'pair' OR NOT EXISTS (SELECT 1 FROM samples AS s
                                    WHERE s.sample_id = j.sample_id_a AND s.source = 'teacher'))
GROUP BY iteration, judge_id, kind, CASE WHEN kind = 'pair' THEN NULL ELSE position END
ORDER BY iteration, judge, kind, shown_position
