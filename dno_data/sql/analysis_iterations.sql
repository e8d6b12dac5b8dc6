-- Per-iteration summary of a run: `dno sql --run runs/NAME --file analysis_iterations.sql`
-- (or pass this file's text). Uses the views of `dno sql`.
SELECT e.iteration,
       count(*) AS eval_prompts,
       round(100 * avg(CASE WHEN e.correct THEN 1.0 WHEN NOT e.correct THEN 0.0 END), 1) AS accuracy_pct,
       round(100 * avg(e.win), 1) AS winrate_vs_teacher_pct
FROM evals e
GROUP BY 1
ORDER BY 1
