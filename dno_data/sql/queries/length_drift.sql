-- Answer lengths per iteration (characters): chosen vs rejected of the new pairs, the policy's samples, the teacher's, and the eval answers.
-- Eval answers of iteration t come from the checkpoint trained in it (iteration 0: the initial policy); samples of t from the policy before it.
WITH its AS (
    SELECT iteration FROM pairs UNION SELECT iteration FROM samples UNION SELECT iteration FROM evals
),
p AS (
    SELECT iteration,
           count(*) AS pairs,
           avg(length(chosen[1].content)) AS chosen_chars,
           avg(length(rejected[1].content)) AS rejected_chars
    FROM pairs WHERE replayed_from IS NULL
    GROUP BY iteration
),
s AS (
    SELECT iteration,
           avg(length(response)) FILTER (WHERE source = 'policy') AS policy_sample_chars,
           avg(num_tokens) FILTER (WHERE source = 'policy') AS policy_sample_tokens,
           avg(length(response)) FILTER (WHERE source = 'teacher') AS teacher_chars
    FROM samples
    GROUP BY iteration
),
e AS (
    SELECT iteration, avg(length(response)) AS eval_answer_chars FROM evals GROUP BY iteration
)
SELECT its.iteration,
       coalesce(p.pairs, 0) AS pairs,
       round(p.chosen_chars, 1) AS chosen_chars,
       round(p.rejected_chars, 1) AS rejected_chars,
       round(p.chosen_chars - p.rejected_chars, 1) AS chosen_minus_rejected,
       round(s.policy_sample_chars, 1) AS policy_sample_chars,
       round(s.policy_sample_tokens, 1) AS policy_sample_tokens,
       round(s.teacher_chars, 1) AS teacher_chars,
       round(e.eval_answer_chars, 1) AS eval_answer_chars
FROM its
LEFT JOIN p USING (iteration)
LEFT JOIN s USING (iteration)
LEFT JOIN e USING (iteration)
ORDER BY its.iteration
