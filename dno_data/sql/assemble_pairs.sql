-- Turn a rule's (prompt_id, chosen_sample_id, rejected_sample_id[, target]) rows into pairs rows.
-- Views: rule_output, candidates, samples. Parameter: $rule (recorded in each row).
-- target = sigmoid(chosen_winrate - rejected_winrate): the soft label of DNO's Algorithm 1,
-- unless the rule gave its own target column.
SELECT
    substr(sha256(r.chosen_sample_id || '>' || r.rejected_sample_id), 1, 16) AS pair_id,
    r.prompt_id,
    cs.messages,
    coalesce(cs.prompt_text, rs.prompt_text) AS prompt_text,
    r.chosen_sample_id,
    r.rejected_sample_id,
    cs.response AS chosen,
    rs.response AS rejected,
    cs.source AS chosen_source,
    rs.source AS rejected_source,
    coalesce(cs.finish_reason = 'length', false) AS chosen_truncated,
    coalesce(rs.finish_reason = 'length', false) AS rejected_truncated,
    cc.score AS chosen_score,
    rc.score AS rejected_score,
    cc.winrate AS chosen_winrate,
    rc.winrate AS rejected_winrate,
    coalesce(cc.score - rc.score, cc.winrate - rc.winrate) AS margin,
    cs.source || '>' || rs.source AS pair_type,
    $rule AS rule,
    coalesce(r.target, 1 / (1 + exp(-(coalesce(cc.winrate, 0.5) - coalesce(rc.winrate, 0.5))))) AS target,
    NULL::VARCHAR AS replayed_from
FROM rule_output r
JOIN samples cs ON cs.sample_id = r.chosen_sample_id
JOIN samples rs ON rs.sample_id = r.rejected_sample_id
JOIN candidates cc ON cc.sample_id = r.chosen_sample_id
JOIN candidates rc ON rc.sample_id = r.rejected_sample_id
WHERE r.chosen_sample_id IS NOT NULL AND r.rejected_sample_id IS NOT NULL
ORDER BY r.prompt_id, r.chosen_sample_id, r.rejected_sample_id
