-- Judge API calls per iteration and judge: distinct requests behind the judgments, how many the cache answered (paid earlier) and how many were made.
-- Local judges (oracles, python, reward models) make no calls: their rows have no call_key.
SELECT iteration,
       any_value(judge) AS judge,
       count(*) AS judgments,
       count(DISTINCT call_key) AS requests,
       count(DISTINCT call_key) FILTER (WHERE cached) AS cache_hits,
       count(DISTINCT call_key) FILTER (WHERE NOT cached) AS calls_made,
       round(100.0 * count(DISTINCT call_key) FILTER (WHERE cached) / nullif(count(DISTINCT call_key), 0), 1)
           AS cache_hit_pct
FROM judgments
GROUP BY iteration, judge_id
ORDER BY iteration, judge
