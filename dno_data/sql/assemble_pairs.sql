-- Turn a rule's (prompt_id, chosen_sample_id, rejected_sample_id[, target]) rows into pairs rows.
-- Views: rule_output, candidates, samples. Parameter: $rule (recorded in each row).
-- target: the soft label of DNO's Algorithm 1, sigmoid(r(chosen) - r(rejected)), unless the rule gave
-- its own target column. r is the field_winrate of candidates.sql: the win-rate against every other
-- candidate of the prompt, the teacher included (against the policy alone, a teacher > policy pair
-- whose two sides both beat every other policy sample would get exactly 0.5).
-- A target never contradicts its pair: when r does not favour the chosen side (an automatic negative
-- that scored higher, or a user's rule), the rule's verdict is the only evidence and the target is
-- the hard label 1.0.
WITH r AS (
    SELECT * FROM rule_output WHERE chosen_sample_id IS NOT NULL AND rejected_sample_id IS NOT NULL
),
used AS MATERIALIZED (  -- the samples that are in pairs, read once with what the pairs copy of them
    SELECT s.sample_id, s.messages, s.prompt_text, s.response, c.source, c.truncated, c.score, c.winrate,
           c.field_winrate
    FROM samples s JOIN candidates c USING (sample_id)
    WHERE s.sample_id IN (SELECT chosen_sample_id FROM r UNION ALL SELECT rejected_sample_id FROM r)
)
SELECT
    substr(sha256(r.chosen_sample_id || '>' || r.rejected_sample_id), 1, 16) AS pair_id,
    r.prompt_id,
    cs.messages AS prompt,
    coalesce(cs.prompt_text, rs.prompt_text) AS prompt_text,
    r.chosen_sample_id,
    r.rejected_sample_id,
    [{'role': 'assistant', 'content': cs.response}] AS chosen,  -- TRL's conversational preference form
    [{'role': 'assistant', 'content': rs.response}] AS rejected,
    cs.response AS chosen_text,
    rs.response AS rejected_text,
    cs.source AS chosen_source,
    rs.source AS rejected_source,
    cs.truncated AS chosen_truncated,
    rs.truncated AS rejected_truncated,
    cs.score AS chosen_score,
    rs.score AS rejected_score,
    cs.winrate AS chosen_winrate,
    rs.winrate AS rejected_winrate,
    coalesce(cs.score - rs.score, cs.winrate - rs.winrate) AS margin,
    cs.source || '>' || rs.source AS pair_type,
    $rule AS rule,
    CASE WHEN r.target IS NOT NULL THEN r.target
         WHEN cs.field_winrate > rs.field_winrate THEN 1 / (1 + exp(-(cs.field_winrate - rs.field_winrate)))
         ELSE 1.0 END AS target,
    NULL::VARCHAR AS replayed_from
FROM r
JOIN used cs ON cs.sample_id = r.chosen_sample_id
JOIN used rs ON rs.sample_id = r.rejected_sample_id
-- (`dno pairs` orders the rows by prompt_id, chosen_sample_id, rejected_sample_id)
