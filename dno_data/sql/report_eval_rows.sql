-- The eval rows `dno report` computes intervals from: one per held-out prompt and iteration.
SELECT iteration, prompt_id, model, status, win, correct, policy_score, response, teacher_response
FROM evals
ORDER BY iteration, prompt_id
