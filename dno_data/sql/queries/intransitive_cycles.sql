-- Intransitive cycles among pairwise judgments: per iteration, triangles A>B>C>A among a prompt's answers (P averaged over both orders; 0.5 is no preference).
-- decided_triangles: three answers whose three pairs all have a preference; cyclic_pct is the share of those that are cycles.
WITH ok AS (
    SELECT iteration, prompt_id, judge_id, sample_id_a AS x, sample_id_b AS y, prob_a_wins AS p
    FROM judgments WHERE kind = 'pair' AND status = 'ok'
    UNION ALL
    SELECT iteration, prompt_id, judge_id, sample_id_b AS x, sample_id_a AS y, 1 - prob_a_wins AS p
    FROM judgments WHERE kind = 'pair' AND status = 'ok'
),
pref AS (  -- P(x > y) averaged over both shown orders
    SELECT iteration, prompt_id, judge_id, x, y, avg(p) AS p FROM ok GROUP BY ALL
),
beats AS (
    SELECT iteration, prompt_id, judge_id, x, y FROM pref WHERE p > 0.5
),
decided AS (
    SELECT iteration, prompt_id, judge_id, least(x, y) AS lo, greatest(x, y) AS hi
    FROM beats
),
triangles AS (  -- every set {a < b < c} of one prompt whose three pairs are decided
    SELECT d1.iteration, d1.prompt_id, d1.judge_id, d1.lo AS a, d1.hi AS b, d2.hi AS c
    FROM decided d1
    JOIN decided d2 ON d2.iteration = d1.iteration AND d2.prompt_id = d1.prompt_id AND d2.judge_id = d1.judge_id
                   AND d2.lo = d1.hi
    JOIN decided d3 ON d3.iteration = d1.iteration AND d3.prompt_id = d1.prompt_id AND d3.judge_id = d1.judge_id
                   AND d3.lo = d1.lo AND d3.hi = d2.hi
),
cycles AS (  -- x>y>z>x, counted once: x is the smallest id of the three
    SELECT b1.iteration, b1.prompt_id, b1.judge_id, b1.x, b1.y, b2.y AS z
    FROM beats b1
    JOIN beats b2 ON b2.iteration = b1.iteration AND b2.prompt_id = b1.prompt_id AND b2.judge_id = b1.judge_id
                 AND b2.x = b1.y
    JOIN beats b3 ON b3.iteration = b1.iteration AND b3.prompt_id = b1.prompt_id AND b3.judge_id = b1.judge_id
                 AND b3.x = b2.y AND b3.y = b1.x
    WHERE b1.x < b1.y AND b1.x < b2.y
),
its AS (
    SELECT iteration, judge_id, any_value(judge) AS judge, count(DISTINCT prompt_id) AS prompts
    FROM judgments WHERE kind = 'pair' AND status = 'ok' GROUP BY ALL
),
t AS (SELECT iteration, judge_id, count(*) AS n FROM triangles GROUP BY ALL),
c AS (SELECT iteration, judge_id, count(*) AS n, count(DISTINCT prompt_id) AS prompts FROM cycles GROUP BY ALL)
SELECT its.iteration,
       its.judge,
       its.prompts,
       coalesce(t.n, 0) AS decided_triangles,
       coalesce(c.n, 0) AS cyclic_triangles,
       coalesce(c.prompts, 0) AS prompts_with_a_cycle,
       round(100.0 * coalesce(c.n, 0) / nullif(t.n, 0), 1) AS cyclic_pct
FROM its
LEFT JOIN t USING (iteration, judge_id)
LEFT JOIN c USING (iteration, judge_id)
ORDER BY its.iteration, its.judge
