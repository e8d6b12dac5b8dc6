-- The eval rows `dno report` computes intervals from: one per held-out prompt, turn and iteration.
-- Every column but the conversations, so eval files of every version read alike (before version 2 an
-- eval file had no `turn`: one turn); dno_data/report/data.py orders them.
SELECT * EXCLUDE (messages)
FROM evals
