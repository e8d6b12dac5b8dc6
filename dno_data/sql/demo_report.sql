-- One row per iteration of a run: held-out accuracy, win-rate against the teacher, pairs by type.
-- iteration 0 is the initial policy. Views of `dno sql`: evals, pairs.
WITH e AS (
    SELECT iteration,
           count(*) AS eval_prompts,
           avg(CASE WHEN correct THEN 1.0 WHEN NOT correct THEN 0.0 END) AS accuracy,
           avg(win) AS winrate
    FROM evals WHERE status = 'ok'
    GROUP BY 1
),
p AS (
    SELECT iteration,
           count(*) FILTER (WHERE pair_type = 'teacher>policy') AS teacher_gt_policy,
           count(*) FILTER (WHERE pair_type = 'policy>teacher') AS policy_gt_teacher,
           count(*) FILTER (WHERE pair_type = 'policy>policy') AS policy_gt_policy
    FROM pairs
    GROUP BY 1
)
SELECT e.iteration,
       round(100 * e.accuracy, 1) AS accuracy_pct,
       round(100 * e.winrate, 1) AS winrate_vs_teacher_pct,
       coalesce(p.teacher_gt_policy, 0) AS "pairs teacher>policy",
       coalesce(p.policy_gt_teacher, 0) AS "pairs policy>teacher",
       coalesce(p.policy_gt_policy, 0) AS "pairs policy>policy",
       e.eval_prompts
FROM e LEFT JOIN p USING (iteration)
ORDER BY e.iteration
