-- Judgment status counts per iteration and judge, by reason (the error text), with the share of that iteration's judgments.
SELECT iteration,
       any_value(judge) AS judge,
       status,
       CASE WHEN status = 'ok' THEN NULL ELSE coalesce(error, '(no reason given)') END AS reason,
       count(*) AS judgments,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY iteration, judge_id), 1) AS share_pct
FROM judgments
GROUP BY iteration, judge_id, status, CASE WHEN status = 'ok' THEN NULL ELSE coalesce(error, '(no reason given)') END
ORDER BY iteration, judge, status = 'ok' DESC, judgments DESC, reason
