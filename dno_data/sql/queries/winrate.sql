-- Held-out results per iteration: win-rate against the teacher (rows with an empty teacher answer left out and counted), accuracy, mean score.
-- Iteration 0 is the initial policy. accuracy_pct is null when the judge does not say what is correct.
SELECT iteration,
       count(*) AS eval_prompts,
       count(*) FILTER (WHERE status = 'ok') AS judged_ok,
       count(*) FILTER (WHERE status = 'ok' AND win IS NOT NULL
                         AND coalesce(trim(teacher_response), '') <> '') AS with_teacher,
       count(*) FILTER (WHERE status = 'ok' AND teacher_response IS NOT NULL
                         AND trim(teacher_response) = '') AS empty_teacher_answer,
       round(100 * avg(win) FILTER (WHERE status = 'ok' AND coalesce(trim(teacher_response), '') <> ''), 1)
           AS winrate_vs_teacher_pct,
       round(100 * avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) FILTER (WHERE status = 'ok' AND correct IS NOT NULL), 1)
           AS accuracy_pct,
       round(avg(policy_score) FILTER (WHERE status = 'ok'), 3) AS mean_policy_score
FROM evals
GROUP BY iteration
ORDER BY iteration
