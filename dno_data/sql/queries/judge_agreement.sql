-- Agreement between two judges that judged the same prompt's answers: for each pair of answers, do both prefer the same one (scores compared, pairwise P averaged over both orders)?
-- decided_by_both: answer pairs where neither judge is indifferent; agreement_pct: the share of those both judges order alike.
WITH ok AS (
    SELECT * FROM judgments WHERE status = 'ok'
),
prefs AS (  -- P(x > y) per judge, for x < y
    SELECT s1.iteration, s1.prompt_id, s1.judge_id, s1.sample_id_a AS x, s2.sample_id_a AS y,
           CASE WHEN s1.score > s2.score THEN 1.0 WHEN s1.score < s2.score THEN 0.0 ELSE 0.5 END AS p
    FROM (SELECT iteration, prompt_id, judge_id, sample_id_a, avg(score) AS score
          FROM ok WHERE kind = 'score' GROUP BY ALL) s1
    JOIN (SELECT iteration, prompt_id, judge_id, sample_id_a, avg(score) AS score
          FROM ok WHERE kind = 'score' GROUP BY ALL) s2
      ON s2.iteration = s1.iteration AND s2.prompt_id = s1.prompt_id AND s2.judge_id = s1.judge_id
     AND s1.sample_id_a < s2.sample_id_a
    UNION ALL
    SELECT iteration, prompt_id, judge_id, least(sample_id_a, sample_id_b) AS x, greatest(sample_id_a, sample_id_b) AS y,
           avg(CASE WHEN sample_id_a < sample_id_b THEN prob_a_wins ELSE 1 - prob_a_wins END) AS p
    FROM ok WHERE kind = 'pair'
    GROUP BY ALL
),
judge_names AS (
    SELECT judge_id, any_value(judge) AS judge FROM judgments GROUP BY judge_id
),
shared AS (
    SELECT a.iteration, a.prompt_id, a.judge_id AS judge_id_1, b.judge_id AS judge_id_2, a.p AS p1, b.p AS p2
    FROM prefs a JOIN prefs b
      ON b.iteration = a.iteration AND b.prompt_id = a.prompt_id AND b.x = a.x AND b.y = a.y
     AND a.judge_id < b.judge_id
)
SELECT shared.iteration,
       n1.judge AS judge_1,
       n2.judge AS judge_2,
       count(DISTINCT shared.prompt_id) AS prompts,
       count(*) AS answer_pairs,
       count(*) FILTER (WHERE p1 <> 0.5 AND p2 <> 0.5) AS decided_by_both,
       count(*) FILTER (WHERE p1 <> 0.5 AND p2 <> 0.5 AND (p1 > 0.5) = (p2 > 0.5)) AS agree,
       round(100.0 * count(*) FILTER (WHERE p1 <> 0.5 AND p2 <> 0.5 AND (p1 > 0.5) = (p2 > 0.5))
             / nullif(count(*) FILTER (WHERE p1 <> 0.5 AND p2 <> 0.5), 0), 1) AS agreement_pct
FROM shared
JOIN judge_names n1 ON n1.judge_id = shared.judge_id_1
JOIN judge_names n2 ON n2.judge_id = shared.judge_id_2
GROUP BY shared.iteration, shared.judge_id_1, shared.judge_id_2, n1.judge, n2.judge
ORDER BY shared.iteration, judge_1, judge_2
