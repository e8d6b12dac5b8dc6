-- One row per sample: its mean judge score and its win-rate against the policy's own samples,
--   winrate(y) = E_{y' ~ policy, y' != y} P(y > y' | x)
-- P comes from pairwise judgments when there are any, else from scores
-- (higher score wins, equal scores are a tie = 0.5). Only judgments with status 'ok' count.
-- Pairwise: the rows of each order shown (a first, b second) are averaged first, then the two
-- orders weigh the same, P(a > b) = (P_ab + 1 - P_ba) / 2 (or the one order judged); rows comparing
-- a sample with itself are left out.
-- field_winrate is the same against every OTHER candidate of the prompt, the teacher included (the
-- DNO-Prct estimate compares all K+1 candidates): the soft target of pairs_narrow.sql uses it.
-- A sample is truncated when it stopped at the length limit (finish_reason 'length'), not by EOS.
-- $truncated says what a truncated sample is: 'negative' (never a positive, an automatic negative
-- like a repetitive one), 'drop' (left out, as if never sampled), 'keep' (an ordinary candidate).
-- automatic_negative = repetitive, or truncated under 'negative': the rules never choose such a
-- sample and pair it below every positive.
-- response_hash: a 64-bit hash of the response, to find identical texts without carrying them; only
-- when $hash_responses (the rule's text names response_hash: the paper rules do), else NULL, and the
-- responses are not read at all (at 1M prompts x 6 chat-length answers, hashing 9 GB of text took 8 s).
-- Views: samples, judgments, repetition(sample_id, repetitive).
WITH scores AS (
    SELECT sample_id_a AS sample_id, avg(score) AS score
    FROM judgments WHERE status = 'ok' AND kind = 'score' AND score IS NOT NULL
    GROUP BY 1
),
base AS (
    SELECT s.prompt_id, s.sample_id, s.source, sc.score,
           CASE WHEN $hash_responses THEN hash(s.response) END AS response_hash,
           coalesce(r.repetitive, false) AS repetitive,
           coalesce(s.finish_reason = 'length', false) AS truncated
    FROM samples s
    LEFT JOIN scores sc USING (sample_id)
    LEFT JOIN repetition r USING (sample_id)
    WHERE $truncated <> 'drop' OR s.finish_reason IS DISTINCT FROM 'length'
),
prompt_scores AS (  -- each prompt's scores: of its policy samples, and of all its candidates
    SELECT prompt_id, list(score) FILTER (WHERE source = 'policy') AS policy_scores, list(score) AS all_scores
    FROM base WHERE score IS NOT NULL
    GROUP BY 1
),
shown AS (  -- one value per order shown: an order judged twice weighs once; no self-comparisons
    SELECT sample_id_a AS a, sample_id_b AS b, avg(prob_a_wins) AS p
    FROM judgments
    WHERE status = 'ok' AND kind = 'pair' AND prob_a_wins IS NOT NULL AND sample_id_a <> sample_id_b
    GROUP BY 1, 2
),
unordered AS (  -- P(lo > hi) for each pair of samples: the mean over the orders judged
    SELECT least(a, b) AS lo, greatest(a, b) AS hi, avg(CASE WHEN a < b THEN p ELSE 1 - p END) AS p
    FROM shown
    GROUP BY 1, 2
),
prefs AS (
    SELECT lo AS x, hi AS y, p FROM unordered
    UNION ALL
    SELECT hi AS x, lo AS y, 1 - p AS p FROM unordered
),
pair_winrate AS (
    SELECT q.x AS sample_id, avg(q.p) FILTER (WHERE o.source = 'policy') AS winrate, avg(q.p) AS field_winrate
    FROM prefs q
    JOIN base o ON o.sample_id = q.y
    GROUP BY 1
),
scored AS (  -- score win-rates: (lower + 0.5 * equal, the sample itself left out) / the others,
             -- from the prompt's K + 1 scores in two short lists (no self-join of a prompt)
    SELECT b.*, p.policy_scores, p.all_scores, CASE WHEN b.source = 'policy' THEN 1 ELSE 0 END AS self
    FROM base b LEFT JOIN prompt_scores p USING (prompt_id)
)
SELECT b.prompt_id, b.sample_id, b.source, b.score, b.response_hash, b.repetitive, b.truncated,
       (b.repetitive OR (b.truncated AND $truncated = 'negative')) AS automatic_negative,
       coalesce(pw.winrate, CASE WHEN b.score IS NOT NULL THEN
           (len(list_filter(b.policy_scores, lambda x: x < b.score))
            + 0.5 * (len(list_filter(b.policy_scores, lambda x: x = b.score)) - b.self))
           / nullif(len(b.policy_scores) - b.self, 0) END) AS winrate,
       coalesce(pw.field_winrate, CASE WHEN b.score IS NOT NULL THEN
           (len(list_filter(b.all_scores, lambda x: x < b.score))
            + 0.5 * (len(list_filter(b.all_scores, lambda x: x = b.score)) - 1))
           / nullif(len(b.all_scores) - 1, 0) END) AS field_winrate,
       (b.score IS NOT NULL OR pw.winrate IS NOT NULL) AS judged
FROM scored b
LEFT JOIN pair_winrate pw USING (sample_id)
