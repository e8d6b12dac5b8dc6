-- One row per iteration (the table `dno iterate` prints at the end): pairs made and replayed, held-out win-rate, accuracy, mean score.
-- Iteration 0 is the initial policy (evaluated with --eval-initial). Null: not measured (no eval, or a judge that does not grade).
WITH p AS (
    SELECT iteration,
           count(*) FILTER (WHERE replayed_from IS NULL) AS new_pairs,
           count(*) FILTER (WHERE replayed_from IS NOT NULL) AS replayed_pairs
    FROM pairs GROUP BY iteration
),
e AS (
    SELECT iteration,
           count(*) AS eval_prompts,
           round(100 * avg(win) FILTER (WHERE status = 'ok' AND coalesce(trim(teacher_response), '') <> ''), 1)
               AS winrate_vs_teacher_pct,
           round(100 * avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) FILTER (WHERE status = 'ok' AND correct IS NOT NULL), 1)
               AS accuracy_pct,
           round(avg(policy_score) FILTER (WHERE status = 'ok'), 3) AS mean_policy_score
    FROM evals GROUP BY iteration
)
SELECT iteration, p.new_pairs, p.replayed_pairs, e.eval_prompts, e.winrate_vs_teacher_pct, e.accuracy_pct,
       e.mean_policy_score
FROM p FULL OUTER JOIN e USING (iteration)
ORDER BY iteration
