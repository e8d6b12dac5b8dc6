-- Judge position bias per iteration: pairwise judges P(first shown wins) (0.5 = none); score judges the mean score by shown position.
-- Only judgments with status ok. For pairwise rows sample_id_a is the answer shown first.
SELECT iteration,
       any_value(judge) AS judge,
       kind,
       CASE WHEN kind = 'pair' THEN NULL ELSE position END AS shown_position,
       count(*) AS judgments,
       round(avg(prob_a_wins), 4) AS p_first_shown_wins,
       round(avg(score), 3) AS mean_score
FROM judgments
WHERE status = 'ok'
GROUP BY iteration, judge_id, kind, CASE WHEN kind = 'pair' THEN NULL ELSE position END
ORDER BY iteration, judge, kind, shown_position
