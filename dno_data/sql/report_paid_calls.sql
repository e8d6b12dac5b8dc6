-- The judge requests a run paid for (not answered from the cache), for their token counts in the judge cache.
SELECT DISTINCT iteration, judge, call_key
FROM judgments
WHERE call_key IS NOT NULL AND NOT coalesce(cached, false)
ORDER BY iteration, judge, call_key
