-- The new pairs with their texts, as one stream in the order of the pairs file: prompt by prompt
-- (prompt_id), first the texts its pairs use (kind 0, each sample once: response, messages,
-- prompt_text), then its pairs (kind 1: the columns of pairs_narrow.sql as the struct `pair`), in
-- (chosen_sample_id, rejected_sample_id) order. dno_data/pairs_write.py walks the stream and puts
-- each pair's texts beside it, taken from the few texts of its prompt just read.
-- So the texts are sorted once each, however many pairs use them, and never hashed: every join and
-- sort key is an id (at 1M prompts x 6 chat-length answers, joining each side's texts to the pairs
-- and sorting the finished rows ran out of a 1.5GB memory limit).
-- The placeholder after FROM is replaced by the pairs (pairs_narrow.sql, or its --max-pairs subset).
-- Views: samples.
WITH p AS (
    SELECT * FROM $pairs
),
used AS (
    SELECT chosen_sample_id AS sample_id FROM p UNION SELECT rejected_sample_id FROM p
)
SELECT 0 AS kind, s.prompt_id, s.sample_id AS first_id, NULL::VARCHAR AS second_id,
       s.response, s.messages, s.prompt_text, NULL AS pair
FROM samples s SEMI JOIN used u ON s.sample_id = u.sample_id
UNION ALL
SELECT 1, p.prompt_id, p.chosen_sample_id, p.rejected_sample_id, NULL, NULL, NULL, p
FROM p
ORDER BY prompt_id, kind, first_id, second_id
