-- `dno sft` on a pairs file: the chosen side, once per distinct chosen sample (the paper's rule pairs a
-- positive with several negatives; it is one example). View: pairs.
SELECT chosen_sample_id AS example_id, any_value(prompt_id) AS prompt_id, any_value(prompt) AS messages,
       any_value(prompt_text) AS prompt_text, any_value(chosen[1].content) AS response,
       bool_or(chosen_truncated) AS truncated, max(chosen_score) AS score
FROM pairs
GROUP BY chosen_sample_id
ORDER BY prompt_id, example_id
