-- Turn a rule's (prompt_id, chosen_sample_id, rejected_sample_id[, target]) rows into pairs rows,
-- every column but the texts (prompt, prompt_text, chosen, rejected),
-- which pairs_texts.sql puts beside them.
-- Views: rule_output, candidates. Parameter: $rule (recorded in each row).
-- target: the soft label of DNO's Algorithm 1, sigmoid(r(chosen) - r(rejected)), unless the rule gave
-- its own target column. r is the field_winrate of candidates.sql: the win-rate against every other
-- candidate of the prompt, the teacher included (against the policy alone, a teacher > policy pair
-- whose two sides both beat every other policy sample would get exactly 0.5).
-- A target never contradicts its pair: when r does not favour the chosen side (an automatic negative
-- that scored higher, or a user's rule), the rule's verdict is the only evidence and the target is
-- the hard label 1.0.
WITH r AS (
    SELECT * FROM rule_output WHERE chosen_sample_id IS NOT NULL AND rejected_sample_id IS NOT NULL
)
SELECT
    substr(sha256(r.chosen_sample_id || '>' || r.rejected_sample_id), 1, 16) AS pair_id,
    r.prompt_id,
    r.chosen_sample_id,
    r.rejected_sample_id,
    cc.source AS chosen_source,
    rc.source AS rejected_source,
    cc.truncated AS chosen_truncated,
    rc.truncated AS rejected_truncated,
    cc.score AS chosen_score,
    rc.score AS rejected_score,
    cc.winrate AS chosen_winrate,
    rc.winrate AS rejected_winrate,
    coalesce(cc.score - rc.score, cc.winrate - rc.winrate) AS margin,
    cc.source || '>' || rc.source AS pair_type,
    $rule AS rule,
    CASE WHEN r.target IS NOT NULL THEN r.target
         WHEN cc.field_winrate > rc.field_winrate THEN 1 / (1 + exp(-(cc.field_winrate - rc.field_winrate)))
         ELSE 1.0 END AS target,
    NULL::VARCHAR AS replayed_from
FROM r
JOIN candidates cc ON cc.sample_id = r.chosen_sample_id
JOIN candidates rc ON rc.sample_id = r.rejected_sample_id
