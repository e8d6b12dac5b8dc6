-- `dno sft --source teacher`: the teacher's answer of each prompt (rows with source 'teacher').
-- Empty answers (a prompt without a reference) teach nothing and are left out.
-- View: samples. One row per example, in a stable order.
SELECT sample_id AS example_id, prompt_id, messages, prompt_text, response,
       coalesce(finish_reason = 'length', false) AS truncated, NULL::DOUBLE AS score
FROM samples
WHERE source = 'teacher' AND trim(response) <> ''
ORDER BY prompt_id, sample_id
